"""Checkpointed graphs: runs that stop anywhere and resume where they stopped (KayGraph's ``persistence``).

Before each node runs, `PersistentGraph` saves a `Checkpoint`: a snapshot of the shared
store, the id of the node about to run, a sequence number (``counter``) and the time.
Resuming from a checkpoint runs that node from its start, then whatever follows; the
nodes before it never run again. A node that failed (or was interrupted) half-way is
therefore run again whole, so a node with outside effects should be safe to repeat.

Nodes are found again by ``node_id``: a graph rebuilt in another process finds them only
if their ids are explicit (the default id contains the object's address).

Where checkpoints go is a `CheckpointStore`: `FileCheckpointStore` keeps the layout of
KayGraph's tests (a ``checkpoint_<counter>_<time>.json`` file per checkpoint, plus
``latest.json``), `MemoryCheckpointStore` keeps them in the process, and any object with
the same four methods will do (the seam for durable gateway runs). The shared store is
saved as JSON: `Path`, `set`, `frozenset`, `tuple` and dicts with non-string keys
round-trip; anything else JSON cannot hold is refused with a `TypeError` when the
checkpoint is saved.

Beyond KayGraph: a run that ends saves one more checkpoint, with ``node_id=None``. It only
becomes the latest (it is not listed and has no numbered file), so resuming a finished run
runs nothing instead of running its last node again.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path, PurePath
from typing import Any, Protocol

from ._config import Config
from ._graph import AsyncGraph, Graph
from ._node import Action, BaseNode, Shared

__all__ = [
    "AsyncPersistentGraph",
    "Checkpoint",
    "CheckpointStore",
    "FileCheckpointStore",
    "MemoryCheckpointStore",
    "PersistentGraph",
    "run_checkpointed",
]

_log = logging.getLogger("graphwire.graph.persistence")

LATEST = "latest.json"
_TAG = "__graphwire_type__"
_FORMAT = 1


# -- JSON with a few more types ---------------------------------------------------------


_COLLECTIONS: dict[str, type[Any]] = {"tuple": tuple, "set": set, "frozenset": frozenset}


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        if _TAG not in value and all(isinstance(key, str) for key in value):
            return {key: _encode(item) for key, item in value.items()}
        return {_TAG: "dict", "items": [[_encode(key), _encode(item)] for key, item in value.items()]}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    for name, kind in _COLLECTIONS.items():
        if isinstance(value, kind):  # a subclass (a namedtuple...) comes back as its base
            return {_TAG: name, "items": [_encode(item) for item in value]}
    if isinstance(value, PurePath):
        return {_TAG: "path", "value": str(value)}
    raise TypeError(
        f"a checkpoint cannot hold a {type(value).__name__}: keep the shared store to JSON values,"
        " paths, sets and tuples (or keep an id in it and the object elsewhere)"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_TAG)
    if kind is None:
        if "__type__" in value:
            return _decode_kaygraph(value)
        return {key: _decode(item) for key, item in value.items()}
    if kind == "path":
        return Path(value["value"])
    items = [_decode(item) for item in value["items"]]
    if kind == "dict":
        return {key: item for key, item in items}
    return _COLLECTIONS[kind](items)


def _decode_kaygraph(value: dict[str, Any]) -> Any:
    """A value tagged the way KayGraph's checkpoints tag them, so its files resume here too.

    KayGraph saves a ``Path`` and a ``set`` with a ``__type__`` tag, and any other object as
    its ``__dict__`` (which it resumes as that plain dict, and so do we).
    """
    kind = value["__type__"]
    if kind == "Path":
        return Path(value["value"])
    if kind == "set":
        return set(_decode(value["value"]))
    if kind == "object":
        return _decode(value.get("__dict__", {}))
    return {key: _decode(item) for key, item in value.items()}


# -- checkpoints and stores ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A run's state between two nodes.

    ``node_id`` is the node that runs next (``None``: the run had finished), ``counter``
    the checkpoint's sequence number in its graph, ``last_action`` the action that led to
    ``node_id`` (or ended the run). ``ref`` is where a store keeps it, set by the store.
    """

    shared: Shared
    node_id: str | None
    counter: int
    timestamp: float = dataclasses.field(default_factory=time.time)
    last_action: str | None = None
    ref: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the run had ended (nothing left to run)."""
        return self.node_id is None

    def to_json(self) -> str:
        """The checkpoint as JSON text (without ``ref``); `TypeError` for what JSON cannot hold."""
        body = {
            "format": _FORMAT,
            "counter": self.counter,
            "node_id": self.node_id,
            "last_action": self.last_action,
            "timestamp": self.timestamp,
            "shared": _encode(self.shared),
        }
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str, ref: str | None = None) -> Checkpoint:
        """The checkpoint that `to_json` wrote; `ValueError` for anything else."""
        try:
            body = json.loads(text)
            return cls(
                shared=_decode(body["shared"]),
                node_id=body["node_id"],
                counter=int(body["counter"]),
                timestamp=float(body["timestamp"]),
                last_action=body.get("last_action"),
                ref=ref,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a graphwire checkpoint ({ref or 'text'}): {exc}") from exc


class CheckpointStore(Protocol):
    """Where a `PersistentGraph` keeps its checkpoints.

    ``save`` stores a checkpoint and returns its ref; a finished one (``node_id=None``)
    only replaces the latest and is not listed. ``load`` returns the checkpoint at ``ref``,
    or the latest, and raises `FileNotFoundError` when there is none. ``list`` returns the
    listed checkpoints oldest first, each with its ref; ``clear`` forgets them all.
    """

    def save(self, checkpoint: Checkpoint) -> str: ...

    def load(self, ref: str | None = None) -> Checkpoint: ...

    def list(self) -> Sequence[Checkpoint]: ...

    def clear(self) -> None: ...


class MemoryCheckpointStore:
    """Checkpoints kept in this process, as the same JSON a file would hold.

    Storing the JSON (not the objects) makes a checkpoint a true snapshot and refuses
    exactly what the other stores refuse.
    """

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}
        self._listed: list[str] = []
        self._latest: str | None = None
        self._refs = itertools.count()  # never reused, even after clear()
        self._lock = threading.Lock()

    def save(self, checkpoint: Checkpoint) -> str:
        text = checkpoint.to_json()
        with self._lock:
            ref = f"memory:{next(self._refs)}"
            self._texts[ref] = text
            if not checkpoint.finished:
                self._listed.append(ref)
            self._latest = ref
        return ref

    def load(self, ref: str | None = None) -> Checkpoint:
        with self._lock:
            key = self._latest if ref is None else ref
            text = self._texts.get(key) if key is not None else None
        if key is None or text is None:
            raise FileNotFoundError(f"no checkpoint {ref!r}" if ref is not None else "no checkpoint saved yet")
        return Checkpoint.from_json(text, ref=key)

    def list(self) -> Sequence[Checkpoint]:
        with self._lock:
            saved = [(ref, self._texts[ref]) for ref in self._listed]
        return [Checkpoint.from_json(text, ref=ref) for ref, text in saved]

    def clear(self) -> None:
        with self._lock:
            self._texts.clear()
            self._listed.clear()
            self._latest = None


class FileCheckpointStore:
    """Checkpoints as JSON files in ``directory`` (created if needed), laid out as in KayGraph.

    Each listed checkpoint is ``checkpoint_<counter, 6 digits>_<time in ns>.json`` (names
    sort in save order, and a second graph over the same directory never overwrites the
    first one's files); ``latest.json`` is a copy of the latest. A ref is a file's path (a
    bare file name is looked up in ``directory``). A directory KayGraph wrote
    (``checkpoint_<counter>.json`` files, ``latest.json`` pointing at one) loads too.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def save(self, checkpoint: Checkpoint) -> str:
        text = checkpoint.to_json()
        path = self.directory / LATEST
        if not checkpoint.finished:
            path = self.directory / f"checkpoint_{checkpoint.counter:06d}_{time.time_ns()}.json"
            self._write(path, text)
        self._write(self.directory / LATEST, text)
        return str(path)

    def load(self, ref: str | os.PathLike[str] | None = None) -> Checkpoint:
        path = Path(ref) if ref is not None else self.directory / LATEST
        if not path.is_absolute() and not path.exists():
            path = self.directory / path  # a bare file name, as in this directory's listing
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint file at {path}")
        text = path.read_text(encoding="utf-8")
        pointer = _kaygraph_latest(text)
        if pointer is not None:  # KayGraph's latest.json names the checkpoint file
            return self.load(pointer)
        return Checkpoint.from_json(text, ref=str(path))

    def list(self) -> Sequence[Checkpoint]:
        found = []
        for path in sorted(self.directory.glob("checkpoint_*.json")):
            try:
                found.append(self.load(path))
            except (OSError, ValueError) as exc:  # cleared meanwhile, or not ours
                _log.warning("skipping %s: %s", path, exc)
        return found

    def clear(self) -> None:
        for pattern in ("checkpoint_*.json", LATEST, ".*.tmp"):
            for path in self.directory.glob(pattern):
                path.unlink(missing_ok=True)

    def _write(self, path: Path, text: str) -> None:
        # Write aside, then rename: a process killed mid-write leaves the previous file
        # whole, never half a checkpoint. (Surviving power loss would need an fsync per
        # node, which this store does not pay.)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


# -- graphs ---------------------------------------------------------------------------------


class _Counter:
    """A graph's next checkpoint number, shared with the copies a parent graph runs."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            self.value += 1
            return self.value - 1

    def advance_past(self, counter: int) -> None:
        with self._lock:
            self.value = max(self.value, counter + 1)


def _kaygraph_latest(text: str) -> str | None:
    """The file a KayGraph ``latest.json`` points at (``{"latest": path, ...}``), else ``None``."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    latest = body.get("latest") if isinstance(body, dict) and "shared" not in body else None
    return latest if isinstance(latest, str) else None


def _as_store(target: str | os.PathLike[str] | CheckpointStore) -> CheckpointStore:
    if isinstance(target, str | os.PathLike):
        return FileCheckpointStore(target)
    return target


class PersistentGraph(Graph):
    """A `Graph` that saves a `Checkpoint` before each node and can resume from one.

    Give it a directory (``checkpoint_dir``: a `FileCheckpointStore`) or any ``store``;
    with neither, it runs as a plain graph until `enable_checkpointing`. As in KayGraph,
    `run` returns the shared store (nested in another graph, it still passes its last
    action on).
    """

    def __init__(
        self,
        start: BaseNode[Any, Any] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        config: Config | None = None,
        *,
        store: CheckpointStore | None = None,
        node_id: str | None = None,
    ) -> None:
        super().__init__(start, config, node_id=node_id)
        if checkpoint_dir is not None and store is not None:
            raise ValueError("give a PersistentGraph a checkpoint_dir or a store, not both")
        target = store if store is not None else checkpoint_dir
        self.store: CheckpointStore | None = _as_store(target) if target is not None else None
        self.checkpointing = self.store is not None
        self._counter = _Counter()

    @property
    def checkpoint_dir(self) -> Path | None:
        """The directory of a `FileCheckpointStore`, else ``None``."""
        return self.store.directory if isinstance(self.store, FileCheckpointStore) else None

    @property
    def checkpoint_counter(self) -> int:
        """The number the next checkpoint gets."""
        return self._counter.value

    def enable_checkpointing(self, checkpoint_dir: str | os.PathLike[str] | CheckpointStore) -> None:
        """Save checkpoints from now on, in this directory (or store)."""
        self.store = _as_store(checkpoint_dir)
        self.checkpointing = True

    def disable_checkpointing(self) -> None:
        """Stop saving checkpoints; the saved ones can still be listed and resumed."""
        self.checkpointing = False

    def save_checkpoint(self, shared: Shared, node_id: str | None, last_action: Action = None) -> str:
        """Save ``shared`` with ``node_id`` as the node to run next; returns the checkpoint's ref."""
        store = self._require_store()
        checkpoint = Checkpoint(shared, node_id, self._counter.take(), last_action=last_action)
        return store.save(checkpoint)

    def resume_from_checkpoint(self, path: str | None = None) -> tuple[Shared, str | None]:
        """``(shared, node_id)`` of the checkpoint at ``path``, or of the latest one.

        ``node_id`` is ``None`` when the run had finished. Later checkpoints of this graph
        are numbered after this one.
        """
        checkpoint = self._load(path)
        return checkpoint.shared, checkpoint.node_id

    def resume_and_run(self, path: str | None = None) -> Shared:
        """Finish the run from the checkpoint at ``path`` (or the latest); returns its shared store."""
        checkpoint = self._load(path)
        node = self._resume_point(checkpoint)
        if node is None:
            return checkpoint.shared
        prep_res = self.prep(checkpoint.shared)
        action = self._orch_from(self._step(node), checkpoint.shared, None, checkpoint.last_action)
        self.post(checkpoint.shared, prep_res, action)
        return checkpoint.shared

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """The saved checkpoints, oldest first: ``file`` (its ref), ``counter``, ``node_id``, ``timestamp``."""
        if self.store is None:
            return []
        return [
            {"file": cp.ref, "counter": cp.counter, "node_id": cp.node_id, "timestamp": cp.timestamp}
            for cp in self.store.list()
        ]

    def clear_checkpoints(self) -> None:
        """Delete every saved checkpoint."""
        if self.store is not None:
            self.store.clear()

    # The KayGraph API: `run` gives the shared store back; `_run` (how a parent graph runs
    # this one) still returns the action, so a PersistentGraph nests like any graph.
    def run(self, shared: Shared) -> Shared:  # type: ignore[override]
        """Run the graph, saving checkpoints; returns ``shared``."""
        super().run(shared)
        return shared

    def _find_node_by_id(self, node_id: str) -> BaseNode[Any, Any] | None:
        """The first node reachable from the start node with this id, or ``None``."""
        found = self._nodes_with_id(node_id)
        return found[0] if found else None

    # -- internals ------------------------------------------------------------------------

    def _orch(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        return self._orch_from(self._first_step(), shared, params, None)

    def _orch_from(
        self, node: BaseNode[Any, Any] | None, shared: Shared, params: dict[str, Any] | None, last_action: Action
    ) -> Action:
        # `Graph._orch` with a checkpoint before each step, and a start anywhere.
        node_params = params or dict(self.params)
        while node is not None:
            self._checkpoint(shared, node.node_id, last_action)
            node.set_params(node_params)
            last_action = node._run(shared)
            node = self._step(self.get_next_node(node, last_action))
        self._checkpoint(shared, None, last_action)
        return last_action

    def _checkpoint(self, shared: Shared, node_id: str | None, last_action: Action) -> None:
        if self.checkpointing and self.store is not None:
            self.save_checkpoint(shared, node_id, last_action)

    def _require_store(self) -> CheckpointStore:
        if self.store is None:
            raise ValueError(
                f"{self.node_id}: No checkpoint directory or store; give checkpoint_dir= or store=,"
                " or call enable_checkpointing()"
            )
        return self.store

    def _load(self, path: str | None) -> Checkpoint:
        checkpoint = self._require_store().load(path)
        self._counter.advance_past(checkpoint.counter)
        return checkpoint

    def _nodes_with_id(self, node_id: str) -> list[BaseNode[Any, Any]]:
        return _nodes_with_id(self, node_id)

    def _resume_point(self, checkpoint: Checkpoint) -> BaseNode[Any, Any] | None:
        return _resume_point(self, checkpoint)


def _nodes_with_id(graph: Graph, node_id: str) -> list[BaseNode[Any, Any]]:
    """Every node reachable from ``graph``'s start with this id, breadth first, through cycles."""
    found: list[BaseNode[Any, Any]] = []
    seen: set[int] = set()
    queue = [graph.start_node] if graph.start_node is not None else []
    while queue:
        node = queue.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.node_id == node_id:
            found.append(node)
        queue.extend(node.successors.values())
    return found


def _resume_point(graph: Graph, checkpoint: Checkpoint) -> BaseNode[Any, Any] | None:
    if checkpoint.node_id is None:
        return None
    found = _nodes_with_id(graph, checkpoint.node_id)
    if len(found) != 1:
        problem = "no node" if not found else f"{len(found)} nodes"
        raise ValueError(
            f"cannot resume from {checkpoint.ref}: {problem} with id {checkpoint.node_id!r} in {graph.node_id}"
            " (a rebuilt graph finds its nodes by id: give each one a unique, explicit node_id)"
        )
    return found[0]


async def run_checkpointed(
    graph: AsyncGraph,
    shared: Shared,
    save: Callable[[Checkpoint], Awaitable[None]],
    resume: Checkpoint | None = None,
) -> Any:
    """Run any ``AsyncGraph`` as an `AsyncPersistentGraph` would, with ``save`` awaited before
    each of its nodes and after its last; from ``resume`` (its next node, its action) if given.

    For a run owner that keeps checkpoints somewhere asynchronous (the gateway, in Redis):
    awaiting ``save`` makes a checkpoint durable before the node after it starts, so a
    node that finished never runs again. Only the top graph's node boundaries count: a
    nested graph is one node here. Returns what ``graph.run_async`` would.
    """
    counter = itertools.count(resume.counter + 1 if resume is not None else 0)
    prep_res = await graph.prep_async(shared)
    node = graph._first_step() if resume is None else graph._step(_resume_point(graph, resume))
    last_action: Action = resume.last_action if resume is not None else None
    params = dict(graph.params)
    while node is not None:
        await save(Checkpoint(shared, node.node_id, next(counter), last_action=last_action))
        node.set_params(params)
        last_action = await graph._run_step_async(node, shared)
        node = graph._step(graph.get_next_node(node, last_action))
    await save(Checkpoint(shared, None, next(counter), last_action=last_action))
    return await graph.post_async(shared, prep_res, last_action)


class AsyncPersistentGraph(AsyncGraph, PersistentGraph):
    """A `PersistentGraph` for async nodes: ``await graph.run_async(shared)`` returns ``shared``.

    Node status is reported as in any `AsyncGraph`. The store is called synchronously, on
    the event loop: a store that blocks long should do its own I/O elsewhere.
    """

    async def run_async(self, shared: Shared) -> Shared:  # type: ignore[override]
        """Run the graph, saving checkpoints; returns ``shared``."""
        await super().run_async(shared)
        return shared

    def resume_and_run(self, path: str | None = None) -> Shared:
        """Not for an async graph: use `resume_and_run_async`."""
        raise RuntimeError(f"{self.node_id} is an AsyncPersistentGraph: use `await graph.resume_and_run_async()`")

    async def resume_and_run_async(self, path: str | None = None) -> Shared:
        """Finish the run from the checkpoint at ``path`` (or the latest); returns its shared store."""
        checkpoint = self._load(path)
        node = self._resume_point(checkpoint)
        if node is None:
            return checkpoint.shared
        prep_res = await self.prep_async(checkpoint.shared)
        action = await self._orch_from_async(self._step(node), checkpoint.shared, None, checkpoint.last_action)
        await self.post_async(checkpoint.shared, prep_res, action)
        return checkpoint.shared

    async def _orch_async(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        return await self._orch_from_async(self._first_step(), shared, params, None)

    async def _orch_from_async(
        self, node: BaseNode[Any, Any] | None, shared: Shared, params: dict[str, Any] | None, last_action: Action
    ) -> Action:
        # `AsyncGraph._orch_async` with a checkpoint before each step, and a start anywhere.
        node_params = params or dict(self.params)
        while node is not None:
            self._checkpoint(shared, node.node_id, last_action)
            node.set_params(node_params)
            last_action = await self._run_step_async(node, shared)
            node = self._step(self.get_next_node(node, last_action))
        self._checkpoint(shared, None, last_action)
        return last_action
