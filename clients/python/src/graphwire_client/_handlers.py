"""How the client runs its ``on(...)`` handlers: ``HandlerRunner``.

A plain handler is called at once, when its event arrives. An ``async def`` handler's
coroutine is queued, and one task of the client awaits the queued coroutines one at a
time, in the order of the events: a handler sees event ``n`` finished before event
``n + 1`` starts, even if it awaits in between. ``settled()`` (what ``Run.result()`` and
``Run.wait()`` await) returns once everything queued before the call has finished, so a
run's result is never handed out while handlers of its events still run.

It cannot deadlock on itself: inside a handler, or a task a handler started,
``settled()`` returns at once (a handler that awaits ``run.result()`` would otherwise
wait for itself), and a slow handler only delays ``settled()``, never the socket's
reader. Closing the client drops what is still queued.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

__all__ = ["Handler", "HandlerRunner"]

log = logging.getLogger("graphwire_client")

Handler = Callable[[Any], Awaitable[None] | None]

# True in the runner's task and in every task a handler starts (tasks copy the context).
_IN_HANDLER: ContextVar[bool] = ContextVar("graphwire_client_in_handler", default=False)


class _Barrier:
    """A marker in the queue: its future is resolved when the runner reaches it."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class _Then:
    """A marker in the queue: its callback is called when the runner reaches it."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class HandlerRunner:
    """Calls handlers; awaits the ``async def`` ones one at a time, in order, on its own task."""

    def __init__(self, name: str = "graphwire-client handlers") -> None:
        self._name = name
        self._queue: deque[tuple[str, Awaitable[Any]] | _Barrier | _Then] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def call(self, event: str, handler: Handler, payload: object) -> None:
        """Call ``handler(payload)``; if it returns an awaitable, queue it behind the others."""
        try:
            result = handler(payload)
        except Exception:
            log.exception("an on(%r) handler raised", event)
            return
        if not inspect.isawaitable(result):
            return
        if self._closed:
            _discard(result)
            return
        self._queue.append((event, result))
        self._start()

    def then(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every handler queued so far has finished: at once if none is queued.

        Not at all after ``close()`` (what was queued never finished).
        """
        if self._closed:
            return
        if self._task is None and not self._queue:
            callback()
            return
        self._queue.append(_Then(callback))
        self._start()

    async def settled(self) -> None:
        """Return once every handler queued before this call has finished.

        Returns at once inside a handler (or a task started by one), and after ``close()``.
        """
        if _IN_HANDLER.get() or self._closed or (self._task is None and not self._queue):
            return
        barrier = _Barrier(asyncio.get_running_loop().create_future())
        self._queue.append(barrier)
        self._start()
        await barrier.future

    async def close(self) -> None:
        """Drop what is queued and stop the running handler (unless it is the caller)."""
        self._closed = True
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Barrier):
                if not item.future.done():
                    item.future.set_result(None)
            elif not isinstance(item, _Then):
                _discard(item[1])
        task = self._task
        if task is None or _IN_HANDLER.get():
            return  # a handler is closing the client: it is not waited for, it ends the queue
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=self._name)

    async def _drain(self) -> None:
        _IN_HANDLER.set(True)
        me = asyncio.current_task()
        try:
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, _Barrier):
                    if not item.future.done():
                        item.future.set_result(None)
                    continue
                if isinstance(item, _Then):
                    try:
                        item.callback()
                    except Exception:
                        log.exception("a handler callback raised")
                    continue
                event, awaitable = item
                try:
                    await awaitable
                except asyncio.CancelledError:
                    if me is not None and me.cancelling():
                        raise  # close(): stop here
                    log.warning("an on(%r) handler was cancelled", event)
                except Exception:
                    log.exception("an on(%r) handler raised", event)
        finally:
            self._task = None


def _discard(awaitable: Awaitable[Any]) -> None:
    """Drop an awaitable that will never be awaited, without a 'never awaited' warning."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()
    elif isinstance(awaitable, asyncio.Future):
        awaitable.cancel()
