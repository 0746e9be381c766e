"""Tests for `graphwire.graph.composition`: graphs run as nodes (KayGraph's SubGraphNode family)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from typing import Any, cast

import pytest

# isort: split
from graphwire.graph import (
    AsyncGraph,
    AsyncNode,
    ConditionalSubGraphNode,
    Config,
    Graph,
    Node,
    ParallelSubGraphNode,
    RunContext,
    SubGraphNode,
    compose_graphs,
    use_run_context,
)

# -- helpers -------------------------------------------------------------------------------


class Add(Node[Any, Any]):
    """``shared["counter"] += value``."""

    def __init__(self, value: int, node_id: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.value = value

    def prep(self, shared: dict[str, Any]) -> int:
        return int(shared.get("counter", 0))

    def exec(self, prep_res: int) -> int:
        return prep_res + self.value

    def post(self, shared: dict[str, Any], prep_res: int, exec_res: int) -> None:
        shared["counter"] = exec_res


class Times(Add):
    def exec(self, prep_res: int) -> int:
        return prep_res * self.value


class Put(Node[Any, Any]):
    """Sets ``shared[key] = value`` and returns ``action``."""

    def __init__(self, key: str, value: Any, action: str | None = None) -> None:
        super().__init__()
        self.key, self.value, self.action = key, value, action

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared[self.key] = self.value
        return self.action


class Fail(Node[Any, Any]):
    def exec(self, prep_res: Any) -> Any:
        raise RuntimeError("sub-graph failed")


class AsyncAdd(AsyncNode[Any, Any]):
    def __init__(self, value: int, node_id: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.value = value

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        await asyncio.sleep(0)
        shared["counter"] = shared.get("counter", 0) + self.value


class FakeContext:
    """Records emits; the only part of a `RunContext` an async graph's status reports use."""

    def __init__(self) -> None:
        self.workflow_id = "wf"
        self.emits: list[tuple[str, str, Any]] = []

    async def emit(self, node_id: str, update_type: str, data: Any) -> None:
        self.emits.append((node_id, update_type, data))


def chain(*nodes: Node[Any, Any]) -> Graph:
    for before, after in itertools.pairwise(nodes):
        before >> after
    return Graph(nodes[0])


# -- SubGraphNode ------------------------------------------------------------------------------


def test_a_sub_graph_runs_as_one_node_of_its_parent() -> None:
    sub = SubGraphNode(chain(Add(5), Times(2)))
    after = Put("after", True)
    sub >> after
    shared = {"counter": 10}
    Graph(sub).run(shared)
    assert shared == {"counter": 30, "after": True}


def test_default_id_names_the_graph() -> None:
    graph = Graph(Add(1))
    assert SubGraphNode(graph).node_id == f"subgraph_{id(graph)}"
    assert SubGraphNode(graph, node_id="validate").node_id == "validate"


