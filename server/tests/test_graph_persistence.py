"""Tests for `graphwire.graph.persistence`: checkpoints, stores and resuming (KayGraph's PersistentGraph)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# isort: split
from graphwire.graph import (
    AsyncNode,
    AsyncPersistentGraph,
    BaseNode,
    Checkpoint,
    CheckpointStore,
    FileCheckpointStore,
    Graph,
    MemoryCheckpointStore,
    Node,
    PersistentGraph,
)

# -- helpers -----------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process dying mid-node: not an `Exception`, so nothing handles it."""


class Step(Node[Any, Any]):
    """Counts its runs in ``runs`` (shared by every build of a graph) and appends to the trail.

    ``kill_first`` makes the first run of this id die half-way, after it started.
    """

    def __init__(self, node_id: str, runs: Counter[str], *, add: int = 1, kill_first: bool = False) -> None:
        super().__init__(node_id=node_id)
        self.runs = runs
        self.add = add
        self.kill_first = kill_first

    def prep(self, shared: dict[str, Any]) -> int:
        self.runs[self.node_id] += 1
        if self.kill_first and self.runs[self.node_id] == 1:
            raise Killed(self.node_id)
        return int(shared.get("total", 0))

    def exec(self, prep_res: int) -> int:
        return prep_res * 10 + self.add

    def post(self, shared: dict[str, Any], prep_res: int, exec_res: int) -> str | None:
        shared["total"] = exec_res
        shared.setdefault("trail", []).append(self.node_id)
        return None


class AsyncStep(AsyncNode[Any, Any]):
    def __init__(self, node_id: str, runs: Counter[str], *, add: int = 1, kill_first: bool = False) -> None:
        super().__init__(node_id=node_id)
        self.runs = runs
        self.add = add
        self.kill_first = kill_first

    async def prep_async(self, shared: dict[str, Any]) -> int:
        await asyncio.sleep(0)
        self.runs[self.node_id] += 1
        if self.kill_first and self.runs[self.node_id] == 1:
            raise Killed(self.node_id)
        return int(shared.get("total", 0))

    async def exec_async(self, prep_res: int) -> int:
        return prep_res * 10 + self.add

    async def post_async(self, shared: dict[str, Any], prep_res: int, exec_res: int) -> str | None:
        shared["total"] = exec_res
        shared.setdefault("trail", []).append(self.node_id)
        return None


def four_steps(runs: Counter[str], *, kill_third: bool = False) -> Step:
    """n1 >> n2 >> n3 >> n4, fresh objects every call (as a restarted process would build them)."""
    n1, n2 = Step("n1", runs, add=1), Step("n2", runs, add=2)
    n3, n4 = Step("n3", runs, add=3, kill_first=kill_third), Step("n4", runs, add=4)
    n1 >> n2 >> n3 >> n4
    return n1


def four_async_steps(runs: Counter[str], *, kill_third: bool = False) -> AsyncStep:
    """Async n1, sync n2, async n3, sync n4: both kinds checkpoint alike."""
    n1 = AsyncStep("n1", runs, add=1)
    n2 = Step("n2", runs, add=2)
    n3 = AsyncStep("n3", runs, add=3, kill_first=kill_third)
    n4 = Step("n4", runs, add=4)
    n1 >> n2 >> n3 >> n4
    return n1


UNINTERRUPTED = {"total": 1234, "trail": ["n1", "n2", "n3", "n4"]}


def checkpoint_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("checkpoint_*.json"))


def store_of(kind: str, tmp_path: Path) -> CheckpointStore:
    return MemoryCheckpointStore() if kind == "memory" else FileCheckpointStore(tmp_path / "checkpoints")


# -- checkpoints while running ---------------------------------------------------------------


