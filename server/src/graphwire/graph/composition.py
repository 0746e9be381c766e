"""Graphs as nodes: run a whole graph as one step of another (KayGraph's ``composition``).

A `SubGraphNode` hands the sub-graph its own shared dict, built in `prep` (a deep copy of
the parent's, or only ``input_keys``), runs the sub-graph on it in `exec`, and merges the
result (all of it, or only ``output_keys``) back into the parent's shared store in `post`.
Its action is always ``None``: the sub-graph's last action does not route the parent.

Beyond KayGraph: when the sub-graph is an `AsyncGraph`, the node is awaited natively
inside an async parent graph (its nodes report their status to the run's context like the
parent's own), and `ParallelSubGraphNode` runs its graphs concurrently there. A sync
parent cannot run an async sub-graph and says so.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._context import InputTimeout
from ._graph import AsyncGraph, Graph
from ._node import Action, AsyncNode, BaseNode, Shared

__all__ = ["ConditionalSubGraphNode", "ParallelSubGraphNode", "SubGraphNode", "compose_graphs"]


def _is_async(graph: BaseNode[Any, Any]) -> bool:
    return isinstance(graph, AsyncNode)


def _prepared(parent: BaseNode[Any, Any], graph: BaseNode[Any, Any]) -> BaseNode[Any, Any]:
    """The copy of ``graph`` to run, with the parent node's config when it has none.

    A graph nested directly in another graph gets the outer config (see `Graph._step`);
    a graph wrapped in a `SubGraphNode` gets it the same way.
    """
    clone = graph._copy_for_run()
    if parent.config and not clone.config:
        clone.config = parent.config
    return clone


def _async_only(node: BaseNode[Any, Any]) -> RuntimeError:
    return RuntimeError(f"{node.node_id} runs an AsyncGraph: put it in an AsyncGraph and run that with run_async")


async def _run_hooked_async(node: BaseNode[Any, Any], shared: Shared, work: Callable[[Any], Awaitable[Any]]) -> Action:
    """`BaseNode._run` with an awaited ``work`` in place of ``exec``: same hooks, same errors."""
    node.last_error = None
    started = time.time()
    node.set_context("start_time", started)
    try:
        node.before_prep(shared)
        prep_res = node.prep(shared)
        exec_res = await work(prep_res)
        node.after_exec(shared, prep_res, exec_res)
        return node.post(shared, prep_res, exec_res)
    except InputTimeout:
        raise
    except Exception as exc:
        if node.on_error(shared, exc):
            node.last_error = exc
            return None
        raise
    finally:
        node.set_context("last_execution_time", time.time() - started)


class SubGraphNode(BaseNode[Shared, Shared]):
    """Runs ``graph`` as one node, on its own shared dict.

    Without ``input_keys`` the sub-graph works on a deep copy of the parent's shared store
    (nothing it does reaches the parent until `post`); with them, on a dict of just those
    keys (the values themselves are not copied), a missing key being logged as a warning.
    Without ``output_keys`` every key of the sub-graph's dict is merged back; with them,
    only those (a missing one is logged). The default id is ``subgraph_<id(graph)>``.
    """

    def __init__(
        self,
        graph: BaseNode[Any, Any],
        node_id: str | None = None,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> None:
        super().__init__(node_id or f"subgraph_{id(graph)}")
        self.subgraph = graph
        self.input_keys = input_keys
        self.output_keys = output_keys

    def prep(self, shared: Shared) -> Shared:
        """The sub-graph's shared dict: the chosen keys, or a deep copy of everything."""
        if not self.input_keys:
            return copy.deepcopy(shared)
        sub_shared: Shared = {}
        for key in self.input_keys:
            if key in shared:
                sub_shared[key] = shared[key]
            else:
                self.logger.warning("%s: input key %r is not in the shared store", self.node_id, key)
        return sub_shared

    def exec(self, prep_res: Shared) -> Shared:
        """Run the sub-graph on ``prep_res`` (in place) and pick what goes back."""
        if _is_async(self.subgraph):
            raise _async_only(self)
        action = _prepared(self, self.subgraph)._run(prep_res)
        self.logger.info("%s: sub-graph ended with action %r", self.node_id, action)
        return self._outputs(prep_res)

    def post(self, shared: Shared, prep_res: Shared, exec_res: Shared) -> Action:
        """Merge the sub-graph's output into the parent's shared store."""
        shared.update(exec_res)
        return None

    def _outputs(self, sub_shared: Shared) -> Shared:
        if not self.output_keys:
            return sub_shared
        picked: Shared = {}
        for key in self.output_keys:
            if key in sub_shared:
                picked[key] = sub_shared[key]
            else:
                self.logger.warning("%s: output key %r is not in the sub-graph's result", self.node_id, key)
        return picked

    async def _exec_subgraph_async(self, prep_res: Shared) -> Shared:
        action = await _prepared(self, self.subgraph)._run_async(prep_res)
        self.logger.info("%s: sub-graph ended with action %r", self.node_id, action)
        return self._outputs(prep_res)

    async def _run_async(self, shared: Shared) -> Action:
        # A sync sub-graph runs whole in a worker thread, like any sync node; an async one
        # is awaited on the loop, so its nodes keep their own async (and thread) handling.
        if not _is_async(self.subgraph):
            return await super()._run_async(shared)
        return await _run_hooked_async(self, shared, self._exec_subgraph_async)


class _Skipped(dict[str, Any]):
    """`ConditionalSubGraphNode.prep`'s ``{"_skip": True}``, recognised by type.

    KayGraph recognises it by its ``_skip`` key, so a parent store that holds a truthy
    ``_skip`` of its own would skip the sub-graph too; a type cannot be confused that way.
    """


