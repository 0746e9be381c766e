"""Steps-based workflow documents and their ReactFlow canvas (KayGraph's ``declarative``).

This format is not `workflow_loader`'s: a workflow is a list of ``steps`` (``type``,
``name``, ``config``, ``inputs``, ``outputs``, ``when``...), and a ``canvas`` section may
keep the positions of a visual editor. `WorkflowSerializer` turns domains, graphs and
workflow dicts into such documents; `VisualConverter` converts a document's main
workflow to a ReactFlow canvas (``nodes``, ``edges``, ``viewport``) and back.
"""

from __future__ import annotations

from .serializer import Domain, WorkflowSerializer, save_domain, serialize_domain, serialize_workflow
from .visual_converter import VisualConverter, canvas_to_yaml, yaml_to_canvas

__all__ = [
    "Domain",
    "VisualConverter",
    "WorkflowSerializer",
    "canvas_to_yaml",
    "save_domain",
    "serialize_domain",
    "serialize_workflow",
    "yaml_to_canvas",
]
