"""The nodes of a ReAct loop (``kaygraph.agent.nodes``): think, act, output.

`ThinkNode` asks the LLM for the next step and routes on its JSON reply: ``"act"`` (a
tool call, kept in ``shared["pending_tool_call"]``), ``"finish"`` (``final_answer``),
``"retry"`` (the reply was not a JSON object; the LLM is told so) or ``"error"`` after
three bad replies in a row. `ActNode` runs the pending call, appends the result to
``shared["messages"]`` as an observation and routes back to ``"think"``, or to
``"error"`` once ``shared["iteration"]`` reaches the iteration limit. Both set
``shared["_exit"]`` when they stop, so `AsyncInteractiveGraph.run_interactive_async`
stops too; `OutputNode` copies the answer to ``shared["output"]``.

The LLM is any async function from a message list (``{"role", "content"}`` dicts, the
system prompt first) to a dict with the reply in ``"content"`` (a plain string is
accepted too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from .._node import Action, AsyncNode, Shared
from .tools import ToolRegistry, ToolResult

__all__ = ["ActNode", "LLMFunc", "Message", "OutputNode", "ThinkNode", "llm_text", "parse_json_reply"]

Message = dict[str, Any]
"""A chat message: ``{"role": "system" | "user" | "assistant", "content": str}``."""

LLMFunc = Callable[[list[Message]], Awaitable[Any]]
"""The user's LLM: messages in, ``{"content": reply}`` out."""

MAX_THINK_RETRIES = 3
DEFAULT_MAX_ITERATIONS = 20

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)

_INSTRUCTIONS = """\
Work on the user's task one step at a time, calling tools when they help.

{tools}
Answer every turn with one JSON object and nothing else.
- To call a tool: {{"action": "<tool name>", "params": {{...the tool's arguments...}}}}
- To end with your answer: {{"action": "finish", "answer": "<the answer>"}}

Call only the tools listed above. Each call's result comes back as the next message;
read it before deciding the next step.
"""

_NUDGE = 'That was not a JSON object. Reply with one JSON object only, such as {"action": "finish", "answer": "..."}.'


def llm_text(response: Any) -> str:
    """The text of an LLM reply: its ``"content"``, or the reply itself when it is a string."""
    if isinstance(response, str):
        return response
    content = response.get("content", "") if isinstance(response, dict) else ""
    return content if isinstance(content, str) else str(content)


def parse_json_reply(content: str) -> Any:
    """The JSON in ``content``: the first fenced block (```` ```json ```` or ```` ``` ````), or all of it.

    Raises `ValueError` (`json.JSONDecodeError`) when that is not JSON.
    """
    fenced = _FENCE.search(content)
    return json.loads(fenced.group(1) if fenced else content.strip())


class ThinkNode(AsyncNode[dict[str, Any], Any]):
    """Asks the LLM what to do next; see the module docstring for its actions and keys.

    The system prompt lists the registry's tools (read on every turn, so tools registered
    later are offered) and the reply format. ``system_prompt`` replaces it entirely, as
    in KayGraph; ``role_prompt`` (a graphwire addition) is put before it instead.
    """

    def __init__(
        self,
        tool_registry: ToolRegistry,
        llm_func: LLMFunc,
        system_prompt: str | None = None,
        node_id: str | None = None,
        *,
        role_prompt: str | None = None,
    ) -> None:
        super().__init__(node_id=node_id or "think")
        self.tool_registry = tool_registry
        self.llm_func = llm_func
        self.custom_system_prompt = system_prompt
        self.role_prompt = role_prompt

    def get_system_prompt(self) -> str:
        """The system prompt for this turn."""
        if self.custom_system_prompt:
            return self.custom_system_prompt
        instructions = _INSTRUCTIONS.format(tools=self.tool_registry.get_tools_prompt())
        return f"{self.role_prompt.strip()}\n\n{instructions}" if self.role_prompt else instructions

    async def prep_async(self, shared: Shared) -> dict[str, Any]:
        return {
            "system": self.get_system_prompt(),
            "messages": shared.get("messages", []),
            "iteration": shared.get("iteration", 0),
        }

    async def exec_async(self, prep_res: dict[str, Any]) -> Any:
        system = [{"role": "system", "content": prep_res["system"]}] if prep_res["system"] else []
        return await self.llm_func([*system, *prep_res["messages"]])

    async def post_async(self, shared: Shared, prep_res: dict[str, Any], exec_res: Any) -> Action:
        content = llm_text(exec_res)
        messages: list[Message] = shared.setdefault("messages", [])
        try:
            step = parse_json_reply(content)
        except ValueError as exc:
            step, problem = None, str(exc)
        else:
            problem = "" if isinstance(step, dict) else f"a JSON {type(step).__name__}, not an object"
        if not isinstance(step, dict):
            self.logger.warning("node %s: the LLM reply is not a JSON object (%s)", self.node_id, problem)
            messages += [{"role": "assistant", "content": content}, {"role": "user", "content": _NUDGE}]
            shared["think_retries"] = shared.get("think_retries", 0) + 1
            if shared["think_retries"] < MAX_THINK_RETRIES:
                return "retry"
            shared["_exit"] = True
            shared["error"] = "Failed to get valid response from LLM"
            return "error"
        shared["think_retries"] = 0
        if step.get("action") == "finish":
            shared["final_answer"] = answer = step.get("answer", "Task complete")
            shared["_exit"] = True
            messages.append({"role": "assistant", "content": f"FINISH: {answer}"})
            return "finish"
        shared["pending_tool_call"] = step
        messages.append({"role": "assistant", "content": json.dumps(step)})
        return "act"


class ActNode(AsyncNode[dict[str, Any], ToolResult]):
    """Runs ``shared["pending_tool_call"]`` and reports the result back to the conversation.

    The limit is ``shared["max_iterations"]`` when set, else ``max_iterations`` (a
    graphwire addition, which `create_react_agent` passes on).
    """

    def __init__(
        self,
        tool_registry: ToolRegistry,
        node_id: str | None = None,
        *,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
    ) -> None:
        super().__init__(node_id=node_id or "act")
        self.tool_registry = tool_registry
        self.max_iterations = max_iterations

    async def prep_async(self, shared: Shared) -> dict[str, Any]:
        tool_call = shared.get("pending_tool_call")
        if not tool_call:
            raise ValueError("No pending tool call in shared state")
        return dict(tool_call)

    async def exec_async(self, prep_res: dict[str, Any]) -> ToolResult:
        self.logger.info("node %s: calling tool %r", self.node_id, prep_res.get("action"))
        return await self.tool_registry.execute(str(prep_res.get("action")), prep_res.get("params") or {})

    async def post_async(self, shared: Shared, prep_res: dict[str, Any], exec_res: ToolResult) -> Action:
        shared["last_tool_result"] = exec_res
        observation = f"Tool '{prep_res.get('action')}' result: {json.dumps(exec_res, default=str)}"
        shared.setdefault("messages", []).append({"role": "user", "content": observation})
        shared["iteration"] = shared.get("iteration", 0) + 1
        if shared["iteration"] >= shared.get("max_iterations", self.max_iterations):
            shared["_exit"] = True
            shared["error"] = "Maximum iterations reached"
            return "error"
        return "think"


class OutputNode(AsyncNode[None, None]):
    """The end of the loop: ``shared["output"]`` is the final answer (or ``"No answer provided"``)."""

    async def post_async(self, shared: Shared, prep_res: None, exec_res: None) -> Action:
        shared["output"] = answer = shared.get("final_answer", "No answer provided")
        self.logger.info("node %s: agent finished: %s", self.node_id, answer)
        return None
