"""Tests for the workflow engine `graphwire.graph` (KayGraph-compatible semantics)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

# isort: split
# (graphwire is first-party or third-party depending on where ruff runs from.)
import graphwire.graph as gw
from graphwire.graph import (
    AsyncBatchNode,
    AsyncGraph,
    AsyncNode,
    AsyncParallelBatchNode,
    BaseNode,
    BatchNode,
    Graph,
    InputTimeout,
    Node,
    RunContext,
    WebSocketNode,
    run_context,
    use_run_context,
)

# -- helpers -------------------------------------------------------------------


class Record(Node[Any, Any]):
    """Appends its id to ``shared["trail"]`` and returns a fixed action."""

    def __init__(self, node_id: str, action: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.action = action

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared.setdefault("trail", []).append(self.node_id)
        return self.action


class AsyncRecord(AsyncNode[Any, Any]):
    def __init__(self, node_id: str, action: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.action = action

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        await asyncio.sleep(0)
        shared.setdefault("trail", []).append(self.node_id)
        return self.action


class FakeContext:
    """A `RunContext` that records emits and answers input requests."""

    def __init__(self, answer: dict[str, Any] | None = None, *, timeout: bool = False) -> None:
        self.workflow_id = "wf-1"
        self.emits: list[tuple[str, str, dict[str, Any]]] = []
        self.requests: list[tuple[str, str, list[str] | None, float | None]] = []
        self.answer = answer if answer is not None else {"choice": "yes"}
        self.timeout = timeout

    async def emit(self, node_id: str, update_type: str, data: dict[str, Any]) -> None:
        self.emits.append((node_id, update_type, data))

    async def request_input(
        self,
        node_id: str,
        prompt: str,
        options: list[str] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        self.requests.append((node_id, prompt, options, timeout))
        if self.timeout:
            raise InputTimeout(f"no answer for {node_id}")
        return self.answer

    def statuses(self) -> list[tuple[str, str]]:
        return [(n, d["status"]) for n, t, d in self.emits if t == "node_status"]


def as_context(ctx: FakeContext) -> RunContext:
    return ctx


# -- public surface ----------------------------------------------------------------


# KayGraph 0.3's top-level names (its own ``__all__``-less ``__init__`` exports these).
KAYGRAPH_TOP_LEVEL = [
    "AsyncBatchGraph",
    "AsyncBatchNode",
    "AsyncGraph",
    "AsyncNode",
    "AsyncParallelBatchGraph",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchGraph",
    "BatchNode",
    "Config",
    "Graph",
    "MetricsNode",
    "Node",
    "ParallelBatchNode",
    "ValidatedNode",
]
GATEWAY_ADDITIONS = ["InputTimeout", "RunContext", "WebSocketNode", "run_context", "use_run_context"]


def test_public_surface() -> None:
    assert set(KAYGRAPH_TOP_LEVEL + GATEWAY_ADDITIONS) <= set(gw.__all__)
    assert gw.__all__ == sorted(gw.__all__)
    for name in gw.__all__:
        assert getattr(gw, name) is not None
    assert issubclass(InputTimeout, Exception)
    assert issubclass(AsyncGraph, AsyncNode)
    assert issubclass(Graph, BaseNode)


def test_node_id_defaults_to_a_unique_id() -> None:
    class Fetch(Node[Any, Any]):
        pass

    first, second = Fetch(), Fetch()
    assert first.node_id.startswith("Fetch_")
    assert second.node_id.startswith("Fetch_")
    assert first.node_id != second.node_id
    assert Fetch(node_id="custom").node_id == "custom"
    assert Fetch(node_id="other", max_retries=3, wait=0.5).max_retries == 3
    assert Graph().node_id.startswith("Graph_")
    assert Graph(node_id="g").node_id == "g"


# -- wiring and sync orchestration ------------------------------------------------


def test_rshift_returns_right_operand_and_chains() -> None:
    a, b, c = Record("a"), Record("b"), Record("c")
    assert (a >> b) is b
    assert (b >> c) is c
    x, y, z = Record("x"), Record("y"), Record("z")
    assert (x >> y >> z) is z
    assert x.successors == {"default": y}
    assert y.successors == {"default": z}
    assert a.successors == {"default": b}
    assert b.successors == {"default": c}


def test_sync_chain_runs_in_order_and_returns_last_action() -> None:
    a, b, c = Record("a"), Record("b"), Record("c", action="finished")
    a >> b >> c
    shared: dict[str, Any] = {}
    assert Graph(start=a).run(shared) == "finished"
    assert shared["trail"] == ["a", "b", "c"]


def test_named_actions_route() -> None:
    class Decide(Node[Any, Any]):
        def prep(self, shared: dict[str, Any]) -> Any:
            return shared["amount"]

        def exec(self, prep_res: Any) -> Any:
            return "approve" if prep_res < 100 else "reject"

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            return exec_res

    decide = Decide()
    approved, rejected = Record("approved"), Record("rejected")
    assert (decide - "approve" >> approved) is approved
    decide - "reject" >> rejected
    graph = Graph(decide)

    shared: dict[str, Any] = {"amount": 10}
    graph.run(shared)
    assert shared["trail"] == ["approved"]

    shared = {"amount": 1000}
    graph.run(shared)
    assert shared["trail"] == ["rejected"]


def test_next_method_and_graph_start() -> None:
    a, b = Record("a", action="go"), Record("b")
    assert a.next(b, "go") is b
    graph = Graph()
    assert graph.start(a) is a
    shared: dict[str, Any] = {}
    graph.run(shared)
    assert shared["trail"] == ["a", "b"]


def test_dead_end_action_ends_the_graph_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    a, b = Record("a", action="unknown"), Record("b")
    a >> b
    shared: dict[str, Any] = {}
    with pytest.warns(UserWarning, match=r"Graph ends: 'unknown' not found in \['default'\]"):
        assert Graph(a).run(shared) == "unknown"
    assert shared["trail"] == ["a"]
    assert any("returned action 'unknown'" in r.getMessage() for r in caplog.records)


def test_last_node_without_successors_ends_quietly() -> None:
    # Under -W error: a node with no successors at all is a normal end, not a dead end.
    shared: dict[str, Any] = {}
    assert Graph(Record("a", action="whatever")).run(shared) == "whatever"
    assert shared["trail"] == ["a"]


def test_overwriting_a_successor_warns() -> None:
    a, b, c = Record("a"), Record("b"), Record("c")
    a >> b
    with pytest.warns(UserWarning, match="Overwriting successor for action 'default'. Previous: Record, New: Record"):
        a >> c
    a - "x" >> b
    with pytest.warns(UserWarning, match="action 'x'"):
        a - "x" >> c
    assert a.successors == {"default": c, "x": c}


def test_action_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        Record("a") - 3  # type: ignore[operator]


def test_standalone_run_does_not_follow_successors_and_warns() -> None:
    a, b = Record("a", action="next"), Record("b")
    a - "next" >> b
    shared: dict[str, Any] = {}
    with pytest.warns(UserWarning, match="Node a: Has 1 successors but won't execute them"):
        assert a.run(shared) == "next"
    assert shared["trail"] == ["a"]
    # Without successors, no warning (-W error).
    assert b.run(shared) is None


def test_prep_exec_post_data_flow() -> None:
    class Double(Node[Any, Any]):
        def prep(self, shared: dict[str, Any]) -> Any:
            return shared["x"]

        def exec(self, prep_res: Any) -> Any:
            return prep_res * 2

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["y"] = (prep_res, exec_res)
            return None

    shared: dict[str, Any] = {"x": 21}
    assert Double().run(shared) is None
    assert shared["y"] == (21, 42)


def test_graph_without_start_node_runs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    shared: dict[str, Any] = {}
    assert Graph().run(shared) is None
    assert shared == {}
    assert any("no start node" in r.getMessage() for r in caplog.records)


def test_graph_prep_and_post() -> None:
    class Wrapped(Graph):
        def prep(self, shared: dict[str, Any]) -> Any:
            shared["trail"] = ["graph-prep"]
            return "prep-value"

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["graph_post"] = (prep_res, exec_res)
            return "wrapped-done"

    shared: dict[str, Any] = {}
    assert Wrapped(Record("a", action="inner-last")).run(shared) == "wrapped-done"
    assert shared["trail"] == ["graph-prep", "a"]
    assert shared["graph_post"] == ("prep-value", "inner-last")


def test_nested_graph_routes_on_its_last_action() -> None:
    inner_a, inner_b = Record("inner_a"), Record("inner_b", action="done")
    inner_a >> inner_b
    inner = Graph(inner_a, node_id="inner")
    before, after, other = Record("before"), Record("after"), Record("other")
    before >> inner
    inner - "done" >> after
    inner >> other
    shared: dict[str, Any] = {}
    assert Graph(before).run(shared) is None
    assert shared["trail"] == ["before", "inner_a", "inner_b", "after"]


# -- params and copy-per-run -----------------------------------------------------


def test_graph_params_replace_node_params() -> None:
    seen: list[dict[str, Any]] = []

    class Show(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            seen.append(dict(self.params))
            return None

    a, b = Show(node_id="a"), Show(node_id="b")
    a.set_params({"mine": 1, "shared_key": "node"})
    a >> b
    graph = Graph(a)
    graph.set_params({"shared_key": "graph", "g": True})
    graph.run({})
    # KayGraph's set_params replaces: the node's own params do not survive the graph.
    assert seen == [
        {"shared_key": "graph", "g": True},
        {"shared_key": "graph", "g": True},
    ]
    # The graph's nodes are untouched: the runs used copies.
    assert a.params == {"mine": 1, "shared_key": "node"}
    assert b.params == {}


def test_set_params_copies() -> None:
    node = Record("a")
    params = {"k": 1}
    node.set_params(params)
    params["k"] = 2
    assert node.params == {"k": 1}


def test_each_run_uses_a_copy() -> None:
    instances: list[BaseNode[Any, Any]] = []

    class Flaky(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            instances.append(self)
            if self.cur_retry == 0:
                raise ValueError("first try fails")
            return self.cur_retry

    node = Flaky(max_retries=2)
    graph = Graph(node)
    graph.run({})
    graph.run({})
    assert len(instances) == 4
    assert all(i is not node for i in instances)
    assert instances[0] is instances[1]
    assert instances[0] is not instances[2]
    assert node.cur_retry == 0
    assert node.params == {}


# -- retries and fallback ---------------------------------------------------------


class Flaky(Node[Any, Any]):
    """Fails ``failures`` times, then returns the try number."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.calls = 0
        self.fallbacks: list[tuple[Any, Exception]] = []
        self.retries_seen: list[int] = []

    def prep(self, shared: dict[str, Any]) -> Any:
        return "input"

    def exec(self, prep_res: Any) -> Any:
        self.calls += 1
        self.retries_seen.append(self.cur_retry)
        if self.calls <= self.failures:
            raise ValueError(f"fail {self.calls}")
        return f"ok after {self.calls}"

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared["result"] = exec_res
        return None


