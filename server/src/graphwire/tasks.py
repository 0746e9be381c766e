"""Stopping background tasks for good.

``task.cancel()`` followed by ``await task`` waits forever when a library swallows the
``CancelledError`` (turns it into a timeout or a connection error it handles). We saw
that with redis-py 8.1 while a pub/sub connection was being re-made under load: the
subscriber carried on into a new session and the broker's ``close()`` never returned.
``stop`` cancels again until the task is done, and gives up after ``patience`` with an
error naming the task, so shutdown is bounded either way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.1  # seconds between cancels of a task that is still running


async def stop(tasks: Iterable[asyncio.Task[object] | None], patience: float = 5.0) -> None:
    """Cancel ``tasks`` and wait until each is done, cancelling again any that carries on."""
    pending = {task for task in tasks if task is not None and not task.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
        if pending and loop.time() > deadline:
            log.error("%d background tasks did not stop within %.1f s: %s", len(pending), patience, pending)
            return


def cancelled() -> bool:
    """True when the current task was asked to stop (even if a library swallowed the error)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
