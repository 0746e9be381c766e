"""The I/O seam: a ``Transport`` opens a ``Socket`` of text frames.

``GraphwireClient`` only ever talks to these two small interfaces, so tests (or another
WebSocket library) can stand in for the default ``WebSocketTransport``, which uses the
``websockets`` asyncio client.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from graphwire_client._generated.messages import CloseCode

__all__ = ["HandshakeRefused", "Socket", "Transport", "TransportClosed", "WebSocketTransport"]


class TransportClosed(Exception):
    """The socket ended; ``code`` is the WebSocket close code (``None``: no close frame, 1006)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"connection closed ({code if code is not None else 'no close frame'}) {reason}".strip())
        self.code = code
        self.reason = reason


class HandshakeRefused(Exception):
    """The server answered the opening handshake with HTTP ``status`` instead of upgrading.

    ``retry_after`` is its ``Retry-After`` in seconds, when it sent one (the gateway's 503
    at ``max_connections`` says 1); the client waits at least that long before the next
    attempt. A custom ``Transport`` raises it to get the same treatment.
    """

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        after = f", retry after {retry_after:g} s" if retry_after is not None else ""
        super().__init__(f"HTTP {status} at the handshake{after}")
        self.status = status
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay-seconds (RFC 9110 §10.2.3); ``None`` when absent or a date."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


class Socket(Protocol):
    """One open connection carrying text frames."""

    async def send(self, text: str) -> None:
        """Send one frame; raises ``TransportClosed`` when the socket is gone."""

    async def recv(self) -> str:
        """The next frame; raises ``TransportClosed`` when the socket ends."""

    async def close(self) -> None:
        """Close with 1000 (normal closure); never raises."""


class Transport(Protocol):
    """Opens sockets; ``connect`` raises (any exception) when it cannot."""

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket: ...


class WebSocketTransport:
    """The default transport: the ``websockets`` asyncio client.

    ``ping_interval``/``ping_timeout`` (seconds, ``None`` to disable) detect a dead
    connection that never closed; ``max_size`` bounds one incoming frame.
    """

    def __init__(
        self, *, ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0, max_size: int | None = 2**26
    ) -> None:
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_size = max_size

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket:
        try:
            ws = await connect(
                url,
                additional_headers=dict(headers),
                open_timeout=open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
                max_size=self.max_size,
                close_timeout=2,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):  # refused at the handshake: as the close codes would say
                code = CloseCode.unauthorized if status == 401 else CloseCode.forbidden
                raise TransportClosed(code, f"HTTP {status} at the handshake") from exc
            retry_after = retry_after_seconds(exc.response.headers.get("Retry-After"))
            raise HandshakeRefused(status, retry_after) from exc
        return _WebSocket(ws)


class _WebSocket:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> str:
        try:
            frame = await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc
        return frame if isinstance(frame, str) else frame.decode("utf-8", errors="replace")

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken socket has nothing left to report
            await self._ws.close()


def _closed(exc: ConnectionClosed) -> TransportClosed:
    if exc.rcvd is not None:
        return TransportClosed(exc.rcvd.code, exc.rcvd.reason)
    return TransportClosed(None, "the connection dropped")
