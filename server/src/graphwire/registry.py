"""The workflow registry: a name → a graph factory, a params model and a result model."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from graphwire.graph import AsyncGraph

__all__ = ["ParamsError", "WorkflowDefinition", "WorkflowRegistry"]

GraphFactory = Callable[[], AsyncGraph]
ParamsCheck = Callable[[dict[str, Any]], None]


class ParamsError(ValueError):
    """Raised by a workflow's ``check``: params the schema allows but the workflow cannot run."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class WorkflowDefinition:
    """How to start one workflow.

    The graph reads its validated params from ``shared["params"]`` (a plain dict) and
    leaves its result in ``shared["result"]``; the result is checked against ``result``
    before ``workflow_completed`` is sent. ``check``, when set, sees the validated params
    before the run starts and raises ``ParamsError`` for what a JSON Schema cannot say.

    The gateway also sets ``shared["input"]``, the run's input, which a `WebSocketNode`'s
    default ``prep_async`` returns: the param named ``input`` (``"message"`` for a node
    whose ``exec_async(self, message)`` takes it), or the whole params dict when
    ``input`` is ``None``.
    """

    name: str
    build: GraphFactory
    params: type[BaseModel]
    result: type[BaseModel]
    description: str = ""
    check: ParamsCheck | None = None
    input: str | None = None


class WorkflowRegistry:
    """Workflows by name; ``start_workflow {workflow}`` looks them up here."""

    def __init__(self) -> None:
        self._definitions: dict[str, WorkflowDefinition] = {}

    def register(
        self,
        name: str,
        build: GraphFactory,
        *,
        params: type[BaseModel],
        result: type[BaseModel],
        description: str = "",
        check: ParamsCheck | None = None,
        input: str | None = None,
    ) -> WorkflowDefinition:
        """Register ``name``; ``input`` names the param that is the run's input (default: all params)."""
        if input is not None and input not in params.model_fields:
            fields = sorted(params.model_fields)
            raise ValueError(f"workflow {name!r}: input {input!r} is not a field of {params.__name__} ({fields})")
        definition = WorkflowDefinition(name, build, params, result, description, check, input)
        self._definitions[name] = definition
        return definition

    def get(self, name: str) -> WorkflowDefinition | None:
        return self._definitions.get(name)

    def names(self) -> list[str]:
        return sorted(self._definitions)

    def load(self, target: str) -> None:
        """Call ``package.module:function`` with this registry, so it registers its workflows."""
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise ValueError(f"workflows entry {target!r} must look like 'package.module:function'")
        register = getattr(importlib.import_module(module_name), attr)
        register(self)
