"""Nodes: the prep → exec → post unit of work, with KayGraph's semantics.

A node reads what it needs from the shared store in `prep`, does the work in `exec` (the
only retried step, so it should not touch the shared store), and writes results back in
`post`, whose return value is the *action* that picks the next node (``None`` means
``"default"``).

Sync nodes (`BaseNode`, `Node`):

1. `before_prep`, `prep`, `exec` (tried ``max_retries`` times, ``wait`` seconds apart,
   then `exec_fallback` with the last exception, which re-raises by default),
   `after_exec`, `post`.
2. Any `Exception` on the way goes to `on_error`; returning ``True`` suppresses it: the
   node returns action ``None`` and keeps the exception in ``last_error``.

Async nodes (`AsyncNode`) run `prep_async`, `exec_async` (retried, then
`exec_fallback_async`) and `post_async`, exactly as KayGraph does: the sync steps and the
sync hooks are *not* called, and the ``*_async`` steps do not fall back to them. The
gateway adds three async hooks of its own (`before_prep_async`, `after_exec_async`,
`on_error_async`) that do nothing unless overridden.

`InputTimeout` and anything that is not an `Exception` (notably
`asyncio.CancelledError`) skip retries, fallbacks and error hooks: a cancelled run must
stop now, and a timed-out human would time out again.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import warnings
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from ._config import Config, as_config
from ._context import InputTimeout, in_node

__all__ = ["Action", "AsyncNode", "BaseNode", "Node", "Shared"]

Shared = dict[str, Any]
"""The shared store: one plain dict that every node of a run reads and writes."""

Action = str | None
"""What `post` returns to choose the next node; ``None`` means ``"default"``."""

DEFAULT_ACTION = "default"

PrepT = TypeVar("PrepT")
ExecT = TypeVar("ExecT")
NodeT = TypeVar("NodeT", bound="BaseNode[Any, Any]")


class BaseNode(Generic[PrepT, ExecT]):
    """A step of a graph: prep → exec → post, plus hooks, context and successors.

    `BaseNode` has no retries; `Node` adds them. Graphs are nodes too, so they nest and
    chain with the same operators.
    """

    def __init__(self, node_id: str | None = None, config: Config | None = None) -> None:
        # Unique by default (the class name plus the object's id), as in KayGraph: two
        # instances of one class in a graph must not share an id in logs and checkpoints.
        self.node_id: str = node_id or f"{type(self).__name__}_{id(self)}"
        self.params: dict[str, Any] = {}
        self.config: Config = as_config(config)
        self.successors: dict[str, BaseNode[Any, Any]] = {}
        self.logger = logging.getLogger(type(self).__name__)
        self._execution_context: dict[str, Any] = {}
        self.last_error: Exception | None = None

    # -- wiring ---------------------------------------------------------------

    def set_params(self, params: dict[str, Any]) -> None:
        """Replace the node's params with a copy of ``params`` (a dict)."""
        if not isinstance(params, dict):
            # KayGraph's wording: code that ported from it may match on it.
            raise TypeError(f"Parameters must be a dictionary, got {type(params)}")
        self.params = dict(params)

    def next(self, node: NodeT, action: str = DEFAULT_ACTION) -> NodeT:
        """Make ``node`` the successor for ``action``; returns ``node`` for chaining.

        Replacing an existing successor warns (`UserWarning`): wiring the same action
        twice is almost always a typo in a graph definition.
        """
        previous = self.successors.get(action)
        if previous is not None:
            warnings.warn(
                f"Node {self.node_id}: Overwriting successor for action '{action}'."
                f" Previous: {type(previous).__name__}, New: {type(node).__name__}",
                UserWarning,
                stacklevel=2,
            )
        self.successors[action] = node
        return node

    def __rshift__(self, other: NodeT) -> NodeT:
        """``a >> b``: ``b`` follows ``a`` on the default action."""
        return self.next(other)

    def __sub__(self, action: str) -> _Transition:
        """``a - "approve" >> b``: ``b`` follows ``a`` on action ``"approve"``."""
        if not isinstance(action, str):
            raise TypeError(f"an action must be a str, not {type(action).__name__}")
        return _Transition(self, action)

    # -- execution context and resources --------------------------------------

    def get_context(self, key: str, default: Any = None) -> Any:
        """A value of this node's execution context (``start_time``, ``last_execution_time``...)."""
        return self._execution_context.get(key, default)

    def set_context(self, key: str, value: Any) -> None:
        """Set a value of this node's execution context."""
        self._execution_context[key] = value

    def setup_resources(self) -> None:
        """Called on ``with node:`` entry; open connections, files... here."""

    def cleanup_resources(self) -> None:
        """Called on ``with node:`` exit, even after an error; close them here."""

    def __enter__(self) -> Self:
        self.setup_resources()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self.cleanup_resources()
        return False

    # -- user steps -------------------------------------------------------------

    def prep(self, shared: Shared) -> PrepT:
        """Read what `exec` needs from the shared store."""
        return None  # type: ignore[return-value]

    def exec(self, prep_res: PrepT) -> ExecT:
        """Do the work; may be retried, so stay away from the shared store."""
        return None  # type: ignore[return-value]

    def post(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> Action:
        """Write results to the shared store and return the next action."""
        return None

    # -- hooks ------------------------------------------------------------------

    def before_prep(self, shared: Shared) -> None:
        """Called before `prep`."""

    def after_exec(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> None:
        """Called after `exec` (and its fallback) succeeded, before `post`."""

    def on_error(self, shared: Shared, error: Exception) -> bool:
        """Called when the node failed; return ``True`` to suppress the error."""
        return False

    # -- running ----------------------------------------------------------------

    def run(self, shared: Shared) -> Action:
        """Run this node alone and return its action; successors are *not* followed.

        Warns (`UserWarning`) when the node has successors: to follow them, run a `Graph`.
        """
        if self.successors:
            # The warnings' texts are KayGraph's, so code that filters or matches them ports.
            warnings.warn(
                f"Node {self.node_id}: Has {len(self.successors)} successors but won't execute them."
                " Use Graph for graph execution.",
                UserWarning,
                stacklevel=2,
            )
        return self._run(shared)

    def _run(self, shared: Shared) -> Action:
        with in_node(self.node_id):
            self.last_error = None
            started = time.time()
            self.set_context("start_time", started)
            self.logger.debug("node %s: starting", self.node_id)
            try:
                self.before_prep(shared)
                prep_res = self.prep(shared)
                exec_res = self._exec(prep_res)
                self.after_exec(shared, prep_res, exec_res)
                action = self.post(shared, prep_res, exec_res)
            except InputTimeout:
                raise
            except Exception as exc:
                self.set_context("last_execution_time", time.time() - started)
                self.logger.debug("node %s: failed: %s", self.node_id, exc)
                if self.on_error(shared, exc):
                    self.last_error = exc
                    return None
                raise
            self.set_context("last_execution_time", time.time() - started)
            self.logger.debug("node %s: done with action %r", self.node_id, action)
            return action

    async def _run_async(self, shared: Shared) -> Action:
        """How an async graph runs a sync node: in a worker thread, never on the event loop.

        A sync ``exec`` that sleeps or computes for seconds (or a retry ``wait``) would
        otherwise stop every other run and connection of the gateway. The thread sees the
        run's context variables (``asyncio.to_thread`` copies them); the pool is the loop's
        default executor. A cancelled run stops waiting at once; the thread finishes its
        node in the background and its result is dropped.
        """
        return await asyncio.to_thread(self._run, shared)

    def _exec(self, prep_res: PrepT) -> ExecT:
        return self.exec(prep_res)

    def _copy_for_run(self) -> Self:
        """The shallow copy a graph runs (KayGraph's ``copy.copy``), with gateway state fresh.

        Shallow, as in KayGraph: mutable attributes (``successors``, a `MetricsNode`'s
        ``metrics``, the execution context) stay shared with the graph's node, so a node's
        stats read after a run count the runs of its copies.
        """
        clone = copy.copy(self)
        clone._reset_run_state()
        return clone

    def _reset_run_state(self) -> None:
        self.last_error = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.node_id!r}>"


class _Transition:
    """The half-built edge of ``a - "action" >> b``."""

    __slots__ = ("action", "source")

    def __init__(self, source: BaseNode[Any, Any], action: str) -> None:
        self.source = source
        self.action = action

    def __rshift__(self, target: NodeT) -> NodeT:
        return self.source.next(target, self.action)


class Node(BaseNode[PrepT, ExecT]):
    """A node whose `exec` is tried up to ``max_retries`` times, then `exec_fallback`."""

    # KayGraph's argument order, so a positional ``Node(3, 0.5)`` ports unchanged.
    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        node_id: str | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(node_id=node_id, config=config)
        self.max_retries = max_retries
        self.wait = wait
        self.cur_retry = 0

    def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Called with the last error once every try of `exec` failed; re-raises by default."""
        raise exc

    def _exec(self, prep_res: PrepT) -> ExecT:
        result: ExecT = self._exec_with_retries(prep_res)
        return result

    def _exec_with_retries(self, prep_res: Any) -> Any:
        for attempt in range(self.max_retries):
            self.cur_retry = attempt
            try:
                return self.exec(prep_res)
            except InputTimeout:
                raise
            except Exception as exc:
                self.logger.debug("node %s: try %d of %d failed: %s", self.node_id, attempt + 1, self.max_retries, exc)
                if attempt == self.max_retries - 1:
                    return self.exec_fallback(prep_res, exc)
                if self.wait > 0:
                    time.sleep(self.wait)
        raise _no_tries(self)

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self.cur_retry = 0


def _no_tries(node: Node[Any, Any]) -> RuntimeError:
    # KayGraph fails the same way (a RuntimeError) when max_retries < 1; ours says why.
    return RuntimeError(
        f"node {node.node_id}: max_retries is {node.max_retries}, so exec was never tried"
        " (max_retries counts tries: 1 means no retry)"
    )


class AsyncNode(Node[PrepT, ExecT]):
    """A node with async steps, run with ``await node.run_async(shared)`` or in an `AsyncGraph`."""

    async def prep_async(self, shared: Shared) -> PrepT:
        """Read what `exec_async` needs from the shared store."""
        return None  # type: ignore[return-value]

    async def exec_async(self, prep_res: PrepT) -> ExecT:
        """Do the work; retried like `exec`."""
        return None  # type: ignore[return-value]

    async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Called with the last error once every try failed; re-raises by default."""
        raise exc

    async def post_async(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> Action:
        """Write results to the shared store and return the next action."""
        return None

    # Gateway additions, not in KayGraph: do nothing unless overridden.

    async def before_prep_async(self, shared: Shared) -> None:
        """Called before `prep_async` (a graphwire addition)."""

    async def after_exec_async(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> None:
        """Called after `exec_async` succeeded, before `post_async` (a graphwire addition)."""

    async def on_error_async(self, shared: Shared, error: Exception) -> bool:
        """Called when the node failed; ``True`` suppresses the error (a graphwire addition)."""
        return False

    def _run(self, shared: Shared) -> Action:
        raise RuntimeError(
            f"Use run_async for AsyncNode: {self.node_id} runs with `await node.run_async(shared)`"
            " or inside an AsyncGraph"
        )

    async def run_async(self, shared: Shared) -> Action:
        """Run this node alone and return its action; successors are *not* followed (warns)."""
        if self.successors:
            warnings.warn("Node won't run successors. Use AsyncGraph.", UserWarning, stacklevel=2)
        return await self._run_async(shared)

    async def _run_async(self, shared: Shared) -> Action:
        with in_node(self.node_id):
            self.last_error = None
            self.logger.debug("node %s: starting", self.node_id)
            try:
                await self.before_prep_async(shared)
                prep_res = await self.prep_async(shared)
                exec_res = await self._exec_async(prep_res)
                await self.after_exec_async(shared, prep_res, exec_res)
                action = await self.post_async(shared, prep_res, exec_res)
            except InputTimeout:
                raise
            except Exception as exc:
                if await self.on_error_async(shared, exc):
                    self.last_error = exc
                    return None
                raise
            self.logger.debug("node %s: done with action %r", self.node_id, action)
            return action

    async def _exec_async(self, prep_res: PrepT) -> ExecT:
        result: ExecT = await self._exec_with_retries_async(prep_res)
        return result

    async def _exec_with_retries_async(self, prep_res: Any) -> Any:
        for attempt in range(self.max_retries):
            self.cur_retry = attempt
            try:
                return await self.exec_async(prep_res)
            except InputTimeout:
                raise
            except Exception as exc:
                self.logger.debug("node %s: try %d of %d failed: %s", self.node_id, attempt + 1, self.max_retries, exc)
                if attempt == self.max_retries - 1:
                    return await self.exec_fallback_async(prep_res, exc)
                if self.wait > 0:
                    await asyncio.sleep(self.wait)
        raise _no_tries(self)