def test_without_input_keys_the_sub_graph_works_on_a_deep_copy() -> None:
    class Grow(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["items"].append("sub")

    sub = SubGraphNode(chain(Grow(), Fail()))
    shared: dict[str, Any] = {"items": ["parent"]}
    with pytest.raises(RuntimeError, match="sub-graph failed"):
        Graph(sub).run(shared)
    assert shared == {"items": ["parent"]}  # nothing reached the parent
    prep_res = sub.prep(shared)
    assert prep_res == shared
    assert prep_res["items"] is not shared["items"]


def test_input_keys_pass_only_those_keys_and_log_missing_ones(caplog: pytest.LogCaptureFixture) -> None:
    class Seen(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["seen"] = sorted(shared)

    sub = SubGraphNode(Graph(Seen()), node_id="sub", input_keys=["key1", "key2", "absent"])
    data = {"nested": [1]}
    shared: dict[str, Any] = {"key1": data, "key2": 2, "key3": 3}
    with caplog.at_level(logging.WARNING):
        prep_res = sub.prep(shared)
    assert prep_res == {"key1": data, "key2": 2}
    assert prep_res["key1"] is data  # chosen keys are handed over, not copied
    assert "'absent'" in caplog.text
    with caplog.at_level(logging.WARNING):
        Graph(sub).run(shared)
    assert shared["seen"] == ["key1", "key2"]


def test_output_keys_merge_back_only_those_keys(caplog: pytest.LogCaptureFixture) -> None:
    sub = SubGraphNode(
        chain(Put("modified", True), Put("internal", "x"), Add(90)),
        input_keys=["counter"],
        output_keys=["modified", "missing"],
    )
    shared: dict[str, Any] = {"counter": 10, "other": "unchanged"}
    with caplog.at_level(logging.WARNING):
        Graph(sub).run(shared)
    assert shared == {"counter": 10, "other": "unchanged", "modified": True}
    assert "'missing'" in caplog.text


def test_without_output_keys_everything_is_merged_but_nothing_deleted() -> None:
    class Drop(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            del shared["old"]
            shared["new"] = 1

    shared = {"old": 0}
    Graph(SubGraphNode(Graph(Drop()))).run(shared)
    assert shared == {"old": 0, "new": 1}


def test_the_sub_graph_last_action_does_not_route_the_parent() -> None:
    sub = SubGraphNode(Graph(Put("valid", True, action="invalid")))
    sub >> Put("default_path", True)
    shared: dict[str, Any] = {}
    Graph(sub).run(shared)
    assert shared == {"valid": True, "default_path": True}


def test_nested_sub_graphs() -> None:
    inner = SubGraphNode(Graph(Add(5)))
    inner >> Times(2)
    outer = SubGraphNode(Graph(inner))
    shared = {"counter": 10}
    Graph(outer).run(shared)
    assert shared == {"counter": 30}


def test_the_parent_config_reaches_sub_graph_nodes_without_their_own() -> None:
    class ReadConfig(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared[self.node_id] = self.config.get("model")

    own = ReadConfig(node_id="own", config=Config(model="own"))
    plain = ReadConfig(node_id="plain")
    own >> plain
    shared: dict[str, Any] = {}
    Graph(SubGraphNode(Graph(own)), config=Config(model="parent")).run(shared)
    assert shared == {"own": "own", "plain": "parent"}
    assert not plain.config  # the graph's own nodes are untouched


# -- ConditionalSubGraphNode ----------------------------------------------------------------


def test_conditional_runs_when_the_condition_holds() -> None:
    node = ConditionalSubGraphNode(Graph(Add(10)), condition_key="should_process")
    shared: dict[str, Any] = {"should_process": True, "counter": 5}
    assert "_skip" not in node.prep(shared)
    Graph(node).run(shared)
    assert shared["counter"] == 15


@pytest.mark.parametrize("shared", [{"should_process": False}, {}, {"should_process": "yes"}])
def test_conditional_skips_otherwise(shared: dict[str, Any]) -> None:
    node = ConditionalSubGraphNode(Graph(Add(10)), condition_key="should_process")
    shared["counter"] = 5
    before = dict(shared)
    assert node.prep(shared) == {"_skip": True}
    Graph(node).run(shared)
    assert shared == before


def test_conditional_compares_with_its_condition_value() -> None:
    node = ConditionalSubGraphNode(Graph(Add(1)), condition_key="mode", condition_value="full")
    shared: dict[str, Any] = {"mode": "full", "counter": 0}
    Graph(node).run(shared)
    assert shared["counter"] == 1


def test_a_skip_key_in_the_parent_store_does_not_skip() -> None:
    node = ConditionalSubGraphNode(Graph(Add(1)), condition_key="go")
    shared: dict[str, Any] = {"go": True, "_skip": True, "counter": 0}
    Graph(node).run(shared)
    assert shared["counter"] == 1


# -- ParallelSubGraphNode ----------------------------------------------------------------------


def test_parallel_keeps_results_apart_without_merging() -> None:
    node = ParallelSubGraphNode([Graph(Add(10)), Graph(Times(2))], merge_results=False)
    shared = {"counter": 5}
    Graph(node).run(shared)
    assert shared == {"counter": 5, "parallel_results": {"graph_0": {"counter": 15}, "graph_1": {"counter": 10}}}


def test_parallel_graphs_each_get_their_own_copy_and_merge_in_order() -> None:
    node = ParallelSubGraphNode([chain(Put("a", 1), Put("same", "first")), Graph(Put("same", "second"))])
    assert node.node_id == "parallel_subgraphs"
    shared: dict[str, Any] = {}
    assert node.prep(shared) == {}
    Graph(node).run(shared)
    assert shared == {"a": 1, "same": "second"}


# -- compose_graphs ----------------------------------------------------------------------------


def test_compose_needs_a_graph() -> None:
    with pytest.raises(ValueError, match="at least one graph"):
        compose_graphs()


def test_compose_wraps_a_single_graph() -> None:
    graph = Graph(Add(5))
    composed = compose_graphs(graph, node_id="one")
    assert isinstance(composed, SubGraphNode)
    assert composed.subgraph is graph
    assert composed.node_id == "one"


def test_compose_chains_graphs_whatever_their_last_action() -> None:
    composed = compose_graphs(Graph(Add(1)), Graph(Put("stopped", True, action="stop")), Graph(Times(10)))
    assert composed.node_id == "composed_workflow"
    shared = {"counter": 1}
    Graph(composed).run(shared)
    assert shared == {"counter": 20, "stopped": True}


# -- inside an AsyncGraph --------------------------------------------------------------------


async def test_an_async_sub_graph_is_awaited_and_reports_its_nodes() -> None:
    inner = AsyncAdd(1, node_id="inner_async")
    inner >> Add(10, node_id="inner_sync")
    sub = SubGraphNode(AsyncGraph(inner), node_id="sub")
    ctx = FakeContext()
    shared = {"counter": 0}
    with use_run_context(cast(RunContext, ctx)):
        await AsyncGraph(sub).run_async(shared)
    assert shared == {"counter": 11}
    statuses = [(node_id, data["status"]) for node_id, _, data in ctx.emits]
    assert statuses == [
        ("sub", "running"),
        ("inner_async", "running"),
        ("inner_async", "completed"),
        ("inner_sync", "running"),
        ("inner_sync", "completed"),
        ("sub", "completed"),
    ]


async def test_an_async_sub_graph_keeps_the_node_hooks() -> None:
    class Suppress(SubGraphNode):
        def on_error(self, shared: dict[str, Any], error: Exception) -> bool:
            shared["suppressed"] = str(error)
            return True

    class AsyncFail(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            raise RuntimeError("async sub-graph failed")

    shared: dict[str, Any] = {}
    await AsyncGraph(Suppress(AsyncGraph(AsyncFail()))).run_async(shared)
    assert shared == {"suppressed": "async sub-graph failed"}


def test_a_sync_parent_refuses_an_async_sub_graph() -> None:
    with pytest.raises(RuntimeError, match="put it in an AsyncGraph"):
        Graph(SubGraphNode(AsyncGraph(AsyncAdd(1)))).run({})
    with pytest.raises(RuntimeError, match="put it in an AsyncGraph"):
        Graph(ParallelSubGraphNode([AsyncGraph(AsyncAdd(1))])).run({})


async def test_a_sync_sub_graph_runs_in_a_worker_thread() -> None:
    class Where(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["thread"] = threading.get_ident()

    shared: dict[str, Any] = {}
    await AsyncGraph(SubGraphNode(Graph(Where()))).run_async(shared)
    assert shared["thread"] != threading.get_ident()


async def test_async_conditional_skips() -> None:
    node = ConditionalSubGraphNode(AsyncGraph(AsyncAdd(1)), condition_key="go")
    shared: dict[str, Any] = {"counter": 0}
    await AsyncGraph(node).run_async(shared)
    assert shared == {"counter": 0}
    shared["go"] = True
    await AsyncGraph(node).run_async(shared)
    assert shared == {"counter": 1, "go": True}


async def test_async_parallel_graphs_run_concurrently() -> None:
    first_started = asyncio.Event()

    class WaitForFirst(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await asyncio.wait_for(first_started.wait(), timeout=2)

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["second"] = True

    class First(AsyncNode[Any, Any]):
        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            first_started.set()
            shared["first"] = True

    # One after the other, the second graph (listed first) would time out waiting.
    node = ParallelSubGraphNode([AsyncGraph(WaitForFirst()), AsyncGraph(First()), Graph(Add(1))])
    shared: dict[str, Any] = {"counter": 0}
    await AsyncGraph(node).run_async(shared)
    assert shared == {"counter": 1, "first": True, "second": True}


async def test_compose_mixes_sync_and_async_graphs_in_an_async_parent() -> None:
    composed = compose_graphs(AsyncGraph(AsyncAdd(1)), Graph(Times(10)), AsyncGraph(AsyncAdd(2)))
    shared = {"counter": 1}
    await AsyncGraph(composed).run_async(shared)
    assert shared == {"counter": 22}