def test_retry_succeeds_on_second_try() -> None:
    node = Flaky(failures=1, max_retries=3, wait=0.01)
    shared: dict[str, Any] = {}
    started = time.monotonic()
    node.run(shared)
    assert time.monotonic() - started >= 0.01
    assert node.calls == 2
    assert node.retries_seen == [0, 1]
    assert shared["result"] == "ok after 2"


def test_retries_exhausted_uses_fallback() -> None:
    class WithFallback(Flaky):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            self.fallbacks.append((prep_res, exc))
            return "fallback"

    node = WithFallback(failures=10, max_retries=3)
    shared: dict[str, Any] = {}
    node.run(shared)
    assert node.calls == 3
    assert shared["result"] == "fallback"
    [(prep_res, exc)] = node.fallbacks
    assert prep_res == "input"
    assert str(exc) == "fail 3"


def test_default_fallback_reraises() -> None:
    node = Flaky(failures=10, max_retries=2)
    with pytest.raises(ValueError, match="fail 2"):
        node.run({})
    assert node.calls == 2


def test_zero_retries_is_refused_when_run() -> None:
    node = Flaky(failures=0, max_retries=0)
    with pytest.raises(RuntimeError, match="max_retries is 0"):
        node.run({})
    assert node.calls == 0


# -- hooks --------------------------------------------------------------------------


