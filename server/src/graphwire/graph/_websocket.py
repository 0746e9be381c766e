"""`WebSocketNode`: an async node that can report progress and ask a human.

It talks only to the current `RunContext` (see `_context`), never to a socket, so
the same node runs under the gateway, in tests with a fake context, and in a plain
script with no context at all.

It is a gateway class, not KayGraph's, so its defaults serve the seed's nodes, which
define only ``exec_async`` (see ``examples/seed_nodes.py``):

- `prep_async` returns the run's input, ``shared["input"]`` (the gateway sets it: the
  whole params dict, or the one param the workflow's registration names);
- `post_async` stores a non-``None`` exec result as ``shared["result"]`` (a dict as it
  is, anything else as ``{"value": ...}``), unless a node's own ``post`` set one;
- ``send_update("approval_request" | "input_request", {"message" | "prompt", "options"})``
  opens an answerable ``input_request`` at once, and the node's next `wait_for_input`
  without a prompt of its own waits on it.
"""

from __future__ import annotations

from typing import Any, cast

from ._config import Config
from ._context import run_context
from ._node import Action, AsyncNode, ExecT, PrepT, Shared

__all__ = ["WebSocketNode"]

ANNOUNCE_TYPES = frozenset({"approval_request", "input_request"})
"""`send_update` types that open an input request instead of sending a ``node_event``."""


class _DefaultResult(dict[str, Any]):
    """A ``shared["result"]`` stored by the default `post_async`; a later default one replaces it."""


def store_default_result(shared: Shared, exec_res: Any) -> None:
    """The default `post_async`'s rule: the last non-``None`` default result wins, a node's own never loses."""
    if exec_res is None:
        return
    current = shared.get("result")
    if current is not None and not isinstance(current, _DefaultResult):
        return
    shared["result"] = _DefaultResult(exec_res if isinstance(exec_res, dict) else {"value": exec_res})


def _announcement(data: Any) -> tuple[str, list[str] | None]:
    """``(prompt, options)`` of an ``approval_request``: ``message`` (or ``prompt``) and ``options``."""
    if isinstance(data, str):
        return data, None
    if not isinstance(data, dict):
        return "", None
    prompt = data.get("message", data.get("prompt"))
    options = data.get("options")
    return (
        "" if prompt is None else str(prompt),
        [str(o) for o in options] if isinstance(options, list | tuple) else None,
    )


class WebSocketNode(AsyncNode[PrepT, ExecT]):
    """An `AsyncNode` with `send_update` and `wait_for_input`, and defaults for the seed's nodes.

    Without a `RunContext`, updates are collected in ``self.updates`` as
    ``(update_type, data)`` pairs (fresh for every run of a graph) so the node
    still works in scripts and tests; `wait_for_input` cannot work there and says
    so.
    """

    def __init__(
        self,
        max_retries: int = 1,
        wait: float = 0,
        node_id: str | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(max_retries=max_retries, wait=wait, node_id=node_id, config=config)
        self.updates: list[tuple[str, Any]] = []
        # request_ids opened by send_update("approval_request") that no wait_for_input took yet.
        self._announced: list[str] = []

    async def prep_async(self, shared: Shared) -> PrepT:
        """The run's input, ``shared["input"]`` (``None`` when there is none)."""
        return cast(PrepT, shared.get("input"))

    async def post_async(self, shared: Shared, prep_res: PrepT, exec_res: ExecT) -> Action:
        """Store a non-``None`` ``exec_res`` as ``shared["result"]`` (see `store_default_result`)."""
        store_default_result(shared, exec_res)
        return None

    async def send_update(self, update_type: str, data: Any = None) -> None:
        """Publish an update (``progress``, ``token``, ``result``, or the node's own).

        The gateway maps it to the matching server message for the run's
        subscribers, with ``data`` as its payload: a ``token``'s text (a string, as
        the seed sends it), a ``progress`` dict, or any JSON value.
        ``approval_request`` and ``input_request`` instead open an ``input_request``
        with ``data["message"]`` (or ``data["prompt"]``) as its prompt and
        ``data["options"]``: watchers and snapshots see it, and it can be answered at
        once; the node's next `wait_for_input()` without a prompt returns that answer.
        A request the node never waits on is closed when the node ends.
        """
        payload = data if data is not None else {}
        ctx = run_context.get()
        if ctx is None:
            self.updates.append((update_type, payload))
            return
        # A context written before open_input existed (two methods, as in docs/kaygraph.md)
        # gets the update as it always did.
        if update_type in ANNOUNCE_TYPES and hasattr(ctx, "open_input"):
            prompt, options = _announcement(payload)
            self._announced.append(await ctx.open_input(self.node_id, prompt, options))
            return
        await ctx.emit(self.node_id, update_type, payload)

    async def wait_for_input(
        self,
        prompt: str = "",
        options: list[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any] | None:
        """Wait for human input (``input_request``) and return the answer's data.

        With neither ``prompt`` nor ``options``, it waits on the oldest request this
        node opened with ``send_update("approval_request", ...)`` and has not waited
        on yet (an answer that came already is returned at once); otherwise it opens a
        request of its own. Returns ``None`` when ``timeout`` seconds pass with no
        answer, and the request is closed; a node that cannot go on without an answer
        raises `InputTimeout` to fail the run with ``input_timeout``.
        """
        ctx = run_context.get()
        if ctx is None:
            raise RuntimeError(
                f"{self.node_id}: wait_for_input needs a RunContext; run the graph"
                " through the gateway or inside `use_run_context(ctx)`"
            )
        if not prompt and options is None and self._announced:
            return await ctx.wait_input(self._announced.pop(0), timeout)
        return await ctx.request_input(self.node_id, prompt, options, timeout)

    async def _run_async(self, shared: Shared) -> Action:
        try:
            return await super()._run_async(shared)
        finally:
            self._close_announced()

    def _close_announced(self) -> None:
        """The node ended: the requests it announced and never waited on are no longer open."""
        announced, self._announced = self._announced, []
        ctx = run_context.get()
        if ctx is not None:
            for request_id in announced:
                ctx.close_input(request_id)

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self.updates = []
        self._announced = []
