"""graphwire: a real-time WebSocket gateway for KayGraph-style graph workflows."""

from graphwire.app import Gateway, create_app
from graphwire.connections import Connection, ConnectionManager
from graphwire.registry import WorkflowDefinition, WorkflowRegistry
from graphwire.runs import RunManager
from graphwire.settings import Settings
from graphwire.workflows import register_builtin_workflows

__all__ = [
    "Connection",
    "ConnectionManager",
    "Gateway",
    "RunManager",
    "Settings",
    "WorkflowDefinition",
    "WorkflowRegistry",
    "create_app",
    "register_builtin_workflows",
]
