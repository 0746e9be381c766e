"""A round-robin TCP balancer for the cluster tests: no stickiness, plain bytes.

Each new TCP connection goes to the next backend in turn and its bytes are piped both
ways until both sides have closed (a half-close is passed on as one), so WebSocket
upgrades and frames pass through untouched. It runs its own asyncio loop in a background
thread, so sync tests and async tests (whose loop it never blocks) use it alike.

In front of one backend it is also a cable to pull: ``cut_all()`` and ``set_refusing(True)``
put a gateway out of reach of Redis for as long as a test wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["RoundRobinBalancer"]

T = TypeVar("T")
CHUNK = 65536
TIMEOUT = 10.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST, as a dropped network path or a crashed peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    """One client connection and the backend connection it is piped to."""

    client: asyncio.StreamWriter
    backend: asyncio.StreamWriter | None = None
    cut: bool = False

    def reset(self) -> None:
        self.cut = True
        _reset(self.client)
        if self.backend is not None:
            _reset(self.backend)


class RoundRobinBalancer:
    """``127.0.0.1:<port>`` → ``127.0.0.1:<backends[i]>``, ``i`` advancing per connection."""

    def __init__(self, backends: list[int], port: int = 0) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.backends = list(backends)
        self.port = port
        self._lock = threading.Lock()
        self._counts = [0] * len(backends)
        self._next = 0
        self._refusing = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    # -- the test's side (any thread but the balancer's) -------------------------------

    def start(self) -> int:
        """Listen (on ``port``, default a free one) and return the port."""
        if self._loop is not None:
            raise RuntimeError("the balancer is already running")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="balancer", daemon=True)
        self._thread.start()
        self.port = self._call(self._listen())
        return self.port

    def stop(self) -> None:
        """Stop listening, reset every piped connection, end the thread."""
        if self._loop is None or self._thread is None:
            return
        try:
            self._call(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(TIMEOUT)
            self._loop.close()
            self._loop = self._thread = None

    def cut_all(self) -> int:
        """Reset every piped connection at once (both sides see a drop); how many were cut.

        The balancer keeps accepting: the next connection goes to the next backend in turn.
        """
        return self._call(self._cut_all())

    def set_refusing(self, refusing: bool) -> None:
        """While refusing, a new connection is reset at once and reaches no backend."""
        with self._lock:
            self._refusing = refusing

    @property
    def counts(self) -> list[int]:
        """Connections sent to each backend so far, in the order of ``backends``."""
        with self._lock:
            return list(self._counts)

    @property
    def active(self) -> int:
        """Connections being piped now."""
        with self._lock:
            return len(self._links)

    def __enter__(self) -> RoundRobinBalancer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the balancer is not running"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(TIMEOUT)

    # -- the balancer's loop -----------------------------------------------------------

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut_all()
        if self._server is not None:
            await self._server.wait_closed()
        # Reset links end their handlers on their own; cancelling them would be logged as an error.
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=TIMEOUT / 2)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)

    async def _cut_all(self) -> int:
        with self._lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            link.reset()
        return len(links)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(client_writer)
        try:
            with self._lock:
                if self._refusing:
                    link.reset()
                    return
                index = self._next % len(self.backends)
                self._next += 1
                self._counts[index] += 1
                self._links.add(link)
            try:
                backend_reader, link.backend = await asyncio.open_connection("127.0.0.1", self.backends[index])
            except OSError:
                link.reset()
                return
            if link.cut:  # cut while the backend connection was being opened
                link.reset()
                return
            await asyncio.gather(
                self._pump(client_reader, link.backend, link),
                self._pump(backend_reader, client_writer, link),
            )
        finally:
            with self._lock:
                self._links.discard(link)
            for writer in (link.client, link.backend):
                if writer is not None:
                    writer.close()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Bytes from ``reader`` to ``writer``; its end of stream becomes a half-close of ``writer``."""
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
            if not link.cut and writer.can_write_eof():
                writer.write_eof()
        except OSError:
            # A reset on either side ends both: the other side must see the drop, not hang.
            link.reset()
