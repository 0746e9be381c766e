"""The graphwire workflow engine: KayGraph 0.3's public API, with KayGraph's semantics.

KayGraph code ports by changing its imports (``from kaygraph import ...`` →
``from graphwire.graph import ...``, ``kaygraph.persistence`` →
``graphwire.graph.persistence``...); the few deliberate differences are listed, with
their reasons, in ``docs/kaygraph.md``. The core is stdlib-only (``workflow_loader``
reads YAML with PyYAML, ``agent`` uses pydantic) and knows nothing of sockets:
`WebSocketNode` and the graph's node status reports go through the `RunContext` that the
gateway sets in `run_context` (see `use_run_context`).
"""

from __future__ import annotations

from ._batch import AsyncBatchNode, AsyncParallelBatchNode, BatchNode, ParallelBatchNode
from ._checked import MetricsNode, ValidatedNode
from ._config import Config
from ._context import InputTimeout, RunContext, current_node, failed_node, run_context, use_run_context
from ._graph import AsyncBatchGraph, AsyncGraph, AsyncParallelBatchGraph, BatchGraph, Graph
from ._node import AsyncNode, BaseNode, Node
from ._websocket import WebSocketNode
from .composition import ConditionalSubGraphNode, ParallelSubGraphNode, SubGraphNode, compose_graphs
from .interactive import AsyncInteractiveGraph, InteractiveGraph, InteractiveNode, UserInputNode
from .persistence import (
    AsyncPersistentGraph,
    Checkpoint,
    CheckpointStore,
    FileCheckpointStore,
    MemoryCheckpointStore,
    PersistentGraph,
)
from .workflow_loader import export_workflow, graph_to_yaml, load_workflow, validate_workflow, yaml_to_graph

__all__ = [
    "AsyncBatchGraph",
    "AsyncBatchNode",
    "AsyncGraph",
    "AsyncInteractiveGraph",
    "AsyncNode",
    "AsyncParallelBatchGraph",
    "AsyncParallelBatchNode",
    "AsyncPersistentGraph",
    "BaseNode",
    "BatchGraph",
    "BatchNode",
    "Checkpoint",
    "CheckpointStore",
    "ConditionalSubGraphNode",
    "Config",
    "FileCheckpointStore",
    "Graph",
    "InputTimeout",
    "InteractiveGraph",
    "InteractiveNode",
    "MemoryCheckpointStore",
    "MetricsNode",
    "Node",
    "ParallelBatchNode",
    "ParallelSubGraphNode",
    "PersistentGraph",
    "RunContext",
    "SubGraphNode",
    "UserInputNode",
    "ValidatedNode",
    "WebSocketNode",
    "compose_graphs",
    "current_node",
    "export_workflow",
    "failed_node",
    "graph_to_yaml",
    "load_workflow",
    "run_context",
    "use_run_context",
    "validate_workflow",
    "yaml_to_graph",
]
