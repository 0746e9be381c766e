"""``graphwire.tasks.stop``: background tasks stop even when a library swallows a cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from graphwire.tasks import cancelled, stop


async def test_a_task_that_swallows_the_cancel_is_cancelled_again() -> None:
    sessions = 0

    async def reconnecting() -> None:
        nonlocal sessions
        while True:  # like a client that turns one cancel into "connection lost" and reconnects
            sessions += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if sessions > 1:
                    raise

    task = asyncio.create_task(reconnecting())
    await asyncio.sleep(0)
    await stop([task])
    assert task.done()
    assert sessions >= 2  # the first cancel really was swallowed


async def test_cancelled_sees_a_swallowed_cancel() -> None:
    seen: list[bool] = []

    async def worker() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        seen.append(cancelled())

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    task.cancel()
    await task
    assert seen == [True]
    assert not cancelled()


async def test_a_task_that_never_stops_is_given_up_on_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="graphwire.tasks"):
        await stop([task, None], patience=0.3)
    assert not task.done()
    assert any("did not stop" in r.getMessage() for r in caplog.records)
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()