def test_run_returns_the_shared_store_and_writes_one_file_per_node(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    shared: dict[str, Any] = {}
    assert graph.run(shared) is shared
    assert shared == UNINTERRUPTED
    files = checkpoint_files(tmp_path)
    assert [f.name.split("_")[1] for f in files] == ["000000", "000001", "000002", "000003"]
    assert (tmp_path / "latest.json").is_file()


def test_each_checkpoint_is_taken_before_its_node(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    graph.run({"total": 0})
    listed = graph.list_checkpoints()
    assert [(c["counter"], c["node_id"]) for c in listed] == [(0, "n1"), (1, "n2"), (2, "n3"), (3, "n4")]
    shared, node_id = graph.resume_from_checkpoint(listed[2]["file"])
    assert node_id == "n3"
    assert shared == {"total": 12, "trail": ["n1", "n2"]}


def test_list_checkpoints_gives_file_counter_node_and_time(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    graph.run({})
    for entry in graph.list_checkpoints():
        assert set(entry) == {"file", "counter", "node_id", "timestamp"}
        assert Path(entry["file"]).parent == tmp_path
        assert isinstance(entry["timestamp"], float)


def test_without_a_store_it_is_a_plain_graph(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()))
    assert graph.run({}) == UNINTERRUPTED
    assert graph.store is None
    assert graph.checkpoint_dir is None
    assert graph.list_checkpoints() == []
    with pytest.raises(ValueError, match="No checkpoint directory"):
        graph.resume_from_checkpoint()
    with pytest.raises(ValueError, match="No checkpoint directory"):
        graph.save_checkpoint({}, "n1")


def test_enable_and_disable_checkpointing(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()))
    graph.run({})
    assert checkpoint_files(tmp_path) == []
    graph.enable_checkpointing(tmp_path)
    assert graph.checkpoint_dir == tmp_path
    graph.run({})
    assert len(checkpoint_files(tmp_path)) == 4
    graph.disable_checkpointing()
    graph.run({})
    assert len(checkpoint_files(tmp_path)) == 4
    # what was saved is still there to resume from
    assert graph.resume_from_checkpoint()[0] == UNINTERRUPTED


def test_enable_checkpointing_accepts_a_store() -> None:
    store = MemoryCheckpointStore()
    graph = PersistentGraph(four_steps(Counter()))
    graph.enable_checkpointing(store)
    graph.run({})
    assert [cp.node_id for cp in store.list()] == ["n1", "n2", "n3", "n4"]


def test_a_dir_and_a_store_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        PersistentGraph(None, checkpoint_dir=tmp_path, store=MemoryCheckpointStore())


def test_clear_checkpoints_removes_every_file(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    graph.run({})
    graph.clear_checkpoints()
    assert list(tmp_path.glob("*.json")) == []
    assert graph.list_checkpoints() == []


def test_checkpoints_follow_loops_and_branches(tmp_path: Path) -> None:
    class Check(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
            return "again" if shared["total"] < 3 else "done"

    class Inc(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["total"] += 1

    check, inc, done = Check(node_id="check"), Inc(node_id="inc"), BaseNode[Any, Any]("done")
    check - "again" >> inc
    inc >> check
    check - "done" >> done
    graph = PersistentGraph(check, checkpoint_dir=tmp_path)
    graph.run({"total": 1})
    ids = [c["node_id"] for c in graph.list_checkpoints()]
    assert ids == ["check", "inc", "check", "inc", "check", "done"]


def test_counters_keep_rising_across_runs_of_one_graph(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    graph.run({})
    graph.run({})
    counters = [c["counter"] for c in graph.list_checkpoints()]
    # each run also takes one number for its end-of-run checkpoint (4, then 9)
    assert counters == [0, 1, 2, 3, 5, 6, 7, 8]
    assert graph.checkpoint_counter == 10


def test_a_nested_persistent_graph_passes_its_last_action_on(tmp_path: Path) -> None:
    class Pick(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
            return "left"

    inner = PersistentGraph(Pick(node_id="pick"), checkpoint_dir=tmp_path)
    runs: Counter[str] = Counter()
    left = Step("left", runs)
    inner - "left" >> left
    shared: dict[str, Any] = {}
    Graph(inner).run(shared)
    assert shared["trail"] == ["left"]
    assert [c["node_id"] for c in inner.list_checkpoints()] == ["pick"]


# -- resuming -------------------------------------------------------------------------------


def test_resume_from_latest_after_a_crash(tmp_path: Path) -> None:
    graph = PersistentGraph(four_steps(Counter(), kill_third=True), checkpoint_dir=tmp_path)
    with pytest.raises(Killed):
        graph.run({})
    shared, node_id = graph.resume_from_checkpoint()
    assert (shared, node_id) == ({"total": 12, "trail": ["n1", "n2"]}, "n3")


def test_missing_checkpoints_raise_file_not_found(tmp_path: Path) -> None:
    graph = PersistentGraph(checkpoint_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        graph.resume_from_checkpoint(str(tmp_path / "nonexistent" / "checkpoint.json"))
    with pytest.raises(FileNotFoundError):
        graph.resume_from_checkpoint()  # nothing saved yet


def test_resume_and_run_from_a_manual_checkpoint(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    graph = PersistentGraph(four_steps(runs), checkpoint_dir=tmp_path)
    graph.save_checkpoint({"total": 99, "trail": ["elsewhere"]}, "n3")
    result = graph.resume_and_run()
    assert result == {"total": 9934, "trail": ["elsewhere", "n3", "n4"]}
    assert runs == Counter({"n3": 1, "n4": 1})


def test_resuming_a_finished_run_runs_nothing(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    graph = PersistentGraph(four_steps(runs), checkpoint_dir=tmp_path)
    graph.run({})
    assert graph.resume_from_checkpoint() == (UNINTERRUPTED, None)
    assert graph.resume_and_run() == UNINTERRUPTED
    assert runs == Counter({"n1": 1, "n2": 1, "n3": 1, "n4": 1})
    assert len(graph.list_checkpoints()) == 4  # the end-of-run checkpoint is not listed


def test_resume_refuses_an_unknown_or_ambiguous_node(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    graph = PersistentGraph(four_steps(runs), checkpoint_dir=tmp_path)
    graph.save_checkpoint({}, "Step_140000000000")
    with pytest.raises(ValueError, match="explicit node_id"):
        graph.resume_and_run()
    twin_a, twin_b = Step("twin", runs), Step("twin", runs)
    twin_a >> twin_b
    twins = PersistentGraph(twin_a, store=MemoryCheckpointStore())
    twins.save_checkpoint({}, "twin")
    with pytest.raises(ValueError, match="2 nodes"):
        twins.resume_and_run()
    assert runs == Counter()


def test_a_resumed_graph_numbers_its_checkpoints_after_the_loaded_one(tmp_path: Path) -> None:
    PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path).run({})
    fresh = PersistentGraph(four_steps(Counter()), checkpoint_dir=tmp_path)
    fresh.resume_and_run(fresh.list_checkpoints()[2]["file"])  # n3 and n4 again
    counters = [c["counter"] for c in fresh.list_checkpoints()]
    assert counters == [0, 1, 2, 3, 3, 4]  # the resumed run goes on from 2: 3 (n3), 4 (n4)
    assert [c["node_id"] for c in fresh.list_checkpoints()][-2:] == ["n3", "n4"]


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_an_interrupted_run_resumes_in_a_rebuilt_graph_without_rerunning_nodes(kind: str, tmp_path: Path) -> None:
    store = store_of(kind, tmp_path)
    runs: Counter[str] = Counter()
    with pytest.raises(Killed):
        PersistentGraph(four_steps(runs, kill_third=True), store=store).run({})
    assert runs == Counter({"n1": 1, "n2": 1, "n3": 1})

    # A new process: new node objects, a new graph, the same store (or a new one on the same dir).
    if isinstance(store, FileCheckpointStore):
        store = FileCheckpointStore(store.directory)
    rebuilt = PersistentGraph(four_steps(runs), store=store)
    assert rebuilt.resume_and_run() == UNINTERRUPTED
    assert runs == Counter({"n1": 1, "n2": 1, "n3": 2, "n4": 1})  # n3 died once and ran again whole


# -- the async graph ------------------------------------------------------------------------------


async def test_async_run_returns_shared_and_checkpoints_each_node() -> None:
    store = MemoryCheckpointStore()
    graph = AsyncPersistentGraph(four_async_steps(Counter()), store=store)
    shared: dict[str, Any] = {}
    assert await graph.run_async(shared) is shared
    assert shared == UNINTERRUPTED
    assert [(cp.counter, cp.node_id) for cp in store.list()] == [(0, "n1"), (1, "n2"), (2, "n3"), (3, "n4")]
    assert store.load().finished


@pytest.mark.parametrize("kind", ["memory", "file"])
async def test_an_interrupted_async_run_resumes_without_rerunning_nodes(kind: str, tmp_path: Path) -> None:
    store = store_of(kind, tmp_path)
    runs: Counter[str] = Counter()
    with pytest.raises(Killed):
        await AsyncPersistentGraph(four_async_steps(runs, kill_third=True), store=store).run_async({})
    rebuilt = AsyncPersistentGraph(four_async_steps(runs), store=store)
    assert await rebuilt.resume_and_run_async() == UNINTERRUPTED
    assert runs == Counter({"n1": 1, "n2": 1, "n3": 2, "n4": 1})


async def test_async_graph_refuses_the_sync_entry_points() -> None:
    graph = AsyncPersistentGraph(four_async_steps(Counter()), store=MemoryCheckpointStore())
    graph.save_checkpoint({}, "n1")
    with pytest.raises(RuntimeError, match="resume_and_run_async"):
        graph.resume_and_run()
    with pytest.raises(RuntimeError, match="run_async"):
        graph.run({})


# -- serialisation and stores ---------------------------------------------------------------------


def test_special_types_round_trip_through_a_file(tmp_path: Path) -> None:
    graph = PersistentGraph(BaseNode[Any, Any]("only"), checkpoint_dir=tmp_path)
    shared = {
        "path": Path("/tmp/test"),
        "set_data": {1, 2, 3},
        "nested": {"inner_path": Path("relative/path"), "inner_set": {"a", "b"}},
        "list_of_paths": [Path("p1"), Path("p2")],
        "pair": (1, "two"),
        "frozen": frozenset({(1, 2)}),
        "by_number": {1: "one", (2, 3): "pair"},
        "__graphwire_type__": "a user's own key",
    }
    graph.save_checkpoint(shared, "only")
    restored, node_id = graph.resume_from_checkpoint()
    assert node_id == "only"
    assert restored == shared
    assert isinstance(restored["path"], Path)
    assert isinstance(restored["nested"]["inner_set"], set)
    assert isinstance(restored["pair"], tuple)
    json.loads((tmp_path / "latest.json").read_text())  # plain JSON on disk


def test_what_json_cannot_hold_is_refused_before_the_node_runs(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()
    graph = PersistentGraph(four_steps(runs), checkpoint_dir=tmp_path)
    with pytest.raises(TypeError, match="cannot hold a object"):
        graph.run({"handle": object()})
    assert runs == Counter()


def test_memory_store_keeps_snapshots() -> None:
    store = MemoryCheckpointStore()
    with pytest.raises(FileNotFoundError):
        store.load()
    shared: dict[str, Any] = {"items": [1]}
    ref = store.save(Checkpoint(shared, "a", 0))
    shared["items"].append(2)
    assert store.load(ref).shared == {"items": [1]}
    loaded = store.load()
    loaded.shared["items"].append(3)
    assert store.load().shared == {"items": [1]}
    store.save(Checkpoint({"done": True}, None, 1, last_action="end"))
    assert [cp.ref for cp in store.list()] == [ref]
    assert store.load().last_action == "end"
    store.clear()
    assert store.list() == []
    with pytest.raises(FileNotFoundError):
        store.load(ref)


def test_file_store_writes_whole_files_only(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "new" / "dir")
    ref = store.save(Checkpoint({"x": 1}, "a", 7))
    assert Path(ref).name.startswith("checkpoint_000007_")
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([Path(ref).name, "latest.json"])
    with pytest.raises(TypeError):
        store.save(Checkpoint({"x": object()}, "b", 8))
    assert sorted(p.name for p in store.directory.iterdir()) == sorted([Path(ref).name, "latest.json"])
    assert store.load().node_id == "a"
    assert store.load(Path(ref).name).counter == 7  # a bare name is looked up in the directory


def test_file_store_skips_files_that_are_not_checkpoints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FileCheckpointStore(tmp_path)
    store.save(Checkpoint({}, "a", 0))
    (tmp_path / "checkpoint_000001_junk.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="graphwire.graph.persistence"):
        assert [cp.node_id for cp in store.list()] == ["a"]
    assert "checkpoint_000001_junk.json" in caplog.text


def test_checkpoint_json_round_trip_and_errors() -> None:
    checkpoint = Checkpoint({"s": {1}}, "n", 3, timestamp=12.5, last_action="go")
    assert Checkpoint.from_json(checkpoint.to_json(), ref="r") == Checkpoint(
        {"s": {1}}, "n", 3, timestamp=12.5, last_action="go", ref="r"
    )
    with pytest.raises(ValueError, match="not a graphwire checkpoint"):
        Checkpoint.from_json('{"node_id": "n"}')


# -- finding nodes ------------------------------------------------------------------------------------


def test_find_node_by_id_walks_the_graph_through_cycles() -> None:
    a, b, c = BaseNode[Any, Any]("a"), BaseNode[Any, Any]("b"), BaseNode[Any, Any]("c")
    a >> b >> c
    c - "back" >> a
    graph = PersistentGraph(a)
    assert graph._find_node_by_id("a") is a
    assert graph._find_node_by_id("c") is c
    assert graph._find_node_by_id("nonexistent") is None
    assert PersistentGraph()._find_node_by_id("a") is None


def test_a_directory_written_by_kaygraph_resumes_here(tmp_path: Path) -> None:
    # The layout KayGraph 0.3 writes: numbered files, tagged Path/set/object values, and a
    # latest.json that points at the newest file. A ported app resumes its old runs.
    kaygraph_dir = tmp_path / "kaygraph"
    kaygraph_dir.mkdir()
    body = {
        "timestamp": 1700000000.0,
        "counter": 1,
        "node_id": "n3",
        "shared": {
            "count": 2,
            "where": {"__type__": "Path", "value": "/tmp/data"},
            "seen": {"__type__": "set", "value": [1, 2]},
            "client": {"__type__": "object", "__class__": "Client", "__dict__": {"host": "h"}},
        },
    }
    newest = kaygraph_dir / "checkpoint_000001.json"
    newest.write_text(json.dumps(body), encoding="utf-8")
    (kaygraph_dir / "latest.json").write_text(
        json.dumps({"latest": str(newest), "timestamp": body["timestamp"], "node_id": "n3"}), encoding="utf-8"
    )
    graph = PersistentGraph(checkpoint_dir=kaygraph_dir)
    shared, node_id = graph.resume_from_checkpoint()
    assert node_id == "n3"
    assert shared == {"count": 2, "where": Path("/tmp/data"), "seen": {1, 2}, "client": {"host": "h"}}
    assert [c["counter"] for c in graph.list_checkpoints()] == [1]
