"""Run a coroutine synchronously for as long as it does not suspend.

A socket write through ASGI (``await websocket.send_text(...)``) is a coroutine that in
practice never suspends: uvicorn only waits when the transport has paused writing. Giving
each such write its own task costs more than the write (a task, a loop turn, a context
copy) and delays it by a loop turn behind everything else. ``start`` steps the coroutine
right away, the way Python 3.12's eager tasks do; only if it really suspends on a future
does a task take over and finish it, exactly as a task would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any

__all__ = ["start"]


def start(awaitable: Awaitable[Any]) -> asyncio.Future[Any] | None:
    """Step ``awaitable`` now. ``None`` when it finished; otherwise the task that finishes it.

    Exceptions raised before the first suspension propagate to the caller. An awaitable
    that is not a coroutine gets an ordinary task.
    """
    if not isinstance(awaitable, Coroutine):
        return asyncio.ensure_future(awaitable)
    coro = awaitable
    try:
        yielded = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_finish(coro, yielded))


async def _finish(coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
    while True:
        try:
            if isinstance(yielded, asyncio.Future):
                # What Task.__step does with a future a coroutine suspended on: wait for
                # it, then resume the coroutine, which reads the future's result itself.
                yielded._asyncio_future_blocking = False
                await asyncio.wait([yielded])
            else:  # a bare `yield` (asyncio.sleep(0)): give the loop one turn
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            coro.throw(asyncio.CancelledError())
            raise
        try:
            yielded = coro.send(None)
        except StopIteration:
            return
