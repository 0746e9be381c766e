"""Batch nodes: `prep` returns items, `exec` runs once per item.

Retries and `exec_fallback` apply per item (the fallback receives the item), and
the exec result handed to `after_exec` and `post` is the list of per-item results,
in item order. A `prep` that returns ``None`` is an empty batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from ._node import AsyncNode, Node

__all__ = ["AsyncBatchNode", "AsyncParallelBatchNode", "BatchNode"]


def _items(prep_res: Iterable[Any] | None) -> list[Any]:
    return [] if prep_res is None else list(prep_res)


class BatchNode(Node[Any, Any]):
    """Runs `exec` for each item of the iterable returned by `prep`, in order."""

    def _exec(self, prep_res: Any) -> list[Any]:
        return [self._exec_with_retries(item) for item in _items(prep_res)]


class AsyncBatchNode(AsyncNode[Any, Any], BatchNode):
    """Awaits `exec_async` for each item, one after the other."""

    async def _exec_async(self, prep_res: Any) -> list[Any]:
        return [await self._exec_with_retries_async(item) for item in _items(prep_res)]


class AsyncParallelBatchNode(AsyncNode[Any, Any], BatchNode):
    """Awaits `exec_async` for all items concurrently (`asyncio.gather`).

    If one item fails for good (after its retries and fallback), the items still
    running are cancelled and awaited before the error propagates, so no orphan
    task outlives the node. ``cur_retry`` is shared by the concurrent items and is
    only indicative here.
    """

    async def _exec_async(self, prep_res: Any) -> list[Any]:
        tasks = [asyncio.create_task(self._exec_with_retries_async(item)) for item in _items(prep_res)]
        if not tasks:
            return []
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
