"""``Run``: one run followed by the client — its events, its result, its open input requests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from graphwire_client._core import RunState
from graphwire_client._generated.commands import Commands
from graphwire_client._generated.events import RunEvent
from graphwire_client._generated.messages import (
    ErrorCode,
    ErrorDetail,
    PendingInput,
    RunSnapshot,
    RunStatus,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
)
from graphwire_client.exceptions import InputClosed, InputRejected, RunFinished, RunLost, workflow_failed_error
from graphwire_client.exceptions import WorkflowCancelled as WorkflowCancelledError

__all__ = ["Run", "RunHost"]

R = TypeVar("R")


class RunHost(Protocol):
    """What a ``Run`` needs of its client: the commands, and two waits."""

    @property
    def commands(self) -> Commands: ...

    async def _wait_run(self, state: RunState) -> None:
        """Return after the next change of ``state`` (an event, a snapshot, a failure)."""

    async def _handlers_settled(self) -> None:
        """Return once the ``on(...)`` handlers of every event delivered so far have finished."""


class Run(Generic[R]):
    """A run the client follows, from ``start_workflow`` or ``attach``.

    ``async for event in run`` yields the run's events (``RunEvent``: ``workflow_started``,
    ``node_update``, ``progress``, ``token``, ``input_request`` …) in ``seq`` order, each
    exactly once even across reconnects, and ends after the terminal event
    (``workflow_completed``, ``workflow_failed`` or ``workflow_cancelled``). Each ``async
    for`` starts from the first event the client has, so several loops may read one run.
    ``await run.result()`` waits for the end and returns the result, typed ``R`` for the
    spec's workflows.
    """

    def __init__(self, client: RunHost, state: RunState, parse_result: Callable[[dict[str, Any]], R]) -> None:
        self._client = client
        self._state = state
        self._parse_result = parse_result

    def __repr__(self) -> str:
        return f"<Run {self.workflow_id} {self.workflow or '?'} last_seq={self.last_seq} status={self.status.value}>"

    @property
    def workflow_id(self) -> str:
        """The run's id."""
        return self._state.workflow_id

    @property
    def workflow(self) -> str | None:
        """The workflow's name, once ``workflow_started`` or a snapshot told it."""
        return self._state.workflow

    @property
    def last_seq(self) -> int:
        """The seq of the last event received (the ``since_seq`` a resume asks for)."""
        return self._state.last_seq

    @property
    def events(self) -> list[RunEvent]:
        """The events received so far, in seq order (a copy)."""
        return list(self._state.events)

    @property
    def pending_inputs(self) -> list[PendingInput]:
        """The run's open input requests, oldest first; kept across reconnects from the server's snapshot.

        ``input_answered`` and ``input_closed`` (closed unanswered) remove one, and the run's
        end removes them all.
        """
        return list(self._state.pending_inputs.values())

    @property
    def snapshot(self) -> RunSnapshot | None:
        """The server's last snapshot of the run (from the latest ``subscribed``), if any."""
        return self._state.snapshot

    @property
    def truncated(self) -> bool:
        """True when the server's log no longer held some events this client missed (see ``recovered``)."""
        return self._state.truncated

    @property
    def recovered(self) -> bool:
        """False once a ``subscribed`` for this run (attach, resume) said ``recovered: false``.

        The replay did not continue this client's view of the run: the server's log was
        trimmed past the last seq it had (``truncated``: the missing seqs never come), or,
        with several gateways on Redis, the log was lost and recreated under another
        ``epoch``. The client then rebuilt what it knows from the server's ``snapshot``
        (open inputs, status) and the replay that follows; seqs it had already seen are
        not yielded again. Rebuild your own view from ``snapshot`` too. A server before
        0.5.0 sends no ``recovered``: there it is False after a ``log_truncated``.
        """
        return self._state.recovered

    @property
    def done(self) -> bool:
        """The run ended, or can no longer be followed."""
        return self._state.done

    @property
    def status(self) -> RunStatus:
        """``running``, ``waiting`` (an input request is open), ``completed``, ``failed`` or ``cancelled``."""
        state = self._state
        terminal = state.terminal
        if isinstance(terminal, WorkflowCompleted):
            return RunStatus.completed
        if isinstance(terminal, WorkflowFailed):
            return RunStatus.failed
        if isinstance(terminal, WorkflowCancelled):
            return RunStatus.cancelled
        if state.done and state.snapshot is not None:
            return state.snapshot.status
        return RunStatus.waiting if state.pending_inputs else RunStatus.running

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RunEvent]:
        state = self._state
        index = 0
        while True:
            while index < len(state.events):
                event = state.events[index]
                index += 1
                yield event
                if event is state.terminal:
                    return
            if state.failure is not None:
                raise state.failure
            if state.done:
                return
            await self._client._wait_run(state)

    async def wait(self) -> None:
        """Wait until the run ends (or can no longer be followed); never raises a run outcome.

        Returns only after the client's ``on(...)`` handlers, ``async def`` ones included,
        have finished with every event of the run (called from a handler, it does not
        wait for handlers: they run one at a time, and one cannot wait for itself).
        """
        while not self._state.done:
            await self._client._wait_run(self._state)
        await self._client._handlers_settled()

    async def result(self) -> R:
        """Wait for the end of the run and return its result (``workflow_completed``'s ``data``).

        As with ``wait()``, the ``on(...)`` handlers of the run's events have all finished
        when it returns. Raises ``WorkflowFailed`` (``.error.code``: ``node_error``, ``input_timeout`` …;
        its subclass ``GatewayShutdown`` when the gateway stopped while the run was in flight,
        ``EventTooLarge``) or ``WorkflowCancelled``; ``RunLost``, ``ConnectionLost`` or
        ``ClientClosed`` when the run can no longer be followed.
        """
        await self.wait()
        state = self._state
        terminal = state.terminal
        if isinstance(terminal, WorkflowCompleted):
            return self._parse_result(terminal.data)
        if isinstance(terminal, WorkflowFailed):
            raise workflow_failed_error(self.workflow_id, terminal.error)
        if isinstance(terminal, WorkflowCancelled):
            raise WorkflowCancelledError(self.workflow_id, terminal.reason)
        if state.failure is not None:
            raise state.failure
        snap = state.snapshot  # ended before the events this client asked for
        if snap is not None and snap.status is RunStatus.completed:
            return self._parse_result(snap.result or {})
        if snap is not None and snap.status is RunStatus.failed:
            error = snap.error or ErrorDetail(code=ErrorCode.internal_error, message="the run failed")
            raise workflow_failed_error(self.workflow_id, error)
        if snap is not None and snap.status is RunStatus.cancelled:
            raise WorkflowCancelledError(self.workflow_id)
        raise RunLost(self.workflow_id, f"run {self.workflow_id} ended without an outcome")  # pragma: no cover

    async def respond(self, request_id: str, data: Mapping[str, Any] | str, *, node_id: str | None = None) -> None:
        """Answer the input request ``request_id`` (``node_input``); returns once the server accepted it.

        ``data`` is the answer object, e.g. ``{"value": "yes"}``; a plain string ``s`` is
        sent as ``{"value": s}``. The node is looked up from the request; pass ``node_id``
        for a request this client never saw. Raises ``InputRejected`` (its ``code``:
        ``input_already_answered``, ``invalid_input``, ``unknown_request`` …), and its
        subclass ``InputClosed`` (``reason``: ``timeout``, ``node_finished``) when the
        request was closed unanswered (``input_closed``): at once if this client has that
        event already, else as soon as it arrives, even while the answer waits for a
        reconnect or a rate-limit retry.

        Exactly once across drops: the answer carries one ``idempotency_key``; if the
        connection drops before the ``ack``, the same ``node_input`` is sent again after
        the resume, and the gateway acks the repeat of an answer it applied. So this
        returns once, whether the first copy landed or not; an answer another client gave
        first raises ``InputRejected`` (``input_already_answered``).
        """
        closed = self._state.closed_input(request_id)
        if closed is not None:
            raise InputClosed(self.workflow_id, request_id, closed.reason)
        node = node_id or self._state.node_of(request_id)
        if node is None:
            raise InputRejected(
                ErrorCode.unknown_request,
                f"run {self.workflow_id} has no input request {request_id!r} that this client saw; pass node_id=",
                workflow_id=self.workflow_id,
            )
        answer = {"value": data} if isinstance(data, str) else dict(data)
        await self._client.commands.node_input(self.workflow_id, node, answer, request_id=request_id)

    async def cancel(self) -> None:
        """Cancel the run (``cancel_workflow``); it then ends with ``workflow_cancelled``.

        Returns once the server accepted the command; does nothing if the run has
        already ended.
        """
        if self._state.done:
            return
        with contextlib.suppress(RunFinished):  # it ended meanwhile
            await self._client.commands.cancel_workflow(self.workflow_id)
