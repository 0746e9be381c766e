"""Graphs that run again and again until told to stop (KayGraph's ``interactive``).

`InteractiveGraph.run_interactive` runs the whole graph once per iteration on the same
shared store until a node sets ``shared["_exit"]`` (the ``exit_key``) or
``max_iterations`` runs are done; the exit flag is removed before the store is returned.
By convention keys that start with ``_`` are per-iteration scratch: with
``clear_transient`` they are removed after every iteration that does not exit, and once
more at the end. `AsyncInteractiveGraph` is the same loop around ``run_async``.

`InteractiveNode` and `UserInputNode` are the terminal side: read a line, tell a
``/command args`` from a plain message, and stop on ``/exit``, ``/quit`` or ``/q``.
"""

from __future__ import annotations

from typing import Any

from ._config import Config
from ._graph import AsyncGraph, Graph
from ._node import Action, BaseNode, Shared

__all__ = ["AsyncInteractiveGraph", "InteractiveGraph", "InteractiveNode", "UserInputNode"]

EXIT_KEY = "_exit"
EXIT_COMMANDS = ("exit", "quit", "q")


def _clear_transient(shared: Shared, exit_key: str) -> None:
    for key in [key for key in shared if key.startswith("_") and key != exit_key]:
        del shared[key]


def _finish(shared: Shared, exit_key: str, clear_transient: bool) -> Shared:
    if clear_transient:
        _clear_transient(shared, exit_key)
    shared.pop(exit_key, None)
    return shared


class InteractiveGraph(Graph):
    """A `Graph` run in a loop by `run_interactive` (a chat, a REPL, a polling job)."""

    def __init__(
        self,
        start_node: BaseNode[Any, Any] | None = None,
        config: Config | None = None,
        *,
        node_id: str | None = None,
    ) -> None:
        super().__init__(start_node, config, node_id=node_id)

    def run_interactive(
        self,
        shared: Shared | None = None,
        max_iterations: int | None = None,
        exit_key: str = EXIT_KEY,
        clear_transient: bool = True,
    ) -> Shared:
        """Call ``self.run(shared)`` until ``shared[exit_key]`` is truthy or the limit is hit.

        Returns the shared store (the one passed in, or a new dict). An exception from an
        iteration propagates, leaving the store as that iteration left it.
        """
        if shared is None:
            shared = {}
        done = 0
        while max_iterations is None or done < max_iterations:
            self.run(shared)
            done += 1
            if shared.get(exit_key):
                self.logger.info("%s: exit requested after %d iteration(s)", self.node_id, done)
                break
            if clear_transient:
                _clear_transient(shared, exit_key)
        return _finish(shared, exit_key, clear_transient)


class AsyncInteractiveGraph(AsyncGraph):
    """An `AsyncGraph` run in a loop by `run_interactive_async`, with the same rules."""

    def __init__(
        self,
        start_node: BaseNode[Any, Any] | None = None,
        config: Config | None = None,
        *,
        node_id: str | None = None,
    ) -> None:
        super().__init__(start_node, config, node_id=node_id)

    async def run_interactive_async(
        self,
        shared: Shared | None = None,
        max_iterations: int | None = None,
        exit_key: str = EXIT_KEY,
        clear_transient: bool = True,
    ) -> Shared:
        """Await ``self.run_async(shared)`` until ``shared[exit_key]`` or the limit; see `InteractiveGraph`."""
        if shared is None:
            shared = {}
        done = 0
        while max_iterations is None or done < max_iterations:
            await self.run_async(shared)
            done += 1
            if shared.get(exit_key):
                self.logger.info("%s: exit requested after %d iteration(s)", self.node_id, done)
                break
            if clear_transient:
                _clear_transient(shared, exit_key)
        return _finish(shared, exit_key, clear_transient)


class InteractiveNode(BaseNode[Any, Any]):
    """A node that talks to a person at a terminal: read a line, parse it, spot an exit."""

    def get_user_input(self, prompt: str = "> ") -> str:
        """A line typed by the user, stripped; Ctrl+C or Ctrl+D reads as ``"/exit"``."""
        try:
            return input(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            print()  # end the prompt's line before whatever prints next
            return "/exit"

    def parse_command(self, user_input: str) -> dict[str, Any]:
        """``"/add a b"`` → ``{"type": "command", "command": "add", "args": "a b"}``; else a message.

        A message is ``{"type": "message", "content": user_input}``; a lone ``"/"`` is the
        command ``""``.
        """
        if not user_input.startswith("/"):
            return {"type": "message", "content": user_input}
        words = user_input[1:].split(maxsplit=1)
        return {
            "type": "command",
            "command": words[0] if words else "",
            "args": words[1] if len(words) > 1 else "",
        }

    def handle_exit_command(self, shared: Shared, exit_commands: list[str] | None = None) -> bool:
        """Whether ``shared["_last_parsed_input"]`` is an exit command; if so, sets ``shared["_exit"]``.

        The exit commands are ``exit``, ``quit`` and ``q`` unless ``exit_commands`` is given.
        """
        parsed = shared.get("_last_parsed_input")
        if not isinstance(parsed, dict) or parsed.get("type") != "command":
            return False
        if parsed.get("command") not in (exit_commands or EXIT_COMMANDS):
            return False
        shared[EXIT_KEY] = True
        return True


class UserInputNode(InteractiveNode):
    """Reads one line and routes on it: action ``"command"`` or ``"message"``, ``None`` on exit.

    The prompt is ``shared["_prompt"]`` when set, else ``prompt``. `post` keeps the parsed
    input in ``shared["_last_parsed_input"]`` and sets ``last_command`` and
    ``command_args`` (a command) or ``user_message`` (a message); an exit command sets
    ``shared["_exit"]`` instead. The default id is ``user_input``.
    """

    def __init__(self, prompt: str = "> ", node_id: str | None = None) -> None:
        super().__init__(node_id or "user_input")
        self.prompt = prompt

    def prep(self, shared: Shared) -> dict[str, Any]:
        """The prompt to show."""
        return {"prompt": shared.get("_prompt", self.prompt)}

    def exec(self, prep_res: dict[str, Any]) -> dict[str, Any]:
        """Read and parse one line."""
        return self.parse_command(self.get_user_input(prep_res["prompt"]))

    def post(self, shared: Shared, prep_res: dict[str, Any], exec_res: dict[str, Any]) -> Action:
        """Store the input and return the action for its kind."""
        shared["_last_parsed_input"] = exec_res
        if self.handle_exit_command(shared):
            return None
        if exec_res["type"] == "command":
            shared["last_command"] = exec_res["command"]
            shared["command_args"] = exec_res["args"]
            return "command"
        shared["user_message"] = exec_res["content"]
        return "message"
