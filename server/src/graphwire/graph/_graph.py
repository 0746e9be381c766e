"""Graphs: follow actions from node to node, KayGraph-compatible.

A graph is a node: its "exec" phase is the orchestration, its `post` returns the
last action by default, so a graph nests inside another graph and its last action
picks the outer successor. Each step runs on a shallow copy of the node, so
per-run state (params, ``cur_retry``, ``last_error``...) never leaks into the
graph's own nodes or between runs. An action with no successor ends the graph
quietly.

Params: each node runs with its own params overlaid by the graph's params (the
graph wins on a clash), so a node's defaults survive being put in a graph.
"""

from __future__ import annotations

import logging
from typing import Any

from ._context import run_context
from ._node import DEFAULT_ACTION, Action, AsyncNode, BaseNode, Shared

__all__ = ["AsyncGraph", "Graph"]

_log = logging.getLogger("graphwire.graph")

NODE_STATUS = "node_status"
"""The `RunContext.emit` update type for node status transitions."""


class Graph(BaseNode[Any, Any]):
    """Runs sync nodes from `start_node`, following each node's action."""

    def __init__(self, start: BaseNode[Any, Any] | None = None, node_id: str | None = None) -> None:
        super().__init__(node_id=node_id)
        self.start_node = start

    def start(self, start: BaseNode[Any, Any]) -> BaseNode[Any, Any]:
        """Set the start node; returns it so ``g.start(a) >> b`` chains."""
        self.start_node = start
        return start

    def get_next_node(self, current: BaseNode[Any, Any], action: Action) -> BaseNode[Any, Any] | None:
        """The successor of ``current`` for ``action`` (``None``: the graph ends)."""
        successor = current.successors.get(action or DEFAULT_ACTION)
        if successor is None and current.successors:
            _log.debug(
                "graph %s ends: %s returned action %r, successors are for %s",
                self.node_id,
                current.node_id,
                action,
                sorted(current.successors),
            )
        return successor

    def post(self, shared: Shared, prep_res: Any, exec_res: Any) -> Action:
        """By default a graph's action is the last action of its last node."""
        result: Action = exec_res
        return result

    def _first_node(self) -> BaseNode[Any, Any]:
        if self.start_node is None:
            raise RuntimeError(f"graph {self.node_id} has no start node")
        return self.start_node._copy_for_run()

    def _params_for(self, node: BaseNode[Any, Any], params: dict[str, Any] | None) -> dict[str, Any]:
        return {**node.params, **(self.params if params is None else params)}

    def _exec_step(self, shared: Shared, prep_res: Any) -> Any:
        return self._orch(shared)

    def _orch(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        node: BaseNode[Any, Any] | None = self._first_node()
        last_action: Action = None
        while node is not None:
            node.set_params(self._params_for(node, params))
            last_action = node._run(shared)
            successor = self.get_next_node(node, last_action)
            node = successor._copy_for_run() if successor is not None else None
        return last_action


class AsyncGraph(Graph, AsyncNode[Any, Any]):
    """Runs sync and async nodes; run it with ``await graph.run_async(shared)``.

    When a `RunContext` is set, each node's status transitions are emitted as
    ``ctx.emit(node_id, "node_status", {"status": ...})``: ``"running"`` before
    the node, then ``"completed"``, or ``"failed"`` with a ``"message"`` before its
    exception propagates. Cancellation emits nothing: the run owner reports it.
    """

    def __init__(self, start: BaseNode[Any, Any] | None = None, node_id: str | None = None) -> None:
        super().__init__(start=start, node_id=node_id)

    def _run(self, shared: Shared) -> Action:
        raise RuntimeError(f"{self.node_id} is an AsyncGraph: use `await graph.run_async(shared)`")

    async def post_async(self, shared: Shared, prep_res: Any, exec_res: Any) -> Action:
        return self.post(shared, prep_res, exec_res)

    async def _exec_step_async(self, shared: Shared, prep_res: Any) -> Any:
        return await self._orch_async(shared)

    async def _orch_async(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        ctx = run_context.get()
        node: BaseNode[Any, Any] | None = self._first_node()
        last_action: Action = None
        while node is not None:
            node.set_params(self._params_for(node, params))
            if ctx is not None:
                await ctx.emit(node.node_id, NODE_STATUS, {"status": "running"})
            try:
                last_action = await node._run_async(shared)
            except Exception as exc:
                if ctx is not None:
                    await ctx.emit(
                        node.node_id,
                        NODE_STATUS,
                        {"status": "failed", "message": str(exc) or type(exc).__name__},
                    )
                raise
            if ctx is not None:
                await ctx.emit(node.node_id, NODE_STATUS, {"status": "completed"})
            successor = self.get_next_node(node, last_action)
            node = successor._copy_for_run() if successor is not None else None
        return last_action
