"""The socket layer under the gateway: uvicorn's websockets-sansio protocol with bounded closes.

uvicorn's protocol trusts the peer to read. A close frame is queued behind the data the
peer never reads, and ``transport.close()`` waits for that data to drain before it lets
go, so a peer that stops reading keeps its socket, its kernel buffers and its slot
forever; an oversized frame is answered by closing a socket that still has unread data,
which the kernel turns into a TCP reset. ``GatewayProtocol`` changes exactly that, the
way ``websockets.serve`` behaves:

- a socket that accepts no data for ``write_timeout`` is closed with 1013;
- every close we start (ours, the keepalive's 1011, shutdown's 1012) is attempted, and
  after ``close_timeout`` the transport is aborted instead of waiting for a drain;
- a close we send skips the wait for writable that uvicorn's ``send`` does first;
- a frame over ``max_message_size`` gets 1009 and a half-close, then the rest of the
  frame is read and dropped (websockets' parser discards it) until the peer closes.

It is a subclass rather than our own server because uvicorn's HTTP side, lifespan and
signals are what we want; the hooks it overrides are few and ``server/tests`` checks
them against the installed uvicorn. ``GatewayServer`` orders shutdown: runs in flight
get their ending before any socket gets 1012, and the process ends within
``shutdown_grace`` whatever clients or nodes do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from graphwire import logs
from graphwire._generated.messages import CloseCode
from graphwire.settings import Settings

__all__ = ["GatewayProtocol", "GatewayServer", "gateway_protocol"]

log = logging.getLogger("graphwire.transport")


class GatewayProtocol(WebSocketsSansIOProtocol):
    """One WebSocket connection whose closes are bounded in time (see the module doc)."""

    # Set per gateway by ``gateway_protocol``; these are the defaults of ``Settings``.
    write_timeout = 15.0
    close_timeout = 5.0
    # Told of each socket closed for accepting no data: graphwire_slow_consumer_closes_total.
    on_stalled: Callable[[], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = type(self).close_timeout
        self._stall_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._failed = False

    # -- stalled peers ------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None and self.handshake_complete and not self.close_sent:
            self._stall_timer = self.loop.call_later(self.write_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _stalled(self) -> None:
        self._stall_timer = None
        if self.close_sent or self.disconnected:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        # Whichever task wrote last armed this timer: the record is about this socket's connection.
        extra = logs.scope_fields(self.scope)
        log.warning("%s accepted no data for %g s; closing with 1013", client, self.write_timeout, extra=extra)
        if self.on_stalled is not None:
            self.on_stalled()
        self.close_now(CloseCode.try_again_later, "slow consumer: reconnect and resume")

    def close_now(self, code: int, reason: str) -> None:
        """Send a close frame without waiting for the socket to drain; abort if unanswered.

        The application sees ``websocket.disconnect`` at once, so the connection leaves
        every table (and ``max_connections``) now, not when the peer gets round to it.
        """
        if self.close_sent or self.disconnected:
            return
        self.close_sent = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.conn.state is State.OPEN:
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        if self.read_paused:  # read the peer's close reply
            self.read_paused = False
            self.transport.resume_reading()
        self._expect_close_reply()

    def _expect_close_reply(self) -> None:
        # uvicorn's handle_close cancels close_timer and closes the transport when the
        # peer's reply comes; the abort timer stays in case that close cannot drain either.
        self.close_timer = self.loop.call_later(self.close_timeout, self._abort)
        self._arm_abort()

    def _arm_abort(self) -> None:
        """After ``close_timeout``, drop the connection even if its unread data never drains."""
        if self._abort_timer is None:
            self._abort_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        if not self.disconnected:
            self.transport.abort()

    async def send(self, message: Any) -> None:
        # A close must not wait for writable: with a peer that does not read, it never is.
        if message["type"] == "websocket.close" and self.handshake_complete and self.initial_response is None:
            if not self.close_sent:
                self.close_now(int(message.get("code", 1000)), message.get("reason") or "")
            return
        await super().send(message)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()  # 1011, then a close that waits for the drain
        self._arm_abort()

    def shutdown(self) -> None:
        super().shutdown()  # 1012, then a close that waits for the drain
        self._arm_abort()

    # -- oversized frames ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._failed:
            # Failed: websockets' parser discards what the peer still sends.
            self.conn.receive_data(data)
            return
        super().data_received(data)

    def handle_parser_exception(self) -> None:
        """A frame broke the protocol (too large, bad UTF-8...): close as ``websockets.serve`` does.

        websockets queued the close frame and an end-of-file; the frame is written, the
        write side half-closed, and reading goes on (discarding) until the peer closes, so
        the kernel never answers the peer's remaining bytes with a reset.
        """
        if self._failed:
            return
        self._failed = True
        close = self.conn.close_sent
        if not self.conn.eof_sent:
            # uvicorn's own 1007 (a text message that is not UTF-8) only queued a close; fail
            # as websockets does for its errors: the end-of-file, and discard from now on.
            self.conn.fail(close.code if close is not None else CloseCode.internal_error)
        code = close.code if close is not None else CloseCode.internal_error
        reason = close.reason if close is not None else ""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        for chunk in self.conn.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():  # b"" is websockets' "send EOF"
                self.transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._expect_close_reply()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._stall_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._stall_timer = self._abort_timer = None
        if self.handshake_complete and not self.close_sent and self.conn.close_rcvd is None:
            # Lost without a close frame either way: RFC 6455's 1006, which the app reads
            # first (uvicorn would say 1005, "no status code", for graphwire_disconnects_total).
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        super().connection_lost(exc)


# A token as uvicorn and websockets would print it: the query parameter, an Authorization
# header value or a subprotocol offer (at debug level they log every request header).
_TOKENS = re.compile(r"(?i)([?&]token=|\bbearer[ .])[^&\s\",]*")


class _UvicornLogFilter(logging.Filter):
    """What uvicorn logs about sockets, without secrets and without tracebacks for client input.

    uvicorn's "[accepted]" line carries the path with its query, where a browser may put
    ``?token=``, and at debug level websockets logs every request header (Authorization,
    the ``bearer.`` subprotocol): token values are replaced. A text message that is not UTF-8 is the client's
    mistake, answered with 1007: one warning line, not a traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Invalid UTF-8 sequence received from client.":
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "a client sent a text message that is not UTF-8; closing with 1007"
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_TOKENS.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


