"""Tools an agent can call, and the registry it calls them through (``kaygraph.agent.tools``).

Every call answers with a result dict, never an exception (`InputTimeout` aside: the run
must fail), so the LLM can observe a failure and try something else: ``{"success": True, "result": ...}`` or
``{"success": False, "error": "..."}``. `ToolRegistry.execute` is the one entry point;
it validates the params against the tool's pydantic ``params_schema`` when it has one.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from .._context import InputTimeout

__all__ = ["SimpleTool", "Tool", "ToolRegistry", "ToolResult"]

ToolResult = dict[str, Any]
"""What a tool returns: ``success`` plus ``result`` or ``error`` (and anything else it likes)."""

ParamsT = TypeVar("ParamsT", bound=BaseModel)


class Tool(Generic[ParamsT]):
    """A named, described action; subclasses set ``name``, ``description``, ``params_schema``.

    `execute` receives the params as a ``params_schema`` instance (validated by the
    registry), or the raw dict when the tool has no schema.
    """

    name: str = ""
    description: str = ""
    params_schema: type[ParamsT] | None = None

    def __init__(self, name: str | None = None, description: str | None = None) -> None:
        if name:
            self.name = name
        if description:
            self.description = description
        if not self.name:
            raise ValueError("Tool must have a name")

    async def execute(self, params: ParamsT) -> ToolResult:
        """Do the work and return a result dict."""
        raise NotImplementedError(f"tool {self.name!r}: subclasses implement execute()")

    async def invoke(self, params: dict[str, Any]) -> ToolResult:
        """Validate ``params``, run `execute`, and turn any failure into an error result."""
        try:
            model: Any = params if self.params_schema is None else self.params_schema.model_validate(params)
            return await self.execute(model)
        except InputTimeout:
            raise
        except Exception as exc:
            return {"success": False, "error": str(exc)}

    def get_schema(self) -> dict[str, Any]:
        """``{"name", "description"}``, plus ``"parameters"`` (a JSON schema) when there is a schema."""
        schema: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.params_schema is not None:
            schema["parameters"] = self.params_schema.model_json_schema()
        return schema

    def get_description_text(self) -> str:
        """The tool as a Markdown item: ``**name**: description`` and one line per parameter."""
        lines = [f"**{self.name}**: {self.description}"]
        properties = self.get_schema().get("parameters", {}).get("properties", {})
        if properties:
            lines.append("  Parameters:")
            for param, info in properties.items():
                lines.append(f"    - {param} ({info.get('type', 'any')}): {info.get('description', '')}")
        return "\n".join(lines)


class SimpleTool(Tool[Any]):
    """A tool from a plain function (sync or async), called with the params as keywords.

    With a ``params_schema`` the params are validated (and defaults filled in) first;
    the function still gets plain keyword values. Its return value is the ``result``.
    """

    def __init__(
        self,
        name: str,
        description: str,
        func: Callable[..., Any],
        params_schema: type[BaseModel] | None = None,
    ) -> None:
        super().__init__(name, description)
        self.func = func
        self.params_schema = params_schema

    async def execute(self, params: dict[str, Any]) -> ToolResult:
        """Call the function; ``{"success": False, "error": str(exc)}`` if anything raises."""
        try:
            if self.params_schema is not None:
                params = self.params_schema.model_validate(params).model_dump()
            result = self.func(**params)
            if inspect.isawaitable(result):
                result = await result
        except InputTimeout:
            raise
        except Exception as exc:
            return {"success": False, "error": str(exc)}
        return {"success": True, "result": result}

    async def invoke(self, params: dict[str, Any]) -> ToolResult:
        return await self.execute(params)


class ToolRegistry:
    """The tools an agent may call, by name."""

    def __init__(self) -> None:
        self.tools: dict[str, Tool[Any]] = {}

    def register(self, tool: Tool[Any]) -> None:
        """Add ``tool``; a second tool with the same name is a `ValueError`."""
        if tool.name in self.tools:
            raise ValueError(f"Tool '{tool.name}' already registered")
        self.tools[tool.name] = tool

    def register_function(
        self,
        name: str,
        func: Callable[..., Any],
        description: str,
        params_schema: type[BaseModel] | None = None,
    ) -> None:
        """Register ``func`` as a `SimpleTool`."""
        self.register(SimpleTool(name, description, func, params_schema))

    def get_tool(self, name: str) -> Tool[Any] | None:
        """The tool called ``name``, or ``None``."""
        return self.tools.get(name)

    async def execute(self, tool_name: str, params: dict[str, Any] | None) -> ToolResult:
        """Call a tool; an unknown name is ``{"success": False, "error": "Unknown tool: <name>"}``."""
        tool = self.get_tool(tool_name)
        if tool is None:
            return {"success": False, "error": f"Unknown tool: {tool_name}"}
        return await tool.invoke(params if params is not None else {})

    def get_tools_prompt(self, format: str = "markdown") -> str:
        """The tools for a system prompt: a Markdown list, or their schemas as JSON (``"json"``)."""
        if format == "json":
            return json.dumps([tool.get_schema() for tool in self.tools.values()], indent=2)
        return "\n".join(
            ["## Available Tools\n", *(f"{tool.get_description_text()}\n" for tool in self.tools.values())]
        )

    def get_tool_names(self) -> list[str]:
        """The names, in registration order."""
        return list(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools
