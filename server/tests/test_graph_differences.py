"""One test per row of the table "Where graphwire differs from KayGraph" in docs/kaygraph.md.

Each test shows graphwire's behaviour for the row; the docs say what KayGraph does instead
and why graphwire does not.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

# isort: split
from graphwire.graph import AsyncBatchNode, AsyncGraph, AsyncNode, AsyncParallelBatchNode, Graph, Node


class WhereAmI(Node[Any, Any]):
    def exec(self, prep_res: Any) -> Any:
        return threading.get_ident()

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared["thread"] = exec_res
        return None


async def test_sync_nodes_of_an_async_graph_run_off_the_event_loop() -> None:
    shared: dict[str, Any] = {}
    await AsyncGraph(WhereAmI()).run_async(shared)
    assert shared["thread"] != threading.get_ident()


async def test_a_blocking_sync_node_leaves_the_loop_free() -> None:
    started = threading.Event()
    release = threading.Event()

    class Blocking(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            started.set()
            release.wait(5)
            return None

    run = asyncio.create_task(AsyncGraph(Blocking()).run_async({}))
    await asyncio.to_thread(started.wait, 5)
    # The node is blocked in its thread, and the loop still runs other work.
    ticks = 0
    for _ in range(3):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 3
    assert not run.done()
    release.set()
    await asyncio.wait_for(run, 5)


def test_node_runs_log_at_debug_and_never_log_params(caplog: pytest.LogCaptureFixture) -> None:
    node = Node(node_id="quiet")
    node.set_params({"api_key": "sk-secret-value"})
    with caplog.at_level(logging.INFO):
        Graph(node).run({})
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    with caplog.at_level(logging.DEBUG):
        node.run({})
    messages = [r.getMessage() for r in caplog.records]
    assert any("node quiet: starting" in m for m in messages)
    assert not any("sk-secret-value" in m for m in messages)


async def test_async_batches_treat_a_none_prep_as_empty() -> None:
    class Empty(AsyncBatchNode):
        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["out"] = exec_res
            return None

    class EmptyParallel(AsyncParallelBatchNode):
        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["out_parallel"] = exec_res
            return None

    shared: dict[str, Any] = {}
    await Empty().run_async(shared)
    await EmptyParallel().run_async(shared)
    assert shared == {"out": [], "out_parallel": []}


def test_a_config_that_is_not_a_config_fails_where_it_is_passed() -> None:
    with pytest.raises(TypeError, match="config must be a Config or a mapping, not str"):
        Graph(Node(), "my-graph-id")  # type: ignore[arg-type]


def test_run_of_an_async_graph_fails_at_once() -> None:
    # KayGraph's AsyncGraph.run() starts the sync loop and fails inside the first async node.
    class Counted(AsyncNode[Any, Any]):
        runs = 0

        async def prep_async(self, shared: dict[str, Any]) -> Any:
            type(self).runs += 1

    before = Node()
    before >> Counted()
    with pytest.raises(RuntimeError, match="Use run_async for AsyncGraph"):
        AsyncGraph(before).run({})
    assert Counted.runs == 0


def test_run_interactive_works_on_the_callers_empty_store() -> None:
    from graphwire.graph.interactive import InteractiveGraph

    class Once(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["ran"] = True
            shared["_exit"] = True
            return None

    shared: dict[str, Any] = {}
    assert InteractiveGraph(Once()).run_interactive(shared) is shared
    assert shared == {"ran": True}
