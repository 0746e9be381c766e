"""``graphwire.transport`` overrides hooks of uvicorn's websockets-sansio protocol.

If a uvicorn upgrade renames one, the override would silently stop applying and stalled
peers would again hold their sockets; this test says so first. (``tests/test_limits.py``
checks the behaviour itself against a real ``graphwire serve``.)
"""

from __future__ import annotations

import inspect

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from graphwire.settings import Settings
from graphwire.transport import GatewayProtocol, gateway_protocol

HOOKS = [
    "pause_writing",
    "resume_writing",
    "keepalive_timeout",
    "shutdown",
    "data_received",
    "handle_parser_exception",
    "send",
    "connection_lost",
]
# State of uvicorn's protocol that the overrides read and write.
STATE = ["close_sent", "close_timer", "close_timeout", "disconnected", "handshake_complete", "queue", "read_paused"]


def test_every_overridden_hook_exists_in_uvicorn() -> None:
    for hook in HOOKS:
        assert hook in vars(GatewayProtocol), hook
        base = getattr(WebSocketsSansIOProtocol, hook, None)
        assert base is not None, f"uvicorn's protocol no longer has {hook}"
        assert (
            inspect.signature(base).parameters.keys()
            == inspect.signature(vars(GatewayProtocol)[hook]).parameters.keys()
        )


def test_the_state_the_overrides_use_is_set_by_uvicorn() -> None:
    source = inspect.getsource(WebSocketsSansIOProtocol.__init__)
    for name in STATE:
        assert f"self.{name} =" in source or f"self.{name}:" in source, name


def test_the_protocol_class_carries_the_settings() -> None:
    protocol = gateway_protocol(Settings(write_timeout=3, close_timeout=2))
    assert issubclass(protocol, GatewayProtocol)
    assert (protocol.write_timeout, protocol.close_timeout) == (3, 2)
