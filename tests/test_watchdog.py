"""The loop watchdog names an AsyncNode that blocks the event loop (issue 10, item 3).

The bounds are generous: a node blocks for 0.4 s against a 0.1 s threshold, and nothing
asserts how soon the warning comes, only that it comes once and says who.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from graphwire.connections import ConnectionManager
from graphwire.graph import AsyncGraph, AsyncNode
from graphwire.registry import WorkflowRegistry
from graphwire.runs import RunManager
from graphwire.settings import Settings
from graphwire.watchdog import LoopWatchdog, describe_runs
from harness import ROOT, connect, start_server, stop_server

THREAD = "graphwire-loop-watchdog"


class Sleeper(AsyncNode[None, None]):
    """The bug being caught: a blocking call in an async node."""

    async def exec_async(self, prep_res: None) -> None:
        time.sleep(0.4)


def watchdog_records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "graphwire.watchdog" and r.levelno == level]


def stop_promptly(dog: LoopWatchdog) -> None:
    started = time.monotonic()
    dog.stop()
    assert time.monotonic() - started < 2
    assert THREAD not in {t.name for t in threading.enumerate()}


async def test_a_blocking_async_node_is_logged_once_with_its_node_and_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="graphwire.watchdog")
    runs: dict[asyncio.Task[Any], str] = {}
    dog = LoopWatchdog(asyncio.get_running_loop(), 0.1, lambda task: runs.get(task))
    dog.start()
    try:
        await asyncio.sleep(0.15)  # a few heartbeats first
        task = asyncio.create_task(AsyncGraph(Sleeper(node_id="slow")).run_async({}))
        runs[task] = "workflow 'blocking_async' (run run_test)"
        await task
        await asyncio.sleep(0.15)
    finally:
        stop_promptly(dog)
    (warning,) = watchdog_records(caplog)
    message = warning.getMessage()
    assert "node 'slow' of workflow 'blocking_async' (run run_test)" in message, message
    assert re.search(r"at \S+test_watchdog\.py:\d+ in exec_async;", message), message
    assert "worker thread" in message, message
    (recovered,) = watchdog_records(caplog, logging.INFO)
    assert "ran again after" in recovered.getMessage()
    assert "blocked by node 'slow' of workflow 'blocking_async' (run run_test) at " in recovered.getMessage()


async def test_blocking_outside_any_node_names_the_frame_and_task(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="graphwire.watchdog")

    async def plain_coroutine() -> None:
        time.sleep(0.4)

    dog = LoopWatchdog(asyncio.get_running_loop(), 0.1)
    dog.start()
    try:
        await asyncio.sleep(0.15)
        await asyncio.create_task(plain_coroutine(), name="hogger")
        await asyncio.sleep(0.15)
    finally:
        stop_promptly(dog)
    (warning,) = watchdog_records(caplog)
    message = warning.getMessage()
    assert re.search(r"at \S+test_watchdog\.py:\d+ in plain_coroutine in task 'hogger'$", message), message
    assert "node" not in message, message


async def test_a_loop_that_awaits_is_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="graphwire.watchdog")
    dog = LoopWatchdog(asyncio.get_running_loop(), 0.1)
    dog.start()
    try:
        assert THREAD in {t.name for t in threading.enumerate()}
        for _ in range(50):
            await asyncio.sleep(0.01)
    finally:
        stop_promptly(dog)
    assert [r for r in caplog.records if r.name == "graphwire.watchdog"] == []


async def test_a_threshold_of_zero_starts_nothing() -> None:
    dog = LoopWatchdog(asyncio.get_running_loop(), 0)
    dog.start()
    assert not dog.enabled
    assert THREAD not in {t.name for t in threading.enumerate()}
    dog.stop()


def sample_workflows() -> Any:
    """``server/tests/sample_workflows.py``, which is on sys.path only when server/tests is collected."""
    folder = str(ROOT / "server" / "tests")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module("sample_workflows")


async def test_describe_runs_finds_the_run_of_a_gateway_task(caplog: pytest.LogCaptureFixture) -> None:
    """What create_app wires: a real RunManager run, described from ``RunManager.runs``."""
    caplog.set_level(logging.WARNING, logger="graphwire.watchdog")
    registry = WorkflowRegistry()
    sample_workflows().register_watchdog(registry)
    definition = registry.get("blocking_async")
    assert definition is not None
    manager = RunManager(Settings(), ConnectionManager().flusher)
    dog = LoopWatchdog(asyncio.get_running_loop(), 0.1, describe_runs(manager.runs))
    dog.start()
    try:
        await asyncio.sleep(0.15)
        run = manager.start(definition, {"seconds": 0.4}, None)
        assert run.task is not None
        await run.task
        await asyncio.sleep(0.15)
    finally:
        stop_promptly(dog)
    assert run.result == {"blocked": 0.4}
    (warning,) = watchdog_records(caplog)
    message = warning.getMessage()
    assert f"node 'hog' of workflow 'blocking_async' (run {run.workflow_id})" in message, message
    assert re.search(r"at \S+sample_workflows\.py:\d+ in exec_async;", message), message
    # For JSON logs (graphwire.logs): the record carries them as fields too.
    assert (warning.workflow_id, warning.workflow, warning.node_id) == (run.workflow_id, "blocking_async", "hog")


# NEEDS THE WIRING: create_app's lifespan must start a LoopWatchdog (see graphwire.watchdog).
async def test_the_gateway_logs_a_blocking_async_node_with_workflow_and_node(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        "--workflows",
        "sample_workflows:register_watchdog",
        env={"GRAPHWIRE_LOOP_BLOCK_WARN_MS": "250"},
    )
    try:
        client = await connect(server.ws())
        started = await client.start("blocking_async", {"seconds": 0.6})
        events = await client.run_events(started["workflow_id"])
        assert events[-1]["type"] == "workflow_completed", events[-1]
        deadline = time.monotonic() + 10
        while "node 'hog'" not in server.log():
            assert time.monotonic() < deadline, server.log()
            await asyncio.sleep(0.05)
        await client.ping()  # the gateway serves on after the block
        await client.close()
    finally:
        stop_server(server)
    log = server.log()
    line = next(line for line in log.splitlines() if "node 'hog'" in line)
    assert "WARNING graphwire.watchdog" in line, line
    assert f"of workflow 'blocking_async' (run {started['workflow_id']})" in line, line
    assert "Traceback" not in log, log
