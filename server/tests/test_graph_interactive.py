"""Tests for `graphwire.graph.interactive`: graphs run in a loop, and terminal input nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

# isort: split
from graphwire.graph import (
    AsyncInteractiveGraph,
    AsyncNode,
    InteractiveGraph,
    InteractiveNode,
    Node,
    UserInputNode,
)

# -- helpers ------------------------------------------------------------------------------


class Tick(Node[Any, Any]):
    """Counts iterations, records the keys it finds, leaves scratch keys, exits at ``exit_after``."""

    def __init__(self, exit_after: int | None = None, exit_key: str = "_exit") -> None:
        super().__init__(node_id="tick")
        self.exit_after = exit_after
        self.exit_key = exit_key

    def prep(self, shared: dict[str, Any]) -> list[str]:
        return sorted(shared)

    def post(self, shared: dict[str, Any], prep_res: list[str], exec_res: Any) -> None:
        shared["counter"] = shared.get("counter", 0) + 1
        shared.setdefault("seen", []).append(prep_res)
        shared["_scratch"] = shared.get("_scratch", 0) + 1
        if self.exit_after is not None and shared["counter"] >= self.exit_after:
            shared[self.exit_key] = True
            shared["exit_reason"] = f"count {shared['counter']}"


class AsyncTick(AsyncNode[Any, Any]):
    def __init__(self, exit_after: int | None = None) -> None:
        super().__init__(node_id="async_tick")
        self.exit_after = exit_after

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        await asyncio.sleep(0)
        shared["counter"] = shared.get("counter", 0) + 1
        shared["_scratch"] = shared.get("_scratch", 0) + 1
        if self.exit_after is not None and shared["counter"] >= self.exit_after:
            shared["_exit"] = True


def scripted(monkeypatch: pytest.MonkeyPatch, *lines: str | BaseException) -> list[str]:
    """Make ``input()`` return ``lines`` in turn (or raise them); returns the prompts shown."""
    prompts: list[str] = []
    answers: Iterator[str | BaseException] = iter(lines)

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        answer = next(answers)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr("builtins.input", fake_input)
    return prompts


# -- InteractiveGraph ---------------------------------------------------------------------


def test_loops_until_a_node_sets_exit_and_removes_the_flag() -> None:
    shared: dict[str, Any] = {}
    result = InteractiveGraph(Tick(exit_after=3)).run_interactive(shared)
    assert result is shared  # the caller's dict, even an empty one
    assert result["counter"] == 3
    assert result["exit_reason"] == "count 3"
    assert "_exit" not in result


def test_exit_on_the_first_iteration_runs_once() -> None:
    assert InteractiveGraph(Tick(exit_after=1)).run_interactive()["counter"] == 1


def test_max_iterations_stops_a_graph_that_never_exits() -> None:
    graph = InteractiveGraph(Tick())
    assert graph.run_interactive({}, max_iterations=5)["counter"] == 5
    assert graph.run_interactive({}, max_iterations=0) == {}


def test_each_iteration_calls_run_on_the_same_store() -> None:
    graph = InteractiveGraph(Tick(exit_after=2))
    calls: list[dict[str, Any]] = []
    run = graph.run

    def spy(shared: dict[str, Any]) -> Any:
        calls.append(shared)
        return run(shared)

    graph.run = spy  # type: ignore[method-assign]
    shared: dict[str, Any] = {"start": True}
    graph.run_interactive(shared)
    assert len(calls) == 2
    assert all(call is shared for call in calls)


def test_transient_keys_are_cleared_between_iterations_and_at_the_end() -> None:
    result = InteractiveGraph(Tick(exit_after=3)).run_interactive({"_given": 1})
    # iteration 1 saw the caller's `_given`; the next ones saw no `_` key at all
    assert result["seen"] == [["_given"], ["counter", "seen"], ["counter", "seen"]]
    assert "_scratch" not in result


def test_clear_transient_false_keeps_underscore_keys() -> None:
    result = InteractiveGraph(Tick(exit_after=2)).run_interactive({}, clear_transient=False)
    assert result["_scratch"] == 2
    assert "_exit" not in result


def test_a_custom_exit_key() -> None:
    result = InteractiveGraph(Tick(exit_after=2, exit_key="stop")).run_interactive({}, exit_key="stop")
    assert result["counter"] == 2
    assert "stop" not in result


def test_the_whole_graph_runs_each_iteration() -> None:
    class Router(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
            shared["iterations"] = shared.get("iterations", 0) + 1
            if shared["iterations"] >= 3:
                shared["_exit"] = True
            return "process"

    class Process(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["processed"] = shared.get("processed", 0) + 1

    router = Router()
    router - "process" >> Process()
    result = InteractiveGraph(router).run_interactive({}, max_iterations=10)
    assert (result["iterations"], result["processed"]) == (3, 3)


def test_an_error_ends_the_loop() -> None:
    class Boom(Node[Any, Any]):
        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared["n"] = shared.get("n", 0) + 1
            if shared["n"] == 2:
                raise RuntimeError("boom")

    shared: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="boom"):
        InteractiveGraph(Boom()).run_interactive(shared)
    assert shared == {"n": 2}


# -- AsyncInteractiveGraph -------------------------------------------------------------------


async def test_async_loop_exits_and_clears() -> None:
    shared: dict[str, Any] = {}
    result = await AsyncInteractiveGraph(AsyncTick(exit_after=3)).run_interactive_async(shared)
    assert result is shared
    assert result == {"counter": 3}


async def test_async_max_iterations_and_clear_transient_false() -> None:
    graph = AsyncInteractiveGraph(AsyncTick())
    assert await graph.run_interactive_async({}, max_iterations=4) == {"counter": 4}
    kept = await AsyncInteractiveGraph(AsyncTick(exit_after=2)).run_interactive_async(None, clear_transient=False)
    assert kept == {"counter": 2, "_scratch": 2}


async def test_async_loop_runs_sync_nodes_too() -> None:
    result = await AsyncInteractiveGraph(Tick(exit_after=2)).run_interactive_async()
    assert result["counter"] == 2


# -- InteractiveNode ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("/help", {"type": "command", "command": "help", "args": ""}),
        ("/add file.py main.py", {"type": "command", "command": "add", "args": "file.py main.py"}),
        ("/add   spaced\targs", {"type": "command", "command": "add", "args": "spaced\targs"}),
        ("/", {"type": "command", "command": "", "args": ""}),
        ("Hello world", {"type": "message", "content": "Hello world"}),
        ("", {"type": "message", "content": ""}),
    ],
)
def test_parse_command(text: str, parsed: dict[str, Any]) -> None:
    assert InteractiveNode().parse_command(text) == parsed


@pytest.mark.parametrize("command", ["exit", "quit", "q"])
def test_exit_commands_set_the_exit_flag(command: str) -> None:
    shared: dict[str, Any] = {"_last_parsed_input": {"type": "command", "command": command, "args": ""}}
    assert InteractiveNode().handle_exit_command(shared) is True
    assert shared["_exit"] is True


@pytest.mark.parametrize(
    "shared",
    [
        {"_last_parsed_input": {"type": "command", "command": "help"}},
        {"_last_parsed_input": {"type": "message", "content": "exit"}},
        {"_last_parsed_input": None},
        {},
    ],
)
def test_anything_else_is_not_an_exit(shared: dict[str, Any]) -> None:
    assert InteractiveNode().handle_exit_command(shared) is False
    assert "_exit" not in shared


def test_custom_exit_commands() -> None:
    shared: dict[str, Any] = {"_last_parsed_input": {"type": "command", "command": "bye"}}
    assert InteractiveNode().handle_exit_command(shared, ["bye"]) is True
    shared = {"_last_parsed_input": {"type": "command", "command": "exit"}}
    assert InteractiveNode().handle_exit_command(shared, ["bye"]) is False


def test_get_user_input_strips_and_shows_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = scripted(monkeypatch, "  hi there \n")
    assert InteractiveNode().get_user_input("you: ") == "hi there"
    assert prompts == ["you: "]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), EOFError()])
def test_ctrl_c_and_ctrl_d_read_as_exit(monkeypatch: pytest.MonkeyPatch, interrupt: BaseException) -> None:
    scripted(monkeypatch, interrupt)
    assert UserInputNode().get_user_input() == "/exit"


# -- UserInputNode ------------------------------------------------------------------------------


def test_user_input_node_defaults() -> None:
    node = UserInputNode()
    assert node.node_id == "user_input"
    assert node.prep({}) == {"prompt": "> "}
    assert UserInputNode(prompt="Custom> ").prep({}) == {"prompt": "Custom> "}
    assert UserInputNode(prompt="Custom> ").prep({"_prompt": "Dynamic> "}) == {"prompt": "Dynamic> "}
    assert UserInputNode(node_id="ask").node_id == "ask"


def test_user_input_node_routes_commands_messages_and_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted(monkeypatch, "/add a.py b.py", "Hello world", "/exit")
    node = UserInputNode()
    shared: dict[str, Any] = {}
    assert node.run(shared) == "command"
    assert (shared["last_command"], shared["command_args"]) == ("add", "a.py b.py")
    assert shared["_last_parsed_input"] == {"type": "command", "command": "add", "args": "a.py b.py"}
    assert node.run(shared) == "message"
    assert shared["user_message"] == "Hello world"
    assert node.run(shared) is None
    assert shared["_exit"] is True
    assert shared["last_command"] == "add"  # an exit does not overwrite the last command


def test_a_chat_loop_until_quit(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts = scripted(monkeypatch, "hello", "/help me", "/quit")

    class Log(Node[Any, Any]):
        def __init__(self, key: str) -> None:
            super().__init__(node_id=key)
            self.key = key

        def prep(self, shared: dict[str, Any]) -> Any:
            return shared.get("_last_parsed_input")

        def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
            shared.setdefault(self.key, []).append(prep_res)
            shared["_prompt"] = "again> "

    ask = UserInputNode()
    ask - "message" >> Log("messages")
    ask - "command" >> Log("commands")
    # /quit returns action None, which has no successor here: KayGraph warns that the graph ends.
    with pytest.warns(UserWarning, match="Graph ends"):
        result = InteractiveGraph(ask).run_interactive()
    assert result["messages"] == [{"type": "message", "content": "hello"}]
    assert result["commands"] == [{"type": "command", "command": "help", "args": "me"}]
    assert prompts == ["> ", "> ", "> "]  # `_prompt` is transient: cleared before the next turn
