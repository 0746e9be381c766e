"""The seam between the workflow engine and whoever runs it.

The engine knows nothing of sockets. A node that wants to talk to the outside world
(`WebSocketNode.send_update`, `WebSocketNode.wait_for_input`) and the graph that
reports node status both go through the `RunContext` found in the `run_context`
context variable. The gateway sets it inside the run's asyncio task before awaiting
`graph.run_async(shared)`; tasks spawned by the engine (parallel batches) copy the
context, so every node of the run sees the same `RunContext`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["InputTimeout", "RunContext", "run_context", "use_run_context"]


class InputTimeout(TimeoutError):
    """Raised by a `RunContext` when nobody answered an input request in time.

    It fails the run: the engine never retries it, never hands it to
    `exec_fallback` and never offers it to `on_error`, because asking the same
    human again with the same timeout would only fail again, later. It subclasses
    `TimeoutError` so that generic ``except TimeoutError`` code also sees it.
    """


class RunContext(Protocol):
    """What a run offers its nodes: an event sink and a way to ask a human.

    `emit` backs ``node_update`` / ``node_event`` and the other per-node server
    messages; `request_input` backs ``input_request`` and resolves with the data of
    the first valid ``node_input`` (or raises `InputTimeout`).
    """

    workflow_id: str

    async def emit(self, node_id: str, update_type: str, data: Any) -> None:
        """Publish an update of ``update_type`` from node ``node_id``."""
        ...

    async def request_input(
        self,
        node_id: str,
        prompt: str,
        options: list[str] | None,
        timeout: float | None,
    ) -> dict[str, Any]:
        """Ask for input on behalf of ``node_id`` and wait for the answer."""
        ...


run_context: ContextVar[RunContext | None] = ContextVar("graphwire_run_context", default=None)
"""The `RunContext` of the run executing in the current asyncio task, if any."""


@contextmanager
def use_run_context(ctx: RunContext | None) -> Iterator[RunContext | None]:
    """Make ``ctx`` the current `RunContext` for the duration of the block.

    The previous value is restored on exit, even on error, so runs never see each
    other's context.
    """
    token = run_context.set(ctx)
    try:
        yield ctx
    finally:
        run_context.reset(token)
