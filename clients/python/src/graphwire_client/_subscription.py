"""``Subscription``: the messages of topics (``topic_message``) or of a group (``system_alert``)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from graphwire_client._generated.messages import SystemAlert, TopicMessage
from graphwire_client.exceptions import GraphwireError

__all__ = ["Subscription"]

M = TypeVar("M", TopicMessage, SystemAlert)


class Subscription(Generic[M]):
    """Messages of ``client.subscribe(*topics)`` or ``client.join_group(group)``, as an async iterator.

    ``async for message in subscription`` waits for the next one; the iteration ends after
    ``close()`` (which unsubscribes or leaves the group). The client renews the
    subscription after every reconnect; messages published while it was away are not
    replayed (topics and groups have no log). At most ``buffer`` unread messages are
    kept; older ones are dropped and counted in ``dropped``.
    """

    def __init__(self, names: frozenset[str], on_close: Callable[[], Awaitable[None]], buffer: int = 1000) -> None:
        self.names = names
        """The topics, or the one group, this subscription receives."""
        self.dropped = 0
        self._queue: deque[M] = deque()
        self._buffer = buffer
        self._on_close = on_close
        self._closed = False
        self._failure: GraphwireError | None = None
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Subscription {sorted(self.names)} unread={len(self._queue)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _push(self, message: M) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._buffer:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(message)
        self._wakeup.set()

    def _fail(self, error: GraphwireError) -> None:
        self._failure = error
        self._closed = True
        self._wakeup.set()

    def __aiter__(self) -> Subscription[M]:
        return self

    async def __anext__(self) -> M:
        while not self._queue:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    async def close(self) -> None:
        """Stop receiving: unsubscribe from the topics, or leave the group."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        await self._on_close()

    async def __aenter__(self) -> Subscription[M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
