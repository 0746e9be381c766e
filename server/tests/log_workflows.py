"""Workflows whose nodes log, for the tests of structured logs (graphwire.logs).

``chatty``: a sync node (in a worker thread), a parallel batch whose items log from a pool
of threads, and an async node, each logging a line with quotes and a newline in it.
``broken_check``: a params check that fails with an error that is not the client's
(``RuntimeError``), so the frame that starts it is logged as an internal error, in the
connection's task. Load with ``--workflows log_workflows:register``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict

from graphwire.graph import AsyncGraph, AsyncNode, Node, ParallelBatchNode
from graphwire.registry import WorkflowRegistry

__all__ = ["SAID", "register"]

log = logging.getLogger("log_workflows")

SAID = 'said "hi"\nfrom'
"""What each node's line starts with, before who said it."""


class Empty(BaseModel):
    model_config = ConfigDict(extra="allow")


class SyncSays(Node[None, None]):
    def exec(self, prep_res: None) -> None:
        log.warning("%s a sync node in %s", SAID, threading.current_thread().name)


class BatchSays(ParallelBatchNode):
    def prep(self, shared: dict[str, Any]) -> list[int]:
        return [1, 2]

    def exec(self, prep_res: int) -> int:
        log.warning("%s batch item %d", SAID, prep_res)
        return prep_res


class AsyncSays(AsyncNode[None, None]):
    async def exec_async(self, prep_res: None) -> None:
        log.warning("%s an async node", SAID)


def chatty() -> AsyncGraph:
    first = SyncSays(node_id="sync_step")
    first >> BatchSays(2, node_id="batch_step") >> AsyncSays(node_id="async_step")
    return AsyncGraph(first)


def broken_check(params: dict[str, Any]) -> None:
    raise RuntimeError("the check itself is broken")


def register(registry: WorkflowRegistry) -> None:
    registry.register("chatty", chatty, params=Empty, result=Empty)
    registry.register("broken_check", chatty, params=Empty, result=Empty, check=broken_check)
