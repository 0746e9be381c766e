"""Graphs: follow actions from node to node, with KayGraph's semantics.

A graph is a node: `run` calls its `prep`, orchestrates from `start_node`, and returns
`post(shared, prep_res, last_action)`, which by default is the last node's action, so a
graph nested in another graph picks the outer successor with its last action. A graph's
own hooks (`before_prep`, `after_exec`, `on_error`) are not called, as in KayGraph.

Each step runs on a shallow copy of the node (``copy.copy``), so the graph's own node
objects keep their params. Every node of a run gets the *graph's* params (they replace
the node's own, as KayGraph's ``set_params`` does), and the graph's `Config` when the
node has an empty one.

An action with no successor ends the graph; when the node has successors for other
actions, that is usually a typo, so it warns (`UserWarning`) and logs.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Iterable
from typing import Any

from ._config import Config
from ._context import run_context
from ._node import DEFAULT_ACTION, Action, AsyncNode, BaseNode, Shared

__all__ = ["AsyncBatchGraph", "AsyncGraph", "AsyncParallelBatchGraph", "BatchGraph", "Graph"]

_log = logging.getLogger("graphwire.graph")

NODE_STATUS = "node_status"
"""The `RunContext.emit` update type for node status transitions."""


class Graph(BaseNode[Any, Any]):
    """Runs nodes from `start_node`, following each node's action, until no successor."""

    def __init__(
        self,
        start: BaseNode[Any, Any] | None = None,
        config: Config | None = None,
        *,
        node_id: str | None = None,
    ) -> None:
        super().__init__(node_id=node_id, config=config)
        self.start_node = start

    def start(self, start: BaseNode[Any, Any]) -> BaseNode[Any, Any]:
        """Set the start node; returns it so ``g.start(a) >> b`` chains."""
        self.start_node = start
        return start

    def get_next_node(self, current: BaseNode[Any, Any], action: Action) -> BaseNode[Any, Any] | None:
        """The successor of ``current`` for ``action``; ``None`` ends the graph."""
        successor = current.successors.get(action or DEFAULT_ACTION)
        if successor is None and current.successors:
            actions = list(current.successors)
            # KayGraph's text (its tests match it), ``None`` shown as 'None'.
            warnings.warn(f"Graph ends: '{action}' not found in {actions}", UserWarning, stacklevel=2)
            self.logger.warning(
                "graph %s ends: node %s returned action %r, its successors are for %s",
                self.node_id,
                current.node_id,
                action,
                actions,
            )
        return successor

    def post(self, shared: Shared, prep_res: Any, exec_res: Any) -> Any:
        """By default a graph's action is the last action of its last node."""
        return exec_res

    def _step(self, node: BaseNode[Any, Any] | None) -> BaseNode[Any, Any] | None:
        """The copy of ``node`` that runs next, with the graph's config when it has none."""
        if node is None:
            return None
        clone = node._copy_for_run()
        if self.config and not clone.config:
            clone.config = self.config
        return clone

    def _first_step(self) -> BaseNode[Any, Any] | None:
        if self.start_node is None:
            self.logger.warning("graph %s has no start node: nothing runs", self.node_id)
        return self._step(self.start_node)

    def _orch(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        node = self._first_step()
        node_params = params or dict(self.params)
        last_action: Action = None
        while node is not None:
            node.set_params(node_params)
            last_action = node._run(shared)
            node = self._step(self.get_next_node(node, last_action))
        return last_action

    def _run(self, shared: Shared) -> Any:
        prep_res = self.prep(shared)
        last_action = self._orch(shared)
        return self.post(shared, prep_res, last_action)


def _param_sets(prep_res: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return list(prep_res or [])


class BatchGraph(Graph):
    """Runs the whole graph once per params dict returned by `prep` (merged over its own)."""

    def _run(self, shared: Shared) -> Any:
        param_sets = _param_sets(self.prep(shared))
        for item in param_sets:
            self._orch(shared, {**self.params, **item})
        return self.post(shared, param_sets, None)


class AsyncGraph(Graph, AsyncNode[Any, Any]):
    """Runs sync and async nodes; run it with ``await graph.run_async(shared)``.

    Sync nodes run in a worker thread (see `BaseNode._run_async`). When a `RunContext`
    is set, each node's status transitions are emitted as
    ``ctx.emit(node_id, "node_status", {"status": ...})``: ``"running"`` before the
    node, then ``"completed"``, or ``"failed"`` with a ``"message"`` before its exception
    propagates. Cancellation emits nothing: the run owner reports it.
    """

    def _run(self, shared: Shared) -> Action:
        raise RuntimeError(f"Use run_async for AsyncGraph: {self.node_id} runs with `await graph.run_async(shared)`")

    async def post_async(self, shared: Shared, prep_res: Any, exec_res: Any) -> Any:
        """By default an async graph's action is the last action of its last node."""
        return exec_res

    async def _run_async(self, shared: Shared) -> Any:
        prep_res = await self.prep_async(shared)
        last_action = await self._orch_async(shared)
        return await self.post_async(shared, prep_res, last_action)

    async def _run_step_async(self, node: BaseNode[Any, Any], shared: Shared) -> Action:
        """Run one node of this graph, reporting its status to the run's context."""
        ctx = run_context.get()
        if ctx is None:
            return await node._run_async(shared)
        await ctx.emit(node.node_id, NODE_STATUS, {"status": "running"})
        try:
            action = await node._run_async(shared)
        except Exception as exc:
            await ctx.emit(node.node_id, NODE_STATUS, {"status": "failed", "message": str(exc) or type(exc).__name__})
            raise
        await ctx.emit(node.node_id, NODE_STATUS, {"status": "completed"})
        return action

    async def _orch_async(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        node = self._first_step()
        node_params = params or dict(self.params)
        last_action: Action = None
        while node is not None:
            node.set_params(node_params)
            last_action = await self._run_step_async(node, shared)
            node = self._step(self.get_next_node(node, last_action))
        return last_action


class AsyncBatchGraph(AsyncGraph, BatchGraph):
    """Runs the whole graph once per params dict returned by `prep_async`, one after the other."""

    async def _run_async(self, shared: Shared) -> Any:
        param_sets = _param_sets(await self.prep_async(shared))
        for item in param_sets:
            await self._orch_async(shared, {**self.params, **item})
        return await self.post_async(shared, param_sets, None)


class AsyncParallelBatchGraph(AsyncGraph, BatchGraph):
    """Runs the whole graph once per params dict returned by `prep_async`, all at once.

    As in KayGraph, the runs share the one shared store, and a failure does not stop the
    others (they run to their end in the background while the error propagates).
    """

    async def _run_async(self, shared: Shared) -> Any:
        param_sets = _param_sets(await self.prep_async(shared))
        await asyncio.gather(*(self._orch_async(shared, {**self.params, **item}) for item in param_sets))
        return await self.post_async(shared, param_sets, None)
