"""Ready-made ReAct agents (``kaygraph.agent.patterns``).

`create_react_agent` wires think → act → think ... → output as an `AsyncInteractiveGraph`;
run it with ``await agent.run_interactive_async({"messages": [...]})`` (or ``run_async``)
and read ``final_answer``, ``output`` and ``error`` from the returned store. The coding,
research, debugging and data-analysis agents are the same loop with a role put before the
tool list and reply format in the system prompt. `create_file_tools` is a small registry
of file tools.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from ..interactive import AsyncInteractiveGraph
from .nodes import DEFAULT_MAX_ITERATIONS, ActNode, LLMFunc, OutputNode, ThinkNode
from .tools import ToolRegistry

__all__ = [
    "create_coding_agent",
    "create_data_analysis_agent",
    "create_debugging_agent",
    "create_file_tools",
    "create_react_agent",
    "create_research_agent",
]


def create_react_agent(
    tool_registry: ToolRegistry,
    llm_func: LLMFunc,
    system_prompt: str | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> AsyncInteractiveGraph:
    """A ReAct agent that stops after ``max_iterations`` tool calls (``shared["max_iterations"]`` wins).

    Think's ``"error"`` (three unparsable replies) and act's ``"error"`` (the limit) both
    end at the `OutputNode`, with the reason in ``shared["error"]``.
    """
    return _react_agent(tool_registry, llm_func, system_prompt, max_iterations)


def _react_agent(
    tool_registry: ToolRegistry,
    llm_func: LLMFunc,
    system_prompt: str | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    role_prompt: str | None = None,
) -> AsyncInteractiveGraph:
    think = ThinkNode(tool_registry, llm_func, system_prompt, role_prompt=role_prompt)
    act = ActNode(tool_registry, max_iterations=max_iterations)
    output = OutputNode()
    think - "act" >> act
    think - "retry" >> think
    think - "finish" >> output
    think - "error" >> output
    act - "think" >> think
    act - "error" >> output
    return AsyncInteractiveGraph(think)


def create_coding_agent(
    tool_registry: ToolRegistry, llm_func: LLMFunc, workspace_dir: str = "."
) -> AsyncInteractiveGraph:
    """A ReAct agent briefed as a careful programmer working in ``workspace_dir``."""
    role = (
        f"You are a software engineer working in the directory {workspace_dir}. Read code before you"
        " change it, make the smallest change that does the job, run the tests after a change, and"
        " say what you did and why."
    )
    return _react_agent(tool_registry, llm_func, role_prompt=role)


def create_research_agent(tool_registry: ToolRegistry, llm_func: LLMFunc) -> AsyncInteractiveGraph:
    """A ReAct agent briefed to research a question across several sources."""
    role = (
        "You research questions. Split the question into parts, look each up in more than one"
        " source, check claims against each other, keep facts apart from opinions, and cite"
        " where each finding came from."
    )
    return _react_agent(tool_registry, llm_func, role_prompt=role)


def create_debugging_agent(tool_registry: ToolRegistry, llm_func: LLMFunc) -> AsyncInteractiveGraph:
    """A ReAct agent briefed to find a bug's root cause and check the fix."""
    role = (
        "You debug software. Start from the exact error, gather logs and stack traces, reproduce"
        " the failure, find the root cause before proposing a fix, and verify the fix breaks"
        " nothing else."
    )
    return _react_agent(tool_registry, llm_func, role_prompt=role)


def create_data_analysis_agent(tool_registry: ToolRegistry, llm_func: LLMFunc) -> AsyncInteractiveGraph:
    """A ReAct agent briefed to explore and analyse data."""
    role = (
        "You analyse data. Look at the data's shape and quality first, query only what the"
        " question needs, back each finding with numbers, and suggest what to look at next."
    )
    return _react_agent(tool_registry, llm_func, role_prompt=role)


def create_file_tools(root: str | os.PathLike[str] | None = None) -> ToolRegistry:
    """A registry with ``read_file(path)``, ``write_file(path, content)`` and ``list_files(directory=".")``.

    Files are UTF-8 and read and written in a worker thread (``asyncio.to_thread``), so
    no ``aiofiles`` is needed. With ``root`` (a graphwire addition) paths are relative to
    it and any path that resolves outside it is refused; without it they are the process's
    own, as in KayGraph.
    """
    base = Path(root).resolve() if root is not None else None

    def resolve(path: str) -> Path:
        if base is None:
            return Path(path)
        target = (base / path).resolve()
        if not target.is_relative_to(base):
            raise ValueError(f"{path!r} is outside the tools' root directory")
        return target

    def listing(directory: str) -> list[str]:
        entries = sorted(resolve(directory).iterdir())
        return [str(p.relative_to(base) if base is not None else p) for p in entries]

    async def read_file(path: str) -> str:
        return await asyncio.to_thread(lambda: resolve(path).read_text(encoding="utf-8"))

    async def write_file(path: str, content: str) -> str:
        data = content.encode("utf-8")
        await asyncio.to_thread(lambda: resolve(path).write_bytes(data))
        return f"Wrote {len(data)} bytes to {path}"

    async def list_files(directory: str = ".") -> list[str]:
        return await asyncio.to_thread(listing, directory)

    registry = ToolRegistry()
    # No params schemas (as in KayGraph), so the descriptions name the params for the LLM.
    registry.register_function("read_file", read_file, 'Read a text file; params {"path": str}')
    registry.register_function(
        "write_file", write_file, 'Write a text file, replacing it; params {"path": str, "content": str}'
    )
    registry.register_function(
        "list_files", list_files, 'List a directory\'s entries; params {"directory": str, default "."}'
    )
    return registry