class Hooked(Node[Any, Any]):
    def __init__(self, fail_in: str | None = None, suppress: bool = False) -> None:
        super().__init__(node_id="hooked")
        self.fail_in = fail_in
        self.suppress = suppress
        self.events: list[tuple[Any, ...]] = []

    def _maybe_fail(self, step: str) -> None:
        if self.fail_in == step:
            raise ValueError(f"{step} failed")

    def before_prep(self, shared: dict[str, Any]) -> None:
        self.events.append(("before_prep", shared["tag"]))

    def prep(self, shared: dict[str, Any]) -> Any:
        self._maybe_fail("prep")
        return "p"

    def exec(self, prep_res: Any) -> Any:
        self._maybe_fail("exec")
        return "e"

    def after_exec(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        self.events.append(("after_exec", shared["tag"], prep_res, exec_res))

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        self._maybe_fail("post")
        self.events.append(("post",))
        return "posted"

    def on_error(self, shared: dict[str, Any], exc: Exception) -> bool:
        self.events.append(("on_error", shared["tag"], str(exc)))
        return self.suppress


def test_hooks_called_with_right_args_in_order() -> None:
    node = Hooked()
    assert node.run({"tag": "t"}) == "posted"
    assert node.events == [
        ("before_prep", "t"),
        ("after_exec", "t", "p", "e"),
        ("post",),
    ]
    assert node.last_error is None


@pytest.mark.parametrize("step", ["prep", "exec", "post"])
def test_on_error_false_propagates(step: str) -> None:
    node = Hooked(fail_in=step)
    with pytest.raises(ValueError, match=f"{step} failed"):
        node.run({"tag": "t"})
    assert node.events[-1] == ("on_error", "t", f"{step} failed")


@pytest.mark.parametrize("step", ["prep", "exec", "post"])
def test_on_error_true_suppresses_and_returns_default(step: str) -> None:
    node = Hooked(fail_in=step, suppress=True)
    assert node.run({"tag": "t"}) is None
    assert isinstance(node.last_error, ValueError)
    assert str(node.last_error) == f"{step} failed"


def test_on_error_not_called_when_fallback_recovers() -> None:
    class Recovers(Hooked):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return "recovered"

    node = Recovers(fail_in="exec")
    node.run({"tag": "t"})
    assert ("after_exec", "t", "p", "recovered") in node.events
    assert not [e for e in node.events if e[0] == "on_error"]


def test_suppressed_error_continues_graph_via_default() -> None:
    failing = Hooked(fail_in="exec", suppress=True)
    named, default = Record("named"), Record("default")
    failing - "posted" >> named
    failing >> default
    shared: dict[str, Any] = {"tag": "t"}
    Graph(failing).run(shared)
    assert shared["trail"] == ["default"]


def test_unsuppressed_error_stops_graph() -> None:
    failing, after = Hooked(fail_in="exec"), Record("after")
    failing >> after
    shared: dict[str, Any] = {"tag": "t"}
    with pytest.raises(ValueError, match="exec failed"):
        Graph(failing).run(shared)
    assert "trail" not in shared


# -- async nodes and graphs -----------------------------------------------------


async def test_async_chain_mixes_sync_and_async_nodes() -> None:
    a, b, c = AsyncRecord("a"), Record("b"), AsyncRecord("c", action="end")
    a >> b >> c
    shared: dict[str, Any] = {}
    assert await AsyncGraph(a).run_async(shared) == "end"
    assert shared["trail"] == ["a", "b", "c"]


async def test_async_named_actions_and_missing_successor() -> None:
    decide, yes, no = (
        AsyncRecord("decide", action="approve"),
        Record("yes"),
        Record("no"),
    )
    decide - "approve" >> yes
    decide - "reject" >> no
    yes - "never" >> no
    shared: dict[str, Any] = {}
    with pytest.warns(UserWarning, match="Graph ends"):
        assert await AsyncGraph(decide).run_async(shared) is None
    assert shared["trail"] == ["decide", "yes"]


async def test_async_node_data_flow_and_standalone() -> None:
    class Double(AsyncNode[Any, Any]):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return shared["x"]

        async def exec_async(self, prep_res: Any) -> Any:
            await asyncio.sleep(0)
            return prep_res * 2

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["y"] = exec_res
            return "done"

    shared: dict[str, Any] = {"x": 4}
    assert await Double().run_async(shared) == "done"
    assert shared["y"] == 8


async def test_async_node_never_calls_its_sync_steps() -> None:
    # As in KayGraph: an AsyncNode runs only its *_async steps; a sync `post` that
    # returns an action does not route, and the sync steps never run.
    calls: list[str] = []

    class SyncSteps(AsyncNode[Any, Any]):
        def prep(self, shared: dict[str, Any]) -> Any:
            calls.append("prep")
            return 1

        def exec(self, prep_res: Any) -> Any:
            calls.append("exec")
            return prep_res + 1

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            calls.append("post")
            return "ok"

    node = SyncSteps()
    routed = Record("routed")
    node - "ok" >> routed
    shared: dict[str, Any] = {}
    assert await node._run_async(shared) is None
    assert calls == []
    with pytest.warns(UserWarning, match="Graph ends"):
        assert await AsyncGraph(node).run_async(shared) is None
    assert "trail" not in shared


def test_sync_run_of_async_node_raises() -> None:
    with pytest.raises(RuntimeError, match="run_async"):
        AsyncRecord("a").run({})
    with pytest.raises(RuntimeError, match="run_async"):
        AsyncGraph(AsyncRecord("a")).run({})


def test_async_node_in_sync_graph_raises() -> None:
    with pytest.raises(RuntimeError, match="AsyncGraph"):
        Graph(AsyncRecord("a")).run({})


class AsyncFlaky(AsyncNode[Any, Any]):
    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.calls = 0
        self.fallbacks: list[tuple[Any, Exception]] = []

    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return "input"

    async def exec_async(self, prep_res: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(f"fail {self.calls}")
        return f"ok after {self.calls}"

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared["result"] = exec_res
        return None


async def test_async_retry_succeeds_on_second_try() -> None:
    node = AsyncFlaky(failures=1, max_retries=2, wait=0.01)
    shared: dict[str, Any] = {}
    started = time.monotonic()
    await node.run_async(shared)
    assert time.monotonic() - started >= 0.01
    assert node.calls == 2
    assert node.cur_retry == 1
    assert shared["result"] == "ok after 2"


async def test_async_retries_exhausted_uses_async_fallback() -> None:
    class WithFallback(AsyncFlaky):
        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
            self.fallbacks.append((prep_res, exc))
            return "fallback"

    node = WithFallback(failures=10, max_retries=3)
    shared: dict[str, Any] = {}
    await node.run_async(shared)
    assert node.calls == 3
    assert shared["result"] == "fallback"
    assert [(p, str(e)) for p, e in node.fallbacks] == [("input", "fail 3")]


async def test_async_node_ignores_a_sync_fallback() -> None:
    class WithSyncFallback(AsyncFlaky):
        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return "sync fallback"

    node = WithSyncFallback(failures=10, max_retries=2)
    with pytest.raises(ValueError, match="fail 2"):
        await node.run_async({})


async def test_async_default_fallback_reraises() -> None:
    node = AsyncFlaky(failures=10, max_retries=2)
    with pytest.raises(ValueError, match="fail 2"):
        await node.run_async({})
    assert node.calls == 2


class AsyncHooked(AsyncNode[Any, Any]):
    def __init__(self, fail: bool = False, suppress: bool = False) -> None:
        super().__init__(node_id="async_hooked")
        self.fail = fail
        self.suppress = suppress
        self.events: list[tuple[Any, ...]] = []

    async def before_prep_async(self, shared: dict[str, Any]) -> None:
        self.events.append(("before_prep_async", shared["tag"]))

    async def prep_async(self, shared: dict[str, Any]) -> Any:
        return "p"

    async def exec_async(self, prep_res: Any) -> Any:
        if self.fail:
            raise ValueError("async exec failed")
        return "e"

    async def after_exec_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        self.events.append(("after_exec_async", shared["tag"], prep_res, exec_res))

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared.setdefault("trail", []).append(self.node_id)
        return "posted"

    async def on_error_async(self, shared: dict[str, Any], exc: Exception) -> bool:
        self.events.append(("on_error_async", str(exc)))
        shared["seen_error"] = str(exc)
        return self.suppress


async def test_async_hooks_called_with_right_args() -> None:
    node = AsyncHooked()
    assert await node.run_async({"tag": "t"}) == "posted"
    assert node.events == [
        ("before_prep_async", "t"),
        ("after_exec_async", "t", "p", "e"),
    ]


async def test_async_node_does_not_call_sync_hooks() -> None:
    # KayGraph never calls before_prep / after_exec / on_error for an AsyncNode, so an
    # `on_error` returning True there does not suppress the error.
    events: list[tuple[Any, ...]] = []

    class SyncHooks(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            raise ValueError("boom")

        def before_prep(self, shared: dict[str, Any]) -> None:
            events.append(("before_prep",))

        def on_error(self, shared: dict[str, Any], exc: Exception) -> bool:
            events.append(("on_error", str(exc)))
            return True

    node = SyncHooks()
    with pytest.raises(ValueError, match="boom"):
        await node.run_async({})
    assert events == []


async def test_async_on_error_true_suppresses_and_graph_continues() -> None:
    failing = AsyncHooked(fail=True, suppress=True)
    named, default = Record("named"), Record("default")
    failing - "posted" >> named
    failing >> default
    shared: dict[str, Any] = {"tag": "t"}
    assert await AsyncGraph(failing).run_async(shared) is None
    assert shared["trail"] == ["default"]
    assert shared["seen_error"] == "async exec failed"


async def test_async_on_error_false_propagates() -> None:
    node = AsyncHooked(fail=True)
    with pytest.raises(ValueError, match="async exec failed"):
        await node.run_async({"tag": "t"})
    assert node.events[-1] == ("on_error_async", "async exec failed")
    assert node.last_error is None


async def test_nested_async_graph() -> None:
    inner_a, inner_b = AsyncRecord("inner_a"), Record("inner_b", action="done")
    inner_a >> inner_b
    inner = AsyncGraph(inner_a, node_id="inner")
    before, after = Record("before"), AsyncRecord("after")
    before >> inner
    inner - "done" >> after
    shared: dict[str, Any] = {}
    await AsyncGraph(before).run_async(shared)
    assert shared["trail"] == ["before", "inner_a", "inner_b", "after"]


async def test_sync_graph_nested_in_async_graph() -> None:
    inner = Graph(Record("inner", action="out"))
    after = AsyncRecord("after")
    inner - "out" >> after
    shared: dict[str, Any] = {}
    await AsyncGraph(inner).run_async(shared)
    assert shared["trail"] == ["inner", "after"]


async def test_async_graph_params() -> None:
    seen: list[dict[str, Any]] = []

    class Show(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            seen.append(dict(self.params))
            return None

    node = Show()
    node.set_params({"own": 1})
    graph = AsyncGraph(node)
    graph.set_params({"g": 2})
    await graph.run_async({})
    assert seen == [{"g": 2}]
    assert node.params == {"own": 1}


# -- batch nodes ------------------------------------------------------------------


def test_batch_node_runs_exec_per_item_with_retries() -> None:
    attempts: dict[int, int] = {}

    class Square(BatchNode):
        def prep(self, shared: dict[str, Any]) -> Any:
            return iter(shared["items"])

        def exec(self, prep_res: Any) -> Any:
            attempts[prep_res] = attempts.get(prep_res, 0) + 1
            if prep_res == 2 and attempts[prep_res] == 1:
                raise ValueError("transient")
            return prep_res * prep_res

        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return -1

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res
            return None

    shared: dict[str, Any] = {"items": [1, 2, 3]}
    Square(max_retries=2).run(shared)
    assert shared["out"] == [1, 4, 9]
    assert attempts == {1: 1, 2: 2, 3: 1}

    shared = {"items": [2]}
    attempts.clear()
    Square(max_retries=1).run(shared)
    assert shared["out"] == [-1]


def test_batch_node_with_no_items() -> None:
    class Empty(BatchNode):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res
            return None

    shared: dict[str, Any] = {}
    Empty().run(shared)
    assert shared["out"] == []


async def test_async_batch_node_is_sequential() -> None:
    log: list[str] = []

    class Seq(AsyncBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return [1, 2, 3]

        async def exec_async(self, prep_res: Any) -> Any:
            log.append(f"start {prep_res}")
            await asyncio.sleep(0)
            log.append(f"end {prep_res}")
            return prep_res * 10

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["out"] = exec_res
            return None

    shared: dict[str, Any] = {}
    await Seq().run_async(shared)
    assert shared["out"] == [10, 20, 30]
    assert log == ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]


async def test_async_parallel_batch_node_runs_items_concurrently() -> None:
    class Pair(AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return ["waiter", "setter"]

        async def exec_async(self, prep_res: Any) -> Any:
            event: asyncio.Event = self.params["event"]
            if prep_res == "waiter":
                # Only completes if the "setter" item runs while this one waits.
                await event.wait()
                return "waited"
            await asyncio.sleep(0)
            event.set()
            return "set"

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["out"] = exec_res
            return None

    node = Pair()
    node.set_params({"event": asyncio.Event()})
    shared: dict[str, Any] = {}
    await asyncio.wait_for(node.run_async(shared), timeout=1)
    assert shared["out"] == ["waited", "set"]


async def test_async_parallel_batch_failure_leaves_siblings_running() -> None:
    # KayGraph's gather: the first failure propagates, the other items run to their end.
    finished: list[Any] = []
    release = asyncio.Event()

    class FailFast(AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return ["slow", "bad"]

        async def exec_async(self, prep_res: Any) -> Any:
            if prep_res == "bad":
                await asyncio.sleep(0)
                raise ValueError("bad item")
            await release.wait()
            finished.append(prep_res)
            return None

    with pytest.raises(ValueError, match="bad item"):
        await asyncio.wait_for(FailFast().run_async({}), timeout=1)
    assert finished == []
    release.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert finished == ["slow"]


async def test_batch_nodes_in_async_graph() -> None:
    class Collect(BatchNode):
        def prep(self, shared: dict[str, Any]) -> Any:
            return shared["items"]

        def exec(self, prep_res: Any) -> Any:
            return prep_res + 1

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["items"] = exec_res
            return None

    class Parallel(AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return shared["items"]

        async def exec_async(self, prep_res: Any) -> Any:
            return prep_res * 2

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["items"] = exec_res
            return None

    first = Collect()
    first >> Parallel()
    shared: dict[str, Any] = {"items": [1, 2]}
    await AsyncGraph(first).run_async(shared)
    assert shared["items"] == [4, 6]


# -- run context and WebSocketNode ----------------------------------------------


def test_run_context_defaults_to_none_and_is_reset() -> None:
    assert run_context.get() is None
    ctx = FakeContext()
    with use_run_context(ctx) as current:
        assert current is ctx
        assert run_context.get() is ctx
    assert run_context.get() is None

    with pytest.raises(KeyError), use_run_context(ctx):
        raise KeyError("boom")
    assert run_context.get() is None


class Approve(WebSocketNode[Any, Any]):
    async def exec_async(self, prep_res: Any) -> Any:
        await self.send_update("progress", {"percent": 50})
        await self.send_update("ping")
        return await self.wait_for_input(prompt="Approve?", options=["yes", "no"], timeout=5)

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared["answer"] = exec_res
        return "approved" if exec_res.get("choice") == "yes" else "rejected"


async def test_websocket_node_with_context_emits_and_requests_input() -> None:
    ctx = FakeContext(answer={"choice": "yes"})
    approve, done = Approve(node_id="approve"), AsyncRecord("done")
    approve - "approved" >> done
    shared: dict[str, Any] = {}
    with use_run_context(as_context(ctx)):
        await AsyncGraph(approve).run_async(shared)

    assert shared["answer"] == {"choice": "yes"}
    assert shared["trail"] == ["done"]
    assert ctx.requests == [("approve", "Approve?", ["yes", "no"], 5)]
    assert ctx.emits == [
        ("approve", "node_status", {"status": "running"}),
        ("approve", "progress", {"percent": 50}),
        ("approve", "ping", {}),
        ("approve", "node_status", {"status": "completed"}),
        ("done", "node_status", {"status": "running"}),
        ("done", "node_status", {"status": "completed"}),
    ]
    assert approve.updates == []


async def test_node_status_failed_is_emitted_before_reraising() -> None:
    class Boom(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            raise ValueError("kaput")

    first, boom = AsyncRecord("first"), Boom(node_id="boom")
    first >> boom
    ctx = FakeContext()
    with use_run_context(ctx), pytest.raises(ValueError, match="kaput"):
        await AsyncGraph(first).run_async({})
    assert ctx.statuses() == [
        ("first", "running"),
        ("first", "completed"),
        ("boom", "running"),
        ("boom", "failed"),
    ]
    assert ctx.emits[-1][2] == {"status": "failed", "message": "kaput"}


async def test_nested_graph_statuses_are_reported() -> None:
    inner = AsyncGraph(AsyncRecord("leaf"), node_id="inner")
    ctx = FakeContext()
    with use_run_context(ctx):
        await AsyncGraph(inner).run_async({})
    assert ctx.statuses() == [
        ("inner", "running"),
        ("leaf", "running"),
        ("leaf", "completed"),
        ("inner", "completed"),
    ]


async def test_no_status_events_without_context() -> None:
    shared: dict[str, Any] = {}
    await AsyncGraph(AsyncRecord("a")).run_async(shared)
    assert shared["trail"] == ["a"]


async def test_websocket_node_without_context() -> None:
    class Report(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("progress", {"percent": 100})
            await self.send_update("note")
            return None

    node = Report()
    await node.run_async({})
    assert node.updates == [("progress", {"percent": 100}), ("note", {})]

    # In a graph each run gets its own, fresh list: the graph's node is untouched.
    graph_node = Report()
    await AsyncGraph(graph_node).run_async({})
    assert graph_node.updates == []

    with pytest.raises(RuntimeError, match="RunContext"):
        await Approve().run_async({})


async def test_input_timeout_is_not_retried_nor_handled() -> None:
    calls: list[str] = []

    class Ask(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            calls.append("exec")
            return await self.wait_for_input("Anyone?", timeout=0.01)

        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
            calls.append("fallback")
            return None

        async def on_error_async(self, shared: dict[str, Any], exc: Exception) -> bool:
            calls.append("on_error")
            return True

    ctx = FakeContext(timeout=True)
    with use_run_context(ctx), pytest.raises(InputTimeout):
        await AsyncGraph(Ask(node_id="ask", max_retries=3)).run_async({})
    assert calls == ["exec"]
    assert len(ctx.requests) == 1
    assert ctx.statuses() == [("ask", "running"), ("ask", "failed")]


def test_input_timeout_in_sync_node_is_not_retried_nor_handled() -> None:
    calls: list[str] = []

    class Sync(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            calls.append("exec")
            raise InputTimeout("late")

        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            calls.append("fallback")
            return None

        def on_error(self, shared: dict[str, Any], exc: Exception) -> bool:
            calls.append("on_error")
            return True

    with pytest.raises(InputTimeout):
        Graph(Sync(max_retries=3)).run({})
    assert calls == ["exec"]


async def test_cancellation_propagates_immediately() -> None:
    started = asyncio.Event()
    calls: list[str] = []

    class Forever(AsyncNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            calls.append("exec")
            started.set()
            await asyncio.Event().wait()
            return None

        async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
            calls.append("fallback")
            return None

        async def on_error_async(self, shared: dict[str, Any], exc: Exception) -> bool:
            calls.append("on_error")
            return True

    after = AsyncRecord("after")
    forever = Forever(node_id="forever", max_retries=3)
    forever >> after
    ctx = FakeContext()
    shared: dict[str, Any] = {}

    async def run() -> Any:
        with use_run_context(ctx):
            return await AsyncGraph(forever).run_async(shared)

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), timeout=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)
    assert calls == ["exec"]
    assert "trail" not in shared
    assert ctx.statuses() == [("forever", "running")]


async def test_cancellation_of_parallel_batch_cancels_items() -> None:
    started = asyncio.Event()
    cancelled: list[Any] = []

    class Hang(AsyncParallelBatchNode):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return [1, 2]

        async def exec_async(self, prep_res: Any) -> Any:
            started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(prep_res)
                raise
            return None

    task = asyncio.create_task(AsyncGraph(Hang(max_retries=3)).run_async({}))
    await asyncio.wait_for(started.wait(), timeout=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=1)
    assert sorted(cancelled) == [1, 2]
