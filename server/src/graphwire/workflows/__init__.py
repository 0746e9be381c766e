"""The built-in workflows (the seed's examples); their schemas come from the spec."""

from __future__ import annotations

from graphwire._generated.workflows import WORKFLOW_SCHEMAS
from graphwire.registry import GraphFactory, ParamsCheck, WorkflowRegistry
from graphwire.workflows.approval import build_approval
from graphwire.workflows.chat import Responder, build_chat, echo_responder
from graphwire.workflows.data_processing import build_data_processing, check_data_processing
from graphwire.workflows.ticker import build_ticker

__all__ = ["Responder", "echo_responder", "register_builtin_workflows"]


def register_builtin_workflows(registry: WorkflowRegistry, responder: Responder = echo_responder) -> None:
    """Register every workflow the spec lists under ``x-graphwire-workflows``."""
    builders: dict[str, GraphFactory] = {
        "data_processing": build_data_processing,
        "chat": lambda: build_chat(responder),
        "approval": build_approval,
        "ticker": build_ticker,
    }
    checks: dict[str, ParamsCheck] = {"data_processing": check_data_processing}
    for name, schema in WORKFLOW_SCHEMAS.items():
        registry.register(
            name,
            builders[name],
            params=schema.params,
            result=schema.result,
            description=schema.description,
            check=checks.get(name),
        )