class ConditionalSubGraphNode(SubGraphNode):
    """A `SubGraphNode` that runs only when ``shared[condition_key] == condition_value``.

    Otherwise `prep` returns ``{"_skip": True}``, nothing runs and nothing is merged.
    """

    def __init__(
        self,
        graph: BaseNode[Any, Any],
        condition_key: str,
        condition_value: Any = True,
        node_id: str | None = None,
        input_keys: list[str] | None = None,
        output_keys: list[str] | None = None,
    ) -> None:
        super().__init__(graph, node_id, input_keys, output_keys)
        self.condition_key = condition_key
        self.condition_value = condition_value

    def prep(self, shared: Shared) -> Shared:
        """The sub-graph's shared dict, or the skip marker when the condition does not hold."""
        if shared.get(self.condition_key) != self.condition_value:
            self.logger.info("%s: skipped, %r is not %r", self.node_id, self.condition_key, self.condition_value)
            return _Skipped(_skip=True)
        return super().prep(shared)

    def exec(self, prep_res: Shared) -> Shared:
        """Run the sub-graph, or return ``{}`` when skipped."""
        if isinstance(prep_res, _Skipped):
            return {}
        return super().exec(prep_res)

    async def _exec_subgraph_async(self, prep_res: Shared) -> Shared:
        if isinstance(prep_res, _Skipped):
            return {}
        return await super()._exec_subgraph_async(prep_res)


class ParallelSubGraphNode(BaseNode[Shared, dict[str, Shared]]):
    """Runs several graphs, each on its own deep copy of the shared store.

    The results are ``{"graph_0": shared_0, "graph_1": ...}``. With ``merge_results``
    each is merged into the parent's store in order (a later graph wins a key both set);
    without, they are stored as ``shared["parallel_results"]``. As in KayGraph, a sync
    parent runs the graphs one after the other; inside an `AsyncGraph`, when any of them
    is async, they run concurrently (sync ones in worker threads).
    """

    def __init__(
        self,
        graphs: Sequence[BaseNode[Any, Any]],
        node_id: str | None = None,
        merge_results: bool = True,
    ) -> None:
        super().__init__(node_id or "parallel_subgraphs")
        self.graphs = list(graphs)
        self.merge_results = merge_results

    def prep(self, shared: Shared) -> Shared:
        """A deep copy of the shared store, the common input of every graph."""
        return copy.deepcopy(shared) if shared else {}

    def exec(self, prep_res: Shared) -> dict[str, Shared]:
        """Run each graph on its own copy of ``prep_res``, one after the other."""
        if any(_is_async(graph) for graph in self.graphs):
            raise _async_only(self)
        results: dict[str, Shared] = {}
        for index, graph in enumerate(self.graphs):
            sub_shared = copy.deepcopy(prep_res)
            _prepared(self, graph)._run(sub_shared)
            results[f"graph_{index}"] = sub_shared
        return results

    def post(self, shared: Shared, prep_res: Shared, exec_res: dict[str, Shared]) -> Action:
        """Merge the results into the shared store, or keep them under ``parallel_results``."""
        if self.merge_results:
            for result in exec_res.values():
                shared.update(result)
        else:
            shared["parallel_results"] = exec_res
        return None

    async def _exec_all_async(self, prep_res: Shared) -> dict[str, Shared]:
        inputs = [copy.deepcopy(prep_res) for _ in self.graphs]
        # `_run_async` of a sync graph is its thread hop; of an async one, its own loop.
        runs = (_prepared(self, graph)._run_async(sub) for graph, sub in zip(self.graphs, inputs, strict=True))
        await asyncio.gather(*runs)
        return {f"graph_{index}": sub for index, sub in enumerate(inputs)}

    async def _run_async(self, shared: Shared) -> Action:
        if not any(_is_async(graph) for graph in self.graphs):
            return await super()._run_async(shared)
        return await _run_hooked_async(self, shared, self._exec_all_async)


class _GraphChain(Graph):
    """Runs each of ``graphs`` in turn on one shared store, whatever their last action."""

    def __init__(self, graphs: Sequence[BaseNode[Any, Any]]) -> None:
        super().__init__(node_id="chained_graphs")
        self.graphs = list(graphs)

    def _orch(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        action: Action = None
        for graph in self.graphs:
            action = _prepared(self, graph)._run(shared)
        return action


class _AsyncGraphChain(AsyncGraph, _GraphChain):
    """`_GraphChain` for a mix of sync and async graphs, inside an async parent."""

    async def _orch_async(self, shared: Shared, params: dict[str, Any] | None = None) -> Action:
        action: Action = None
        for graph in self.graphs:
            action = await _prepared(self, graph)._run_async(shared)
        return action


def compose_graphs(*graphs: BaseNode[Any, Any], node_id: str | None = None) -> SubGraphNode:
    """One `SubGraphNode` that runs ``graphs`` in order on one copy of the shared store.

    A single graph is simply wrapped; several are chained (each runs to its end, then the
    next starts, whatever the previous one's last action) under the default id
    ``composed_workflow``. Raises `ValueError` without graphs.
    """
    if not graphs:
        raise ValueError("compose_graphs needs at least one graph")
    if len(graphs) == 1:
        return SubGraphNode(graphs[0], node_id=node_id)
    chain = _AsyncGraphChain(graphs) if any(_is_async(graph) for graph in graphs) else _GraphChain(graphs)
    return SubGraphNode(chain, node_id=node_id or "composed_workflow")
