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
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["InputTimeout", "RunContext", "current_node", "failed_node", "in_node", "run_context", "use_run_context"]


class InputTimeout(TimeoutError):
    """Raised when nobody answered an input request in time and the run must fail.

    `WebSocketNode.wait_for_input` returns ``None`` on a timeout (the seed's reading);
    a node that cannot go on without the answer raises `InputTimeout` itself, as the
    built-in ``approval`` and ``ticker`` do, and the gateway fails the run with
    ``input_timeout``. The engine never retries it, never hands it to `exec_fallback`
    and never offers it to `on_error`, because asking the same human again with the same
    timeout would only fail again, later. It subclasses `TimeoutError` so that generic
    ``except TimeoutError`` code also sees it.
    """


class RunContext(Protocol):
    """What a run offers its nodes: an event sink and a way to ask a human.

    `emit` backs ``node_update`` / ``node_event`` and the other per-node server
    messages. An ``input_request`` is opened by `open_input` (sent at once, and
    answerable from then on), waited on by `wait_input` and closed by `close_input`;
    `request_input` is the three in one. A wait returns the data of the first valid
    ``node_input``, or ``None`` when ``timeout`` seconds pass first (a context may
    instead raise `InputTimeout` to fail the run). A context written before
    `open_input` existed (`emit` and `request_input` only) still works: `WebSocketNode`
    then sends an ``approval_request`` as a plain update.
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
    ) -> dict[str, Any] | None:
        """Ask for input on behalf of ``node_id``, wait for the answer, close the request."""
        ...

    async def open_input(self, node_id: str, prompt: str, options: list[str] | None) -> str:
        """Send an ``input_request`` for ``node_id`` now and return its ``request_id``.

        The request is open (in snapshots, answerable) until `close_input`; an answer
        that arrives before `wait_input` is kept for it.
        """
        ...

    async def wait_input(self, request_id: str, timeout: float | None) -> dict[str, Any] | None:
        """Wait for the answer of an open request (at once if it came already), then close it."""
        ...

    def close_input(self, request_id: str) -> None:
        """Close a request nobody will wait on; unknown or closed ids are ignored."""
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


current_node: ContextVar[str | None] = ContextVar("graphwire_current_node", default=None)
"""The ``node_id`` of the node running in the current task or thread, if any.

For logs (``graphwire.logs`` adds it to every record): a worker thread running a sync
node and the tasks of a parallel batch copy it, as they copy `run_context`.
"""

_FAILED_NODE = "_graphwire_failed_node"


@contextmanager
def in_node(node_id: str) -> Iterator[None]:
    """Make ``node_id`` the `current_node` while a node runs; mark an exception it raises.

    The exception's mark (`failed_node`) is how a record logged further out, once the
    node is no longer running (the run's "failed" line), still names the node that
    raised: the innermost one, for a node of a nested graph.
    """
    token = current_node.set(node_id)
    try:
        yield
    except Exception as exc:
        if getattr(exc, _FAILED_NODE, None) is None:
            with suppress(AttributeError, TypeError):  # an exception type without a __dict__
                setattr(exc, _FAILED_NODE, node_id)
        raise
    finally:
        current_node.reset(token)


def failed_node(exc: BaseException) -> str | None:
    """The ``node_id`` of the node that raised ``exc`` (see `in_node`), if a node did."""
    node_id = getattr(exc, _FAILED_NODE, None)
    return node_id if isinstance(node_id, str) else None
