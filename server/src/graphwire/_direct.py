"""The fan-out fast path: write a text frame straight into uvicorn's WebSocket protocol.

``websockets.broadcast()`` is fast because, for each connection, it only frames the
message (``protocol.send_text``) and hands the bytes to the transport. Through ASGI the
same write also builds a message dict, creates two coroutines (``send`` and the
``writable`` wait inside it) and re-checks the handshake state, which at thousands of
sockets per flush is a fifth of the cost. For uvicorn's ``websockets-sansio`` protocol
(the default with ``websockets`` installed) this writes the frame itself, under the same
conditions uvicorn's own ``send`` and websockets' ``send_text`` check. When the protocol
is anything else, or a check fails (writing paused, closing), the caller uses the ASGI
``send`` as before; ``server/tests/test_direct.py`` fails if a uvicorn upgrade silently
disables the path.

A server's frames are not masked, so without a negotiated extension (permessage-deflate
is off by default) the bytes of one message are the same on every connection: fan-out
frames each event once, with websockets' own ``Frame.serialize``, and reuses the bytes
for every subscriber of that event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["direct_text_writer", "framed"]

_ATTRIBUTES = ("conn", "transport", "writable", "disconnected", "close_sent", "handshake_complete", "initial_response")

# The last text framed, and its frame: fan-out writes one frame to many sockets in a row.
_last_text = ""
_last_frame = Frame(Opcode.TEXT, b"").serialize(mask=False, extensions=[])


def framed(text: str) -> bytes:
    """``text`` as one unmasked, unfragmented text frame, as websockets serialises it."""
    global _last_text, _last_frame
    if text is not _last_text:
        _last_frame = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
        _last_text = text
    return _last_frame


def direct_text_writer(send: Callable[..., Any]) -> Callable[[str], bool] | None:
    """A writer for ``send``'s socket, or ``None`` when ``send`` is not uvicorn's sansio protocol.

    The writer returns False, having written nothing, whenever the ASGI path must be used.
    """
    found = getattr(send, "__self__", None)
    # uvicorn's protocol or a subclass (graphwire.transport.GatewayProtocol).
    if not isinstance(found, WebSocketsSansIOProtocol) or not all(hasattr(found, a) for a in _ATTRIBUTES):
        return None
    protocol: Any = found

    def write(text: str) -> bool:
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
        ):
            return False
        conn = protocol.conn
        if conn.state is not State.OPEN:
            return False
        if conn.extensions or conn.writes or conn.expect_continuation_frame:
            # An extension frames per connection; pending bytes must leave first.
            conn.send_text(text.encode())
            protocol.transport.write(b"".join(conn.data_to_send()))
            return True
        protocol.transport.write(framed(text))
        return True

    return write
