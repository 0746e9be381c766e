"""Tests for `graphwire.graph.agent`: tools, the ReAct loop and the workflow patterns, with a scripted LLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

# isort: split
from graphwire.graph import AsyncNode, Node
from graphwire.graph.agent import (
    SimpleTool,
    Tool,
    ToolRegistry,
    create_coding_agent,
    create_evaluator_optimizer,
    create_file_tools,
    create_orchestrator_workers,
    create_prompt_chain,
    create_react_agent,
    create_router,
    run_parallel_sectioning,
    run_parallel_voting,
)

# -- helpers ------------------------------------------------------------------------------


class ScriptedLLM:
    """An async LLM that answers with canned replies in turn and records what it was sent."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[list[dict[str, Any]]] = []

    async def __call__(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append([dict(m) for m in messages])
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return {"content": reply if isinstance(reply, str) else json.dumps(reply)}


def tool_call(name: str, **params: Any) -> dict[str, Any]:
    return {"action": name, "params": params}


def finish(answer: str) -> dict[str, Any]:
    return {"action": "finish", "answer": answer}


def registry_with_add() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register_function("add", lambda a, b: a + b, "Add two numbers")
    return registry


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


# -- tools --------------------------------------------------------------------------------


class EchoParams(BaseModel):
    text: str = Field(description="what to echo")
    times: int = 1


class EchoTool(Tool[EchoParams]):
    name = "echo"
    description = "Echo a text"
    params_schema = EchoParams

    async def execute(self, params: EchoParams) -> dict[str, Any]:
        return {"success": True, "result": params.text * params.times}


async def test_registry_runs_tools_and_reports_failures() -> None:
    registry = registry_with_add()
    registry.register(EchoTool())

    async def boom() -> None:
        raise RuntimeError("no luck")

    registry.register(SimpleTool("boom", "Fails", boom))
    assert await registry.execute("add", {"a": 2, "b": 3}) == {"success": True, "result": 5}
    assert await registry.execute("echo", {"text": "ab", "times": 2}) == {"success": True, "result": "abab"}
    assert await registry.execute("nope", {}) == {"success": False, "error": "Unknown tool: nope"}
    assert await registry.execute("boom", {}) == {"success": False, "error": "no luck"}
    invalid = await registry.execute("echo", {"times": "x"})
    assert invalid["success"] is False
    assert "text" in invalid["error"]
    missing = await registry.execute("add", {"a": 1})
    assert missing["success"] is False
    assert missing["error"].endswith("missing 1 required positional argument: 'b'")
    with pytest.raises(ValueError, match="Tool 'add' already registered"):
        registry.register_function("add", print, "again")
    with pytest.raises(ValueError, match="name"):
        SimpleTool("", "nameless", print)
    assert registry.get_tool_names() == ["add", "echo", "boom"]
    assert len(registry) == 3
    assert "echo" in registry
    assert "nope" not in registry


def test_tool_prompts_describe_the_tools() -> None:
    registry = registry_with_add()
    registry.register(EchoTool())
    markdown = registry.get_tools_prompt()
    assert markdown.startswith("## Available Tools\n")
    assert "**add**: Add two numbers" in markdown
    assert "    - text (string): what to echo" in markdown
    schemas = json.loads(registry.get_tools_prompt("json"))
    assert schemas[0] == {"name": "add", "description": "Add two numbers"}
    assert schemas[1]["parameters"]["required"] == ["text"]


async def test_simple_tool_validates_with_its_schema() -> None:
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "ok"

    tool = SimpleTool("echo", "Echo", record, EchoParams)
    assert await tool.execute({"text": "a"}) == {"success": True, "result": "ok"}
    assert seen == [{"text": "a", "times": 1}]


# -- the ReAct loop ---------------------------------------------------------------------


async def test_react_agent_calls_a_tool_then_finishes() -> None:
    llm = ScriptedLLM(tool_call("add", a=2, b=3), finish("5"))
    result = await create_react_agent(registry_with_add(), llm).run_interactive_async(user("2+3?"))
    assert result["final_answer"] == result["output"] == "5"
    assert result["iteration"] == 1
    assert result["last_tool_result"] == {"success": True, "result": 5}
    assert result["pending_tool_call"] == tool_call("add", a=2, b=3)
    assert "_exit" not in result
    assert [m["content"] for m in result["messages"]] == [
        "2+3?",
        json.dumps(tool_call("add", a=2, b=3)),
        'Tool \'add\' result: {"success": true, "result": 5}',
        "FINISH: 5",
    ]
    system = llm.calls[0][0]
    assert system["role"] == "system"
    assert "**add**: Add two numbers" in system["content"]
    assert '"action": "finish"' in system["content"]
    assert llm.calls[1][1:] == result["messages"][:3]


async def test_malformed_replies_are_retried_then_fail() -> None:
    llm = ScriptedLLM("I think I should add", "[1, 2]", "```json\nnot json\n```")
    result = await create_react_agent(registry_with_add(), llm).run_interactive_async(user("hi"))
    assert result["error"] == "Failed to get valid response from LLM"
    assert result["think_retries"] == 3
    assert result["output"] == "No answer provided"
    assert "final_answer" not in result
    assert len(llm.calls) == 3
    assert [m["role"] for m in result["messages"]] == ["user", *["assistant", "user"] * 3]
    assert "JSON" in result["messages"][2]["content"]


async def test_a_fenced_reply_after_a_bad_one_recovers() -> None:
    llm = ScriptedLLM("oops", "Sure:\n```json\n" + json.dumps(finish("done")) + "\n```")
    result = await create_react_agent(registry_with_add(), llm).run_interactive_async(user("hi"))
    assert result["final_answer"] == "done"
    assert result["think_retries"] == 0


async def test_unknown_tool_is_observed_by_the_llm() -> None:
    llm = ScriptedLLM(tool_call("multiply", a=2, b=3), finish("cannot multiply"))
    result = await create_react_agent(registry_with_add(), llm).run_interactive_async(user("2*3?"))
    assert result["last_tool_result"] == {"success": False, "error": "Unknown tool: multiply"}
    assert "Unknown tool: multiply" in llm.calls[1][-1]["content"]
    assert result["final_answer"] == "cannot multiply"


async def test_max_iterations_stops_the_loop() -> None:
    llm = ScriptedLLM(tool_call("add", a=1, b=1))  # never finishes
    result = await create_react_agent(registry_with_add(), llm, max_iterations=2).run_interactive_async(user("go"))
    assert result["error"] == "Maximum iterations reached"
    assert result["iteration"] == 2
    assert result["output"] == "No answer provided"
    assert len(llm.calls) == 2
    # shared["max_iterations"] (KayGraph's knob) wins over the factory's
    shared = {**user("go"), "max_iterations": 3}
    result = await create_react_agent(registry_with_add(), llm, max_iterations=2).run_interactive_async(shared)
    assert result["iteration"] == 3


async def test_prebuilt_agent_keeps_the_tools_and_reply_format() -> None:
    llm = ScriptedLLM(finish("ok"))
    await create_coding_agent(registry_with_add(), llm, workspace_dir="/srv/app").run_async(user("fix it"))
    system = llm.calls[0][0]["content"]
    assert "/srv/app" in system
    assert "**add**" in system
    assert '"action": "finish"' in system
    llm = ScriptedLLM(finish("ok"))
    await create_react_agent(registry_with_add(), llm, system_prompt="Only this.").run_async(user("x"))
    assert llm.calls[0][0] == {"role": "system", "content": "Only this."}


# -- file tools ---------------------------------------------------------------------------


async def test_file_tools_under_a_root(tmp_path: Path) -> None:
    tools = create_file_tools(tmp_path)
    assert await tools.execute("write_file", {"path": "notes.txt", "content": "héllo"}) == {
        "success": True,
        "result": "Wrote 6 bytes to notes.txt",
    }
    (tmp_path / "sub").mkdir()
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "héllo"
    assert await tools.execute("read_file", {"path": "notes.txt"}) == {"success": True, "result": "héllo"}
    assert await tools.execute("list_files", {}) == {"success": True, "result": ["notes.txt", "sub"]}
    outside = await tools.execute("read_file", {"path": "../etc/passwd"})
    assert outside == {"success": False, "error": "'../etc/passwd' is outside the tools' root directory"}
    missing = await tools.execute("read_file", {"path": "nope.txt"})
    assert missing["success"] is False
    assert "No such file" in missing["error"]


async def test_file_tools_without_a_root_take_paths_as_given(tmp_path: Path) -> None:
    tools = create_file_tools()
    target = tmp_path / "a.txt"
    await tools.execute("write_file", {"path": str(target), "content": "x"})
    assert await tools.execute("read_file", {"path": str(target)}) == {"success": True, "result": "x"}
    assert await tools.execute("list_files", {"directory": str(tmp_path)}) == {"success": True, "result": [str(target)]}


# -- the patterns -------------------------------------------------------------------------


async def test_prompt_chain_feeds_each_step_and_gates() -> None:
    llm = ScriptedLLM("draft text", "texto")
    chain = create_prompt_chain(
        [{"name": "draft", "prompt": "Write"}, {"name": "translate", "prompt": "Translate"}], llm
    )
    shared: dict[str, Any] = {"chain_output": "topic"}
    await chain.run_async(shared)
    assert shared["chain_output"] == "texto"
    assert shared["chain_history"] == [
        {"step": "draft", "output": "draft text"},
        {"step": "translate", "output": "texto"},
    ]
    assert llm.calls[1] == [{"role": "system", "content": "Translate"}, {"role": "user", "content": "draft text"}]

    llm = ScriptedLLM("short")
    steps: list[dict[str, Any]] = [
        {"name": "draft", "prompt": "Write", "gate": lambda out: len(out) > 10},
        {"name": "more", "prompt": "x"},
    ]
    shared = {"chain_output": "topic"}
    assert await create_prompt_chain(steps, llm).run_async(shared) == "error"  # and no "graph ends" warning
    assert shared["error"] == "Validation failed at step: draft"
    assert len(llm.calls) == 1
    with pytest.raises(ValueError, match="at least one step"):
        create_prompt_chain([], llm)


class Handler(AsyncNode[Any, Any]):
    def __init__(self, name: str) -> None:
        super().__init__(node_id=name)
        self.name = name

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared["handler"] = self.name


async def test_router_follows_the_matching_category() -> None:
    llm = ScriptedLLM("  Technical.  ")
    router = create_router(llm, {"billing": Handler("billing"), "technical": Handler("technical")})
    shared = {"user_input": "the API is down"}
    assert await router.run_async(shared) is None
    assert shared == {"user_input": "the API is down", "route_category": "technical", "handler": "technical"}
    assert "- billing\n- technical" in llm.calls[0][0]["content"]
    assert llm.calls[0][1] == {"role": "user", "content": "the API is down"}

    shared = {"user_input": "hello"}
    with pytest.warns(UserWarning, match="(?i)graph ends"):
        await create_router(ScriptedLLM("weather"), {"billing": Handler("billing")}).run_async(shared)
    assert "route_category" not in shared


async def test_parallel_sectioning_and_voting() -> None:
    async def llm(messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"content": f"{messages[0]['content']}:{messages[1]['content']}"}

    tasks = [{"system": "bias", "input": "t"}, {"system": "tone", "input": "t"}]
    assert await run_parallel_sectioning(llm, tasks) == [{"content": "bias:t"}, {"content": "tone:t"}]

    votes = ScriptedLLM("no", "yes", " yes ", "no", "yes")
    result = await run_parallel_voting(votes, {"system": "ok?", "input": "x"}, num_samples=5)
    assert result["count"] == 5
    assert [s["content"] for s in result["samples"]] == ["no", "yes", " yes ", "no", "yes"]
    assert result["aggregated"] == {"content": "yes"}
    with pytest.raises(ValueError, match="num_samples"):
        await run_parallel_voting(votes, {"system": "ok?", "input": "x"}, num_samples=0)


class Worker(Node[Any, Any]):
    def prep(self, shared: dict[str, Any]) -> Any:
        return (self.params["worker"], self.params["task"], shared["current_task"])

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
        if prep_res[1] == "explode":
            raise RuntimeError("kaboom")
        shared["worker_result"] = "/".join(prep_res)
        return "done"


async def test_orchestrator_runs_the_workers_of_its_plan() -> None:
    plan = [
        {"worker": "coder", "task": "edit"},
        {"worker": "ghost", "task": "haunt"},
        {"worker": "tester", "task": "t"},
    ]
    llm = ScriptedLLM("```json\n" + json.dumps(plan) + "\n```")
    shared: dict[str, Any] = {"user_input": "ship it"}
    graph = create_orchestrator_workers(llm, {"coder": Worker(), "tester": Worker()})
    assert await graph.run_async(shared) == "complete"
    assert shared["orchestrator_plan"] == plan
    assert shared["orchestrator_results"] == [
        {"worker": "coder", "task": "edit", "success": True, "action": "done", "result": "coder/edit/edit"},
        {"worker": "ghost", "task": "haunt", "success": False, "error": "Unknown worker: ghost"},
        {"worker": "tester", "task": "t", "success": True, "action": "done", "result": "tester/t/t"},
    ]
    assert "current_task" not in shared
    assert "- coder\n- tester" in llm.calls[0][0]["content"]


async def test_orchestrator_reports_a_bad_plan_or_a_failed_worker() -> None:
    shared: dict[str, Any] = {}
    assert await create_orchestrator_workers(ScriptedLLM("no plan"), {}).run_async(shared) == "error"
    assert "Expecting value" in shared["error"]
    shared = {}
    assert await create_orchestrator_workers(ScriptedLLM('{"worker": "x"}'), {}).run_async(shared) == "error"
    assert shared["error"] == 'the plan must be a JSON array of {"worker", "task"} objects'
    plan = [{"worker": "w", "task": "explode"}, {"worker": "w", "task": "never"}]
    shared = {}
    assert (
        await create_orchestrator_workers(ScriptedLLM(json.dumps(plan)), {"w": Worker()}).run_async(shared) == "error"
    )
    assert shared["error"] == "w: kaboom"
    assert len(shared["orchestrator_results"]) == 1


async def test_evaluator_optimizer_refines_until_accepted() -> None:
    llm = ScriptedLLM("draft 1", "Score: 4\nToo vague.", "draft 2", "**Score:** 9/10, good.")
    graph = create_evaluator_optimizer(llm, "Write a haiku", "Imagery")
    shared = await graph.run_interactive_async({"user_input": "autumn"})
    assert shared["generated_response"] == "draft 2"
    assert shared["evaluation_score"] == 9
    assert shared["iteration"] == 2
    assert "_exit" not in shared
    assert len(llm.calls) == 4
    assert llm.calls[2][1:] == [
        {"role": "user", "content": "autumn"},
        {"role": "assistant", "content": "draft 1"},
        {"role": "user", "content": llm.calls[2][3]["content"]},
    ]
    assert "Too vague." in llm.calls[2][3]["content"]
    assert "Imagery" in llm.calls[1][0]["content"]
    assert llm.calls[1][1]["content"].endswith("draft 1")

    stubborn = ScriptedLLM("draft", "Score: 2")
    graph = create_evaluator_optimizer(stubborn, "Write", "Anything", max_iterations=2)
    assert await graph.run_async({"user_input": "x"}) == "accept"  # and no "graph ends" warning
    assert len(stubborn.calls) == 4
