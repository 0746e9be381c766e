"""``graphwire._eager.start``: a coroutine runs now, and a task finishes it only if it suspends."""

from __future__ import annotations

import asyncio

import pytest

from graphwire import _eager


async def test_runs_synchronously_when_nothing_suspends() -> None:
    done: list[str] = []

    async def write() -> None:
        done.append("written")

    assert _eager.start(write()) is None
    assert done == ["written"]  # before any await of ours


async def test_a_task_finishes_what_suspends() -> None:
    gate = asyncio.Event()
    steps: list[str] = []

    async def write() -> None:
        steps.append("before")
        await gate.wait()
        steps.append("after")

    task = _eager.start(write())
    assert task is not None
    assert steps == ["before"]
    gate.set()
    await task
    assert steps == ["before", "after"]


async def test_errors_before_suspension_reach_the_caller() -> None:
    async def broken() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError):
        _eager.start(broken())


async def test_errors_after_suspension_reach_the_task() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def write() -> None:
        await future

    task = _eager.start(write())
    assert task is not None
    future.set_exception(BrokenPipeError("closed"))
    with pytest.raises(BrokenPipeError):
        await task


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cancelled: list[bool] = []

    async def write() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = _eager.start(write())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]


async def test_bare_yield_is_resumed() -> None:
    async def write() -> str:
        await asyncio.sleep(0)
        return "ok"

    task = _eager.start(write())
    assert task is not None
    await task
