"""The fan-out fast path: write a text frame straight into uvicorn's WebSocket protocol.

``websockets.broadcast()`` is fast because, for each connection, it only frames the
message (``protocol.send_text``) and hands the bytes to the transport. Through ASGI the
same write also builds a message dict, creates two coroutines (``send`` and the
``writable`` wait inside it) and re-checks the handshake state, which at thousands of
sockets per flush is a fifth of the cost. For uvicorn's ``websockets-sansio`` protocol
(the default with ``websockets`` installed) this does what ``broadcast()`` does, under the
same conditions uvicorn's own ``send`` checks. When the protocol is anything else, or a
check fails (writing paused, closing), the caller uses the ASGI ``send`` as before;
``server/tests/test_direct.py`` fails if a uvicorn upgrade silently disables the path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["direct_text_writer"]

_PROTOCOL = "WebSocketsSansIOProtocol"
_ATTRIBUTES = ("conn", "transport", "writable", "disconnected", "close_sent", "handshake_complete", "initial_response")


def direct_text_writer(send: Callable[..., Any]) -> Callable[[str], bool] | None:
    """A writer for ``send``'s socket, or ``None`` when ``send`` is not uvicorn's sansio protocol.

    The writer returns False, having written nothing, whenever the ASGI path must be used.
    """
    found = getattr(send, "__self__", None)
    if found is None or type(found).__name__ != _PROTOCOL or not all(hasattr(found, a) for a in _ATTRIBUTES):
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
        conn.send_text(text.encode())
        protocol.transport.write(b"".join(conn.data_to_send()))
        return True

    return write