_UVICORN_ERRORS = logging.getLogger("uvicorn.error")


def gateway_protocol(settings: Settings, on_stalled: Callable[[], None] | None = None) -> type[GatewayProtocol]:
    """The protocol class uvicorn builds per connection, with this gateway's timeouts."""
    if not any(isinstance(f, _UvicornLogFilter) for f in _UVICORN_ERRORS.filters):
        _UVICORN_ERRORS.addFilter(_UvicornLogFilter())
    return type(
        "GatewayProtocol",
        (GatewayProtocol,),
        {
            "write_timeout": settings.write_timeout,
            "close_timeout": settings.close_timeout,
            # staticmethod: a plain function stored on the class must not become a method.
            "on_stalled": staticmethod(on_stalled) if on_stalled is not None else None,
        },
    )


class GatewayServer(uvicorn.Server):
    """uvicorn's server with the gateway's shutdown order and a hard bound on it.

    SIGTERM: stop accepting, let ``before_close`` give every run in flight its ending and
    deliver it, then uvicorn's shutdown (1012 to every socket, bounded by what is left of
    ``grace``). A sync node still running in a worker thread would keep the interpreter
    from exiting (thread pools are joined at exit), so a timer ends the process once
    ``grace`` has passed, whatever is still running.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        grace: float,
        before_close: Callable[[float], Coroutine[Any, Any, None]],
        draining: Callable[[], None] | None = None,
        delay: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.grace = grace
        self.before_close = before_close
        self.draining = draining
        self.delay = delay

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = time.monotonic() + self.grace
        killer = threading.Timer(self.grace, _exit_now, args=(self.grace,))
        killer.daemon = True
        killer.start()
        if self.draining is not None:
            self.draining()  # /ready: 503 draining; new sockets: 503
        if self.delay:
            # Still listening: a balancer polling /ready sees the drain before anything closes.
            log.info("shutting down: draining for %g s before closing sockets", self.delay)
            await asyncio.sleep(self.delay)
        for server in self.servers:
            server.close()
        # Runs end while their watchers are still connected; a quarter of the grace at most.
        await self.before_close(self.grace / 4)
        # What is left bounds the wait for sockets, and how long a peer has to answer 1012.
        left = max(0.1, deadline - time.monotonic() - 0.5)
        self.config.timeout_graceful_shutdown = left  # type: ignore[assignment]
        for connection in self.server_state.connections:
            if isinstance(connection, GatewayProtocol):
                connection.close_timeout = min(connection.close_timeout, left / 2)
        await super().shutdown(sockets)


def _exit_now(grace: float) -> None:
    log.error("shutdown took longer than its grace of %g s; exiting now", grace)
    logging.shutdown()
    os._exit(1)
