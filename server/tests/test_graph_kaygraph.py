"""KayGraph 0.3's surface beyond the basics: Config, context, resources, logger,
validated and metrics nodes, thread-parallel batches and batch graphs."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest

# isort: split
from graphwire.graph import (
    AsyncBatchGraph,
    AsyncGraph,
    AsyncNode,
    AsyncParallelBatchGraph,
    BaseNode,
    BatchGraph,
    Config,
    Graph,
    MetricsNode,
    Node,
    ParallelBatchNode,
    ValidatedNode,
)

# -- Config ----------------------------------------------------------------------


def test_config_reads_writes_and_merges() -> None:
    config = Config(model="small", temperature=0.2)
    assert config.get("model") == "small"
    assert config.get("missing") is None
    assert config.get("missing", 7) == 7
    config.set("model", "large")
    config.update(top_p=0.9, temperature=0.5)
    assert config.to_dict() == {"model": "large", "temperature": 0.5, "top_p": 0.9}
    merged = config.merge(Config(model="tiny"))
    assert merged.get("model") == "tiny"
    assert merged.get("top_p") == 0.9
    assert config.get("model") == "large", "merge returns a new Config"
    assert config.merge({"extra": 1}).get("extra") == 1
    assert config.merge(42) is config  # type: ignore[arg-type]
    assert bool(Config()) is False
    assert bool(config) is True
    assert repr(Config(a=1)) == "Config({'a': 1})"
    # to_dict is a copy.
    config.to_dict()["model"] = "changed"
    assert config.get("model") == "large"


class ReadConfig(Node[Any, Any]):
    def exec(self, prep_res: Any) -> Any:
        return self.config.get("model", "default-model")

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("models", []).append(exec_res)
        return None


def test_graph_config_reaches_nodes_without_their_own() -> None:
    plain, own = ReadConfig(node_id="plain"), ReadConfig(node_id="own", config=Config(model="mine"))
    plain >> own
    shared: dict[str, Any] = {}
    # Positional, as KayGraph's `Graph(start, config)`: the second argument is the config.
    Graph(plain, Config(model="graph-wide")).run(shared)
    assert shared["models"] == ["graph-wide", "mine"]
    assert not plain.config, "the graph's node object keeps its own (empty) config"


def test_config_accepts_a_mapping_and_refuses_other_types() -> None:
    assert Node(config={"model": "m"}).config.get("model") == "m"  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a Config"):
        Graph(ReadConfig(), "not-a-config")  # type: ignore[arg-type]


async def test_async_graph_hands_down_its_config() -> None:
    class AsyncRead(AsyncNode[Any, Any]):
        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
            shared["model"] = self.config.get("model")
            return None

    shared: dict[str, Any] = {}
    await AsyncGraph(AsyncRead(), config=Config(model="async-wide")).run_async(shared)
    assert shared["model"] == "async-wide"


# -- params, context, resources, logger ---------------------------------------------------


def test_set_params_refuses_a_non_dict() -> None:
    with pytest.raises(TypeError, match="Parameters must be a dictionary, got <class 'list'>"):
        Node().set_params([("a", 1)])  # type: ignore[arg-type]


def test_execution_context_records_timing() -> None:
    node = Node()
    assert node.get_context("start_time") is None
    assert node.get_context("missing", "dflt") == "dflt"
    node.set_context("mine", 3)
    node.run({})
    assert node.get_context("mine") == 3
    assert isinstance(node.get_context("start_time"), float)
    assert node.get_context("last_execution_time") >= 0


def test_with_node_sets_up_and_cleans_up_even_on_error() -> None:
    events: list[str] = []

    class Resourceful(Node[Any, Any]):
        def setup_resources(self) -> None:
            events.append("setup")

        def cleanup_resources(self) -> None:
            events.append("cleanup")

    with Resourceful() as node:
        assert isinstance(node, Resourceful)
        events.append("body")
    assert events == ["setup", "body", "cleanup"]
    with pytest.raises(ValueError, match="inside"), Resourceful():
        raise ValueError("inside")
    assert events[-1] == "cleanup"


def test_nodes_have_a_logger_named_after_their_class(caplog: pytest.LogCaptureFixture) -> None:
    # In KayGraph's docs nodes log through self.logger; without it, an exec with a
    # fallback would turn the AttributeError into the fallback's value.
    class Chatty(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            self.logger.info("working on %s", prep_res)
            return "worked"

        def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
            return f"fallback: {exc}"

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["out"] = exec_res
            return None

    shared: dict[str, Any] = {}
    with caplog.at_level(logging.INFO, logger="Chatty"):
        Chatty().run(shared)
    assert shared["out"] == "worked"
    assert Chatty().logger.name == "Chatty"
    assert [r.getMessage() for r in caplog.records if r.name == "Chatty"] == ["working on None"]


def test_a_graphs_own_hooks_are_not_called() -> None:
    calls: list[str] = []

    class Hooked(Graph):
        def before_prep(self, shared: dict[str, Any]) -> None:
            calls.append("before_prep")

        def on_error(self, shared: dict[str, Any], error: Exception) -> bool:
            calls.append("on_error")
            return True

    class Fails(Node[Any, Any]):
        def exec(self, prep_res: Any) -> Any:
            raise ValueError("inner")

    with pytest.raises(ValueError, match="inner"):
        Hooked(Fails()).run({})
    assert calls == []


def test_copies_share_mutable_state_with_the_graphs_node() -> None:
    # KayGraph copies with copy.copy: the execution context dict is shared.
    node = Node(node_id="n")
    Graph(node).run({})
    assert isinstance(node.get_context("start_time"), float)


# -- ValidatedNode ---------------------------------------------------------------------------


class Positive(ValidatedNode[Any, Any]):
    def __init__(self, failures: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failures = failures
        self.inputs_checked = 0

    def prep(self, shared: dict[str, Any]) -> Any:
        return shared["x"]

    def validate_input(self, prep_res: Any) -> Any:
        self.inputs_checked += 1
        if prep_res <= 0:
            raise ValueError("x must be positive")
        return int(prep_res)

    def exec(self, prep_res: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("flaky")
        return prep_res * 10

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        return -prep_res

    def validate_output(self, exec_res: Any) -> Any:
        return {"value": exec_res}

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared["out"] = exec_res
        return None


def test_validated_node_checks_input_once_and_output_last() -> None:
    node = Positive(failures=1, max_retries=3)
    shared: dict[str, Any] = {"x": 4.0}
    node.run(shared)
    assert shared["out"] == {"value": 40}
    assert node.inputs_checked == 1, "validate_input runs once, not once per try"

    fallback = Positive(failures=5, max_retries=2)
    fallback.run(shared)
    assert shared["out"] == {"value": -4}, "the fallback's value is validated too"


def test_validated_node_input_error_fails_the_node() -> None:
    with pytest.raises(ValueError, match="positive"):
        Positive().run({"x": -1})


# -- MetricsNode -----------------------------------------------------------------------------


class Measured(MetricsNode[Any, Any]):
    def prep(self, shared: dict[str, Any]) -> Any:
        return shared.get("fail", False)

    def exec(self, prep_res: Any) -> Any:
        if prep_res:
            raise ValueError("asked to fail")
        return "ok"


def test_metrics_node_counts_runs_through_the_graphs_copies() -> None:
    node = Measured(node_id="measured")
    assert node.get_stats() == {"status": "no_executions"}
    graph = Graph(node)
    graph.run({})
    graph.run({})
    with pytest.raises(ValueError, match="asked to fail"):
        graph.run({"fail": True})
    stats = node.get_stats()
    assert stats["total_executions"] == 3
    assert stats["success_rate"] == pytest.approx(2 / 3)
    assert stats["min_execution_time"] <= stats["avg_execution_time"] <= stats["max_execution_time"]
    assert node.metrics["success_count"] == 2
    assert node.metrics["error_count"] == 1


def test_metrics_node_counts_retries_and_can_be_off() -> None:
    class Flaky(MetricsNode[Any, Any]):
        tries = 0

        def exec(self, prep_res: Any) -> Any:
            type(self).tries += 1
            if type(self).tries < 3:
                raise ValueError("again")
            return "ok"

    # KayGraph's order: collect_metrics first, then Node's max_retries.
    node = Flaky(True, 3)
    node.run({})
    assert node.get_stats()["total_retries"] == 2
    off = Measured(collect_metrics=False)
    off.run({})
    assert off.get_stats() == {"status": "no_executions"}


async def test_metrics_node_in_an_async_graph() -> None:
    node = Measured()
    await AsyncGraph(node).run_async({})
    assert node.get_stats()["total_executions"] == 1


# -- ParallelBatchNode -----------------------------------------------------------------------


def test_parallel_batch_node_runs_items_in_threads_in_order() -> None:
    barrier = threading.Barrier(3, timeout=5)
    threads: set[int] = set()

    class Fetch(ParallelBatchNode):
        def prep(self, shared: dict[str, Any]) -> Any:
            return shared["urls"]

        def exec(self, prep_res: Any) -> Any:
            threads.add(threading.get_ident())
            barrier.wait()  # only passes if the three items run at the same time
            return prep_res.upper()

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["pages"] = exec_res
            return None

    shared: dict[str, Any] = {"urls": ["a", "b", "c"]}
    node = Fetch(3)  # max_workers comes first
    assert node.max_workers == 3
    node.run(shared)
    assert shared["pages"] == ["A", "B", "C"]
    assert len(threads) == 3


def test_parallel_batch_node_retries_per_item_and_propagates_failures() -> None:
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    class Half(ParallelBatchNode):
        def prep(self, shared: dict[str, Any]) -> Any:
            return ["ok", "flaky", "bad"]

        def exec(self, prep_res: Any) -> Any:
            with lock:
                attempts[prep_res] = attempts.get(prep_res, 0) + 1
                count = attempts[prep_res]
            if prep_res == "bad" or (prep_res == "flaky" and count == 1):
                raise ValueError(prep_res)
            return prep_res

    with pytest.raises(ValueError, match="bad"):
        Half(None, 2).run({})
    assert attempts == {"ok": 1, "flaky": 2, "bad": 2}


# -- batch graphs ------------------------------------------------------------------------------


class Visit(Node[Any, Any]):
    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared.setdefault("visits", []).append(dict(self.params))
        return None


class PerFile(BatchGraph):
    def prep(self, shared: dict[str, Any]) -> Any:
        return [{"file": name} for name in shared["files"]]

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
        shared["post"] = (prep_res, exec_res)
        return "all-done"


def test_batch_graph_runs_the_graph_once_per_param_set() -> None:
    graph = PerFile(Visit())
    graph.set_params({"bucket": "b1", "file": "overridden"})
    shared: dict[str, Any] = {"files": ["x.txt", "y.txt"]}
    assert graph.run(shared) == "all-done"
    assert shared["visits"] == [{"bucket": "b1", "file": "x.txt"}, {"bucket": "b1", "file": "y.txt"}]
    assert shared["post"] == ([{"file": "x.txt"}, {"file": "y.txt"}], None)


def test_batch_graph_with_no_param_sets() -> None:
    class Nothing(BatchGraph):
        pass

    shared: dict[str, Any] = {}
    assert Nothing(Visit()).run(shared) is None
    assert "visits" not in shared


class AsyncVisit(AsyncNode[Any, Any]):
    async def exec_async(self, prep_res: Any) -> Any:
        log: list[str] = self.params["log"]
        log.append(f"start {self.params['i']}")
        await asyncio.sleep(0.01)
        log.append(f"end {self.params['i']}")
        return None


async def test_async_batch_graph_runs_one_after_the_other() -> None:
    class Seq(AsyncBatchGraph):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return [{"i": 1}, {"i": 2}]

    log: list[str] = []
    graph = Seq(AsyncVisit())
    graph.set_params({"log": log})
    await graph.run_async({})
    assert log == ["start 1", "end 1", "start 2", "end 2"]


async def test_async_parallel_batch_graph_runs_all_at_once() -> None:
    class Par(AsyncParallelBatchGraph):
        async def prep_async(self, shared: dict[str, Any]) -> Any:
            return [{"i": 1}, {"i": 2}]

        async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> Any:
            shared["post"] = prep_res
            return "done"

    log: list[str] = []
    graph = Par(AsyncVisit())
    graph.set_params({"log": log})
    shared: dict[str, Any] = {}
    assert await graph.run_async(shared) == "done"
    assert log[:2] == ["start 1", "start 2"]
    assert sorted(log[2:]) == ["end 1", "end 2"]
    assert shared["post"] == [{"i": 1}, {"i": 2}]


def test_base_node_is_generic_and_subclassable() -> None:
    class Typed(BaseNode[int, str]):
        def prep(self, shared: dict[str, Any]) -> int:
            return 3

        def exec(self, prep_res: int) -> str:
            return "x" * prep_res

        def post(self, shared: dict[str, Any], prep_res: int, exec_res: str) -> str | None:
            shared["out"] = exec_res
            return None

    shared: dict[str, Any] = {}
    Typed().run(shared)
    assert shared["out"] == "xxx"
