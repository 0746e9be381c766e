"""Nodes: the prep → exec → post unit of work, KayGraph-compatible.

A node reads what it needs from the shared store in `prep`, does the work in
`exec` (the only retried step, so it should not touch the shared store), and
writes results back in `post`, whose return value is the *action* that picks the
next node (``None`` means ``"default"``).

Error handling, in order:

1. `exec` is tried ``max_retries`` times, ``wait`` seconds apart; then
   `exec_fallback` gets the last exception (by default it re-raises it).
2. Any exception from `before_prep`, `prep`, exec-after-fallback, `after_exec` or
   `post` goes to `on_error`; returning ``True`` suppresses it: the exception is
   kept on ``last_error`` and the node returns action ``None`` ("default").
3. `InputTimeout` and anything that is not an `Exception` (notably
   `asyncio.CancelledError`) skip all of the above and propagate at once: a
   cancelled run must stop now, and a timed-out human would time out again.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any, Generic, Self, TypeVar

from ._context import InputTimeout

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
    """A step of a graph: prep → exec → post, plus hooks and successors.

    `BaseNode` has no retries; `Node` adds them. Graphs are nodes too, so they can
    be nested and chained with the same operators.
    """

    def __init__(self, node_id: str | None = None) -> None:
        self.node_id: str = node_id if node_id is not None else type(self).__name__
        self.params: dict[str, Any] = {}
        self.successors: dict[str, BaseNode[Any, Any]] = {}
        self.last_error: Exception | None = None

    # -- wiring ---------------------------------------------------------------

    def set_params(self, params: dict[str, Any]) -> None:
        """Replace the node's params with a copy of ``params``."""
        self.params = dict(params)

    def next(self, node: NodeT, action: str = DEFAULT_ACTION) -> NodeT:
        """Make ``node`` the successor for ``action``; returns ``node`` for chaining.

        Overwriting an existing successor is allowed and silent: rewiring a graph is
        legitimate, and a warning would be an error under ``filterwarnings=error``.
        """
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
        """Called after `exec` (and fallback) succeeded, before `post`."""

    def on_error(self, shared: Shared, exc: Exception) -> bool:
        """Called when the node failed; return ``True`` to suppress the error."""
        return False

    # -- running ----------------------------------------------------------------

    def run(self, shared: Shared) -> Action:
        """Run this node alone (successors are not followed); return its action."""
        return self._run(shared)

    def _run(self, shared: Shared) -> Action:
        self.last_error = None
        try:
            self.before_prep(shared)
            prep_res = self.prep(shared)
            exec_res = self._exec_step(shared, prep_res)
            self.after_exec(shared, prep_res, exec_res)
            return self.post(shared, prep_res, exec_res)
        except InputTimeout:
            raise
        except Exception as exc:
            if self.on_error(shared, exc):
                self.last_error = exc
                return None
            raise

    async def _run_async(self, shared: Shared) -> Action:
        """How an async graph runs a sync node: in a worker thread, never on the event loop.

        A sync ``exec`` that sleeps or computes for seconds (or a retry ``wait``) would
        otherwise stop every other run and connection of the gateway. The thread sees the
        run's context variables (``asyncio.to_thread`` copies them); the pool is the
        loop's default executor, bounded at ``min(32, cores + 4)`` threads. A cancelled run
        stops waiting at once; the thread finishes its node in the background and its
        result is dropped.
        """
        return await asyncio.to_thread(self._run, shared)

    def _exec_step(self, shared: Shared, prep_res: PrepT) -> ExecT:
        """The "exec" phase as the lifecycle sees it; graphs orchestrate here."""
        return self._exec(prep_res)

    def _exec(self, prep_res: PrepT) -> ExecT:
        return self.exec(prep_res)

    def _copy_for_run(self) -> Self:
        """A shallow copy for one run, so per-run state never leaks between runs."""
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
    """A node whose `exec` is retried, with a fallback when all tries fail."""

    # KayGraph's argument order, so a positional ``Node(3, 0.5)`` ports unchanged.
    def __init__(self, max_retries: int = 1, wait: float = 0, node_id: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.max_retries = max_retries
        self.wait = wait
        self.cur_retry = 0

    def exec_fallback(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Called with the last error once every try of `exec` failed."""
        raise exc

    def _exec(self, prep_res: PrepT) -> ExecT:
        result: ExecT = self._exec_with_retries(prep_res)
        return result

    def _exec_with_retries(self, prep_res: Any) -> Any:
        # ``max_retries`` below 1 still means one try, as "no retries".
        attempts = max(1, self.max_retries)
        attempt = 0
        while True:
            self.cur_retry = attempt
            try:
                return self.exec(prep_res)
            except InputTimeout:
                raise
            except Exception as exc:
                if attempt + 1 >= attempts:
                    return self.exec_fallback(prep_res, exc)
            if self.wait > 0:
                time.sleep(self.wait)
            attempt += 1

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self.cur_retry = 0


class AsyncNode(Node[PrepT, ExecT]):
    """A node with ``*_async`` steps and hooks, run with ``await run_async(shared)``.

    Every async step and hook defaults to calling its sync twin, so a node may
    override either form (``on_error`` or ``on_error_async``, ``post`` or
    ``post_async``...).
    """

    async def prep_async(self, shared: Shared) -> PrepT:
        """Async `prep`; defaults to calling `prep`."""
        return self.prep(shared)

    async def exec_async(self, prep_res: PrepT) -> ExecT:
        """Async `exec`, the retried step; defaults to calling `exec`."""
        return self.exec(prep_res)

    async def exec_fallback_async(self, prep_res: PrepT, exc: Exception) -> ExecT:
        """Async `exec_fallback`; defaults to calling `exec_fallback` (re-raise)."""
        return self.exec_fallback(prep_res, exc)

    async def post_async(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> Action:
        """Async `post`; defaults to calling `post`."""
        return self.post(shared, prep_res, exec_res)

    async def before_prep_async(self, shared: Shared) -> None:
        """Async `before_prep`; defaults to calling `before_prep`."""
        self.before_prep(shared)

    async def after_exec_async(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> None:
        """Async `after_exec`; defaults to calling `after_exec`."""
        self.after_exec(shared, prep_res, exec_res)

    async def on_error_async(self, shared: Shared, exc: Exception) -> bool:
        """Async `on_error`; defaults to calling `on_error`."""
        return self.on_error(shared, exc)

    def run(self, shared: Shared) -> Action:
        raise RuntimeError(f"{self.node_id} is an async node: use `await node.run_async(shared)`")

    def _run(self, shared: Shared) -> Action:
        raise RuntimeError(
            f"{self.node_id} is an async node: run it with `await node.run_async(shared)` or inside an AsyncGraph"
        )

    async def run_async(self, shared: Shared) -> Action:
        """Run this node alone (successors are not followed); return its action."""
        return await self._run_async(shared)

    async def _run_async(self, shared: Shared) -> Action:
        self.last_error = None
        try:
            await self.before_prep_async(shared)
            prep_res = await self.prep_async(shared)
            exec_res = await self._exec_step_async(shared, prep_res)
            await self.after_exec_async(shared, prep_res, exec_res)
            return await self.post_async(shared, prep_res, exec_res)
        except InputTimeout:
            raise
        except Exception as exc:
            if await self.on_error_async(shared, exc):
                self.last_error = exc
                return None
            raise

    async def _exec_step_async(self, shared: Shared, prep_res: PrepT) -> ExecT:
        """The async "exec" phase as the lifecycle sees it; graphs orchestrate here."""
        return await self._exec_async(prep_res)

    async def _exec_async(self, prep_res: PrepT) -> ExecT:
        result: ExecT = await self._exec_with_retries_async(prep_res)
        return result

    async def _exec_with_retries_async(self, prep_res: Any) -> Any:
        attempts = max(1, self.max_retries)
        attempt = 0
        while True:
            self.cur_retry = attempt
            try:
                return await self.exec_async(prep_res)
            except InputTimeout:
                raise
            except Exception as exc:
                if attempt + 1 >= attempts:
                    return await self.exec_fallback_async(prep_res, exc)
            if self.wait > 0:
                await asyncio.sleep(self.wait)
            attempt += 1
