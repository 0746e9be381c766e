"""`WebSocketNode`: an async node that can report progress and ask a human.

It talks only to the current `RunContext` (see `_context`), never to a socket, so
the same node runs under the gateway, in tests with a fake context, and in a plain
script with no context at all.
"""

from __future__ import annotations

from typing import Any

from ._context import run_context
from ._node import AsyncNode, ExecT, PrepT

__all__ = ["WebSocketNode"]


class WebSocketNode(AsyncNode[PrepT, ExecT]):
    """An `AsyncNode` with `send_update` and `wait_for_input`.

    Without a `RunContext`, updates are collected in ``self.updates`` as
    ``(update_type, data)`` pairs (fresh for every run of a graph) so the node
    still works in scripts and tests; `wait_for_input` cannot work there and says
    so.
    """

    def __init__(self, max_retries: int = 1, wait: float = 0, node_id: str | None = None) -> None:
        super().__init__(node_id=node_id, max_retries=max_retries, wait=wait)
        self.updates: list[tuple[str, Any]] = []

    async def send_update(self, update_type: str, data: Any = None) -> None:
        """Publish an update (``progress``, ``token``, ``result``, or the node's own).

        The gateway maps it to the matching server message for the run's
        subscribers, with ``data`` as its payload: a ``token``'s text (a string, as
        the seed sends it), a ``progress`` dict, or any JSON value.
        """
        payload = data if data is not None else {}
        ctx = run_context.get()
        if ctx is None:
            self.updates.append((update_type, payload))
            return
        await ctx.emit(self.node_id, update_type, payload)

    async def wait_for_input(
        self,
        prompt: str = "",
        options: list[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Ask for human input (``input_request``) and return the answer's data.

        Raises `InputTimeout` (from the context) when ``timeout`` seconds pass with
        no answer; the engine lets it fail the run.
        """
        ctx = run_context.get()
        if ctx is None:
            raise RuntimeError(
                f"{self.node_id}: wait_for_input needs a RunContext; run the graph"
                " through the gateway or inside `use_run_context(ctx)`"
            )
        return await ctx.request_input(self.node_id, prompt, options, timeout)

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self.updates = []
