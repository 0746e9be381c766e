"""Batch nodes: `prep` returns items, `exec` runs once per item.

Retries and `exec_fallback` apply per item (the fallback receives the item), and the
exec result handed to `after_exec` and `post` is the list of per-item results, in item
order. A `prep` that returns ``None`` is an empty batch.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._config import Config
from ._node import AsyncNode, Node

__all__ = ["AsyncBatchNode", "AsyncParallelBatchNode", "BatchNode", "ParallelBatchNode"]


def _items(prep_res: Iterable[Any] | None) -> list[Any]:
    return [] if prep_res is None else list(prep_res)


class BatchNode(Node[Any, Any]):
    """Runs `exec` for each item of the iterable returned by `prep`, in order."""

    def _exec(self, prep_res: Any) -> list[Any]:
        return [self._exec_with_retries(item) for item in _items(prep_res)]


class ParallelBatchNode(BatchNode):
    """Runs `exec` for all items at once in a pool of threads (for blocking I/O).

    ``max_workers`` comes first, as in KayGraph (``ParallelBatchNode(8)``); ``None`` lets
    the pool pick (``min(32, cores + 4)``). Results keep item order; the first failing
    item's error propagates once the items already started have finished. ``cur_retry``
    is shared by the items and only indicative here.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        max_retries: int = 1,
        wait: float = 0,
        node_id: str | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(max_retries=max_retries, wait=wait, node_id=node_id, config=config)
        self.max_workers = max_workers

    def _exec(self, prep_res: Any) -> list[Any]:
        items = _items(prep_res)
        # Each item sees the node's context variables (its run's, for logs), as asyncio.to_thread would.
        contexts = [contextvars.copy_context() for _ in items]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            return list(pool.map(lambda ctx, item: ctx.run(self._exec_with_retries, item), contexts, items))


class AsyncBatchNode(AsyncNode[Any, Any], BatchNode):
    """Awaits `exec_async` for each item, one after the other."""

    async def _exec_async(self, prep_res: Any) -> list[Any]:
        return [await self._exec_with_retries_async(item) for item in _items(prep_res)]


class AsyncParallelBatchNode(AsyncNode[Any, Any], BatchNode):
    """Awaits `exec_async` for all items concurrently (`asyncio.gather`).

    As in KayGraph, one item failing for good (after its retries and fallback) does not
    cancel the others: its error propagates and they run to their end. Cancelling the
    node (a cancelled run) cancels every item. ``cur_retry`` is shared by the concurrent
    items and only indicative here.
    """

    async def _exec_async(self, prep_res: Any) -> list[Any]:
        return list(await asyncio.gather(*(self._exec_with_retries_async(item) for item in _items(prep_res))))
