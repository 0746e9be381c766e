"""The graphwire workflow engine, KayGraph-compatible.

A KayGraph node ports by changing its import to ``from graphwire.graph import ...``.
The engine is stdlib-only and knows nothing of sockets: `WebSocketNode` and the
graph's node status reports go through the `RunContext` that the gateway sets in
`run_context` (see `use_run_context`).
"""

from __future__ import annotations

from ._batch import AsyncBatchNode, AsyncParallelBatchNode, BatchNode
from ._context import InputTimeout, RunContext, run_context, use_run_context
from ._graph import AsyncGraph, Graph
from ._node import AsyncNode, BaseNode, Node
from ._websocket import WebSocketNode

__all__ = [
    "AsyncBatchNode",
    "AsyncGraph",
    "AsyncNode",
    "AsyncParallelBatchNode",
    "BaseNode",
    "BatchNode",
    "Graph",
    "InputTimeout",
    "Node",
    "RunContext",
    "WebSocketNode",
    "run_context",
    "use_run_context",
]
