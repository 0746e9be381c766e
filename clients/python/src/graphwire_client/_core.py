"""The sans-I/O core of the client: frames in, routed messages and commands out.

No sockets, no event loop (the style of python-websockets' ``protocol.py``): the asyncio
client (``_client.py``) feeds it text frames and connection events and puts its
outgoing commands on the wire; the tests drive it directly. It does

- **parse**: one text frame → its messages, a ``batch`` unpacked in order;
- **route by type**: an answer (``reply_to``) settles the pending command with that ``id``,
  a run event goes to its run, everything is handed back for ``on(...)`` handlers;
- **seq tracking**: each run keeps its last ``seq``; a repeat is dropped and a gap makes
  the core resubscribe from the last seq (``unsubscribe`` + ``subscribe {since_seq}``),
  so every event is delivered exactly once, in order;
- **resume state**: after a reconnect, ``connection_made`` queues ``subscribe
  {workflow_id, since_seq, epoch}`` for every open run (``epoch``: the run log's, from
  its last ``subscribed``, or, before any, its ``workflow_started``), the topics and
  groups, then re-sends every command that was not answered. Commands are safe to
  repeat: ``start_workflow`` and ``node_input`` always carry an ``idempotency_key``
  (the gateway answers a repeat as it answered the first copy), and a repeated
  ``cancel_workflow`` whose run has ended meanwhile is counted as done;
- **rate limits**: a command refused with ``rate_limited`` was not applied; one that is
  safe to repeat (``REPEATABLE``) is held and goes again, identical, when the client
  calls ``release_held()`` after the frame's ``retry_after`` (``Received.retry_after``),
  at most ``MAX_RATE_LIMIT_RETRIES`` times; then its caller gets ``RateLimited``. One
  refused with ``run_unavailable`` (the gateway running the run did not answer; the copy
  may have been applied) is held and goes again, identical, the same way, at most
  ``MAX_UNAVAILABLE_RETRIES`` times; then its caller gets ``RunUnavailable``;
- **a view not recovered**: a ``subscribed`` with ``recovered: false`` (the log was
  trimmed past the client's seq, or lost and recreated under another ``epoch``; from a
  server before 0.5.0, ``log_truncated``) rebuilds the run's state from its snapshot and
  the replay that follows: open inputs from the snapshot, a jump to ``first_seq`` over
  seqs that are gone (``truncated``), seqs already seen dropped, ``recovered`` False;
- **closed requests**: ``input_closed`` drops the request from the run's open inputs, and
  a ``node_input`` to it that still waits (queued, held, or unacknowledged, across a
  reconnect too) is settled with ``InputClosed`` at once: the gateway closes only
  requests no answer was applied to, so it could only refuse it;
- **the offline mailbox**: ``mail`` is tracked per mailbox (the ``connected`` frame's
  ``user``, else its ``client_id``; ``MailboxState``): a ``mail_seq`` already received is
  dropped (a reconnect re-delivers what the lost ack did not cover); once the client
  reports a mail handed to the application (``MailboxState.handed_out``),
  ``queue_mail_ack()`` queues one ``ack_mail`` up to the last one handled, at most one on
  the wire (the next covers all handled meanwhile); one lost with the socket, or refused
  with ``mailbox_unavailable`` past its retries, goes again after the next reconnect.
  ``resume_client_id`` is the client id every connection after the first asks back
  (``?client_id=``): the first one the server gave, or the caller's.
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from graphwire_client._generated.events import RUN_EVENT_TYPES, SERVER_EVENT_TYPES, RunEvent, ServerEvent
from graphwire_client._generated.messages import (
    Ack,
    AckMail,
    CancelWorkflow,
    Command,
    Connected,
    Error,
    ErrorCode,
    InputAnswered,
    InputClosed,
    InputRequest,
    JoinGroup,
    LeaveGroup,
    Mail,
    NodeInput,
    PendingInput,
    Ping,
    RefreshToken,
    RunSnapshot,
    RunStatus,
    StartWorkflow,
    Subscribe,
    Subscribed,
    Unsubscribe,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
)
from graphwire_client._mail import MailboxState
from graphwire_client.exceptions import BadRequest, GraphwireError, RunLost, error_from_frame
from graphwire_client.exceptions import InputClosed as InputClosedError

__all__ = [
    "MAX_RATE_LIMIT_RETRIES",
    "MAX_UNAVAILABLE_RETRIES",
    "TERMINAL_TYPES",
    "ClientCore",
    "Delivery",
    "PendingCommand",
    "Received",
    "RunState",
    "repeatable",
]

log = logging.getLogger("graphwire_client")

TERMINAL_TYPES = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})
_FINISHED = frozenset({RunStatus.completed, RunStatus.failed, RunStatus.cancelled})
# Resubscribes in a row that brought no new event before a run is declared lost.
MAX_RESYNCS = 3
# Times one command refused with rate_limited goes again before its caller gets RateLimited.
MAX_RATE_LIMIT_RETRIES = 3
# Times one command refused with run_unavailable goes again before its caller gets RunUnavailable.
MAX_UNAVAILABLE_RETRIES = 3
# Seconds to wait after a rate_limited or run_unavailable without a retry_after.
DEFAULT_RETRY_AFTER = 1.0
# Answers after which a repeatable command goes again, the same frame: the gateway (or the
# Redis behind it) did not answer in time; the copy may have been applied, and counts once.
_UNAVAILABLE = frozenset({ErrorCode.run_unavailable, ErrorCode.mailbox_unavailable})
# Mailboxes remembered (a server that ignores ``?client_id=`` gives a new one each time).
_MAILBOXES_KEPT = 8

# The longest ``epoch`` a ``subscribe`` may carry (``components.schemas.Subscribe``).
_EPOCH_MAX = 64


def _carriable(epoch: str | None) -> bool:
    """An ``epoch`` a ``subscribe`` can carry back (non-empty, at most ``_EPOCH_MAX``)."""
    return epoch is not None and 0 < len(epoch) <= _EPOCH_MAX


TerminalEvent = WorkflowCompleted | WorkflowFailed | WorkflowCancelled


@dataclass(eq=False)
class PendingCommand:
    """A command waiting for its direct answer (the frame whose ``reply_to`` is ``id``)."""

    id: str
    message: BaseModel
    reply_type: type[BaseModel]
    internal: bool = False
    """Sent by the core itself (a resubscribe); nobody awaits it."""
    sent: bool = False
    """On the current connection's wire."""
    attempts: int = 0
    """How many copies the server may have applied: times put on a wire, less those refused
    with ``rate_limited``; above 1 it is a repeat after a reconnect."""
    rate_limited: int = 0
    """How many times the server refused it with ``rate_limited`` (and it went again)."""
    unavailable: int = 0
    """How many times the server answered it with ``run_unavailable`` (and it went again)."""
    reply: BaseModel | None = None
    error: GraphwireError | None = None
    caller_key: bool = False
    """A ``start_workflow`` whose caller chose the ``idempotency_key`` (it may name an existing run)."""

    @property
    def done(self) -> bool:
        return self.reply is not None or self.error is not None

    run: RunState | None = None
    """The run a ``start_workflow`` or run ``subscribe`` follows (kept alive until the caller has it)."""

    @property
    def frame(self) -> str:
        return self.message.model_dump_json(exclude_none=True)

    @property
    def message_type(self) -> str:
        return str(getattr(self.message, "type", type(self.message).__name__))


@dataclass(eq=False)
class RunState:
    """What the client knows of one run: its events so far, open inputs, how it ended."""

    workflow_id: str
    workflow: str | None = None
    last_seq: int = 0
    events: list[RunEvent] = field(default_factory=list)
    pending_inputs: dict[str, PendingInput] = field(default_factory=dict)
    """Open input requests by ``request_id``: from ``input_request`` events and ``subscribed`` snapshots."""
    snapshot: RunSnapshot | None = None
    terminal: TerminalEvent | None = None
    failure: GraphwireError | None = None
    """Set when the run can no longer be followed (``RunLost``, ``ConnectionLost`` …)."""
    truncated: bool = False
    """The server's log no longer reached back to ``since_seq`` on a resubscribe: events were skipped."""
    epoch: str | None = None
    """The run log's ``epoch``, sent back when resubscribing: the last ``subscribed``'s, or,
    before any, the one ``workflow_started`` named (a run this client started)."""
    recovered: bool = True
    """False once a ``subscribed`` said ``recovered: false``: the state was rebuilt from its snapshot."""
    attach_id: str | None = None
    """The user's ``subscribe`` that attaches this run, while it waits for ``subscribed``."""
    resyncing: bool = False
    resyncs: int = 0
    jump_to: int | None = None

    @property
    def done(self) -> bool:
        """The run ended (or is lost): no more events will come."""
        if self.terminal is not None or self.failure is not None:
            return True
        snap = self.snapshot
        return snap is not None and snap.status in _FINISHED and self.last_seq >= snap.last_seq

    def accept(self, event: RunEvent) -> str:
        """``"new"`` (appended), ``"repeat"`` (seq already seen) or ``"gap"`` (seq missing before it)."""
        if event.seq <= self.last_seq:
            return "repeat"
        if event.seq != self.last_seq + 1 and event.seq != self.jump_to:
            return "gap"
        self.jump_to = None
        self.last_seq = event.seq
        self.resyncs = 0
        self.events.append(event)
        if isinstance(event, InputRequest):
            self.pending_inputs[event.request_id] = PendingInput(
                request_id=event.request_id,
                node_id=event.node_id,
                prompt=event.prompt,
                options=event.options,
                expires_at=event.expires_at,
            )
        elif isinstance(event, InputAnswered | InputClosed):
            self.pending_inputs.pop(event.request_id, None)
        elif isinstance(event, WorkflowCompleted | WorkflowFailed | WorkflowCancelled):
            self.terminal = event
            self.pending_inputs.clear()
        elif event.type == "workflow_started":
            self.workflow = event.workflow
            if self.epoch is None and _carriable(event.epoch):
                # A starter gets no ``subscribed`` before its first resume. Seq 1 keeps the
                # epoch its log was first written under, so a ``subscribed`` (newer) wins.
                self.epoch = event.epoch
        return "new"

    def apply_snapshot(self, subscribed: Subscribed) -> None:
        """Take the ``subscribed`` of this run: its epoch and snapshot, and whether the replay continues this view."""
        if _carriable(subscribed.epoch):
            self.epoch = subscribed.epoch
        snap = subscribed.snapshot
        # A server before 0.5.0 sends no ``recovered``: only a trimmed log breaks the view there.
        recovered = subscribed.recovered if subscribed.recovered is not None else not subscribed.log_truncated
        if not recovered:
            self.recovered = False
            if snap is not None and snap.last_seq < self.last_seq:
                # A recreated log that ends before what this client saw would reuse its seqs.
                wid = self.workflow_id
                self.failure = RunLost(wid, f"the server's log of run {wid} ends before the events this client saw")
                return
            first = subscribed.first_seq
            if first is not None and first > self.last_seq + 1:
                self.truncated = True
                self.jump_to = first
        if snap is None:
            return
        self.snapshot = snap
        self.workflow = snap.workflow
        self.pending_inputs = {p.request_id: p for p in snap.pending_inputs}

    def node_of(self, request_id: str) -> str | None:
        """The node that asked ``request_id``, from the open inputs or the events seen."""
        pending = self.pending_inputs.get(request_id)
        if pending is not None:
            return pending.node_id
        for event in reversed(self.events):
            if isinstance(event, InputRequest | InputAnswered | InputClosed) and event.request_id == request_id:
                return event.node_id
        return None

    def closed_input(self, request_id: str) -> InputClosed | None:
        """The ``input_closed`` event of ``request_id``, if this client received it."""
        for event in reversed(self.events):
            if isinstance(event, InputClosed) and event.request_id == request_id:
                return event
        return None


def repeatable(message: BaseModel) -> bool:
    """Safe to send again after a ``rate_limited`` refusal (the refused copy was not applied),
    or a ``run_unavailable`` one (it may have been: a repeat counts once).

    A start or an answer carries its ``idempotency_key`` (the core always sets one), so a
    copy that lands twice counts once; subscribing, joining, leaving, pinging,
    presenting a token and acknowledging mail twice change nothing. ``unsubscribe`` and
    ``cancel_workflow`` are not repeated: one that landed late could undo what a later
    command did.
    """
    if isinstance(message, StartWorkflow | NodeInput):
        return message.idempotency_key is not None
    return isinstance(message, Subscribe | JoinGroup | LeaveGroup | Ping | RefreshToken | AckMail)


@dataclass
class Delivery:
    """One message handed to the application, after routing."""

    message: ServerEvent
    run: RunState | None = None
    """The run this event was appended to."""
    reply: PendingCommand | None = None
    """The command this message answered."""
    mailbox: MailboxState | None = None
    """The mailbox a ``mail`` came from: report it handled with ``handed_out(mail_seq, mail_generation)``."""
    mail_generation: int = 0
    """The mailbox's ``generation`` when the ``mail`` was received."""


@dataclass
class Received:
    """What one frame did: messages to hand out, commands settled, runs that changed."""

    deliveries: list[Delivery] = field(default_factory=list)
    settled: list[PendingCommand] = field(default_factory=list)
    changed: list[RunState] = field(default_factory=list)
    retry_after: float | None = None
    """Commands were held after ``rate_limited``: call ``release_held()`` in this many seconds."""

    def touch(self, run: RunState) -> None:
        if run not in self.changed:
            self.changed.append(run)


class ClientCore:
    """Protocol state of one client across any number of connections."""

    def __init__(self, client_id: str | None = None) -> None:
        self.connected: Connected | None = None
        self.resume_client_id = client_id
        """The client id to take over on every connection (``?client_id=``): the caller's, else the first one given."""
        self.mailbox: MailboxState | None = None
        """The current connection's mailbox."""
        self._mailboxes: dict[str, MailboxState] = {}
        self.runs: dict[str, RunState] = {}
        """Runs being followed (not finished, not unsubscribed), by ``workflow_id``."""
        self.topics: set[str] = set()
        self.groups: set[str] = set()
        self.online = False
        self._pending: dict[str, PendingCommand] = {}
        self._outbox: deque[PendingCommand] = deque()
        # Refused with rate_limited, waiting for release_held(), in the order they were sent.
        self._held: list[PendingCommand] = []
        # Every run state still referenced (by a ``Run`` object), finished ones included.
        self._known: weakref.WeakValueDictionary[str, RunState] = weakref.WeakValueDictionary()
        # Runs the server attached the current connection to; it keeps sending them, and
        # never again what it sent before, so a new subscribe unsubscribes first.
        self._attached: set[str] = set()
        # Commands settled before their answer came (InputClosed): the gateway's refusal
        # still due on this connection is dropped, not handed out as a stray error.
        self._answered_early: set[str] = set()
        self._ids = itertools.count(1)

    # --- commands out ------------------------------------------------------------------

    def command(self, message: BaseModel, reply_type: type[BaseModel], *, internal: bool = False) -> PendingCommand:
        """Register a command: give it an ``id``, note what it changes, queue it for the wire."""
        cid = f"c{next(self._ids)}"
        update: dict[str, Any] = {"id": cid}
        caller_key = isinstance(message, StartWorkflow) and message.idempotency_key is not None
        if isinstance(message, StartWorkflow | NodeInput) and message.idempotency_key is None:
            # Makes the command safe to repeat after a reconnect: the server returns the same
            # run, or acks the answer it applied, instead of a second run or input_already_answered.
            update["idempotency_key"] = f"gw-{uuid.uuid4().hex}"
        message = message.model_copy(update=update)
        pending = PendingCommand(cid, message, reply_type, internal=internal, caller_key=caller_key)
        if isinstance(message, Subscribe):
            self.topics.update(message.topics or ())
            if message.workflow_id is not None:
                run = self.runs.get(message.workflow_id)
                if run is None:
                    if message.workflow_id in self._attached:  # a run followed here before: replay it again
                        self._internal(Unsubscribe(type="unsubscribe", workflow_id=message.workflow_id), Ack)
                    run = self._follow(RunState(message.workflow_id, last_seq=message.since_seq or 0))
                    run.attach_id = cid
                pending.run = run
        elif isinstance(message, Unsubscribe):
            self.topics.difference_update(message.topics or ())
            if message.workflow_id is not None:
                self._attached.discard(message.workflow_id)
            if message.workflow_id is not None and not internal:
                run = self.runs.pop(message.workflow_id, None)
                if run is not None and not run.done:
                    run.failure = RunLost(run.workflow_id, f"unsubscribed from run {run.workflow_id}")
        elif isinstance(message, JoinGroup):
            self.groups.add(message.group)
        elif isinstance(message, LeaveGroup):
            self.groups.discard(message.group)
        self._pending[cid] = pending
        self._outbox.append(pending)
        return pending

    def take_outgoing(self) -> tuple[list[tuple[PendingCommand, str]], list[PendingCommand]]:
        """The commands to write now, in order, with their frames; empty while offline.

        Marks them sent. The second list holds commands refused here because their frame
        is above the server's ``max_message_size`` (the server would close the socket
        with 1009); each carries a ``BadRequest`` error.
        """
        if not self.online:
            return [], []
        limit = self.connected.max_message_size if self.connected is not None else None
        out: list[tuple[PendingCommand, str]] = []
        refused: list[PendingCommand] = []
        while self._outbox:
            pending = self._outbox.popleft()
            if pending.done or pending.sent or self._pending.get(pending.id) is not pending:
                continue
            frame = pending.frame
            if limit is not None and len(frame.encode()) > limit:
                del self._pending[pending.id]
                pending.error = BadRequest(
                    ErrorCode.message_too_large,
                    f"the {pending.message_type} frame is {len(frame.encode())} bytes; the server takes {limit}",
                )
                refused.append(pending)
                continue
            pending.sent = True
            pending.attempts += 1
            out.append((pending, frame))
        return out, refused

    def release_held(self) -> None:
        """Queue the commands held after ``rate_limited`` again, in the order they were first sent."""
        held, self._held = self._held, []
        for pending in held:
            if self._pending.get(pending.id) is pending and not pending.sent:
                self._outbox.append(pending)

    def forget(self, pending: PendingCommand) -> None:
        """Stop waiting for a command's answer (its caller went away)."""
        if self._pending.get(pending.id) is pending:
            del self._pending[pending.id]

    # --- connection lifecycle ----------------------------------------------------------

    def connection_made(self, hello: Connected) -> None:
        """A new connection greeted us: queue the resume commands, then every unanswered command."""
        self.connected = hello
        self.online = True
        self._open_mailbox(hello)
        resume: list[PendingCommand] = []
        for run in list(self.runs.values()):
            run.resyncing = False
            attach = self._pending.get(run.attach_id) if run.attach_id else None
            if attach is not None:
                attach.message = attach.message.model_copy(update={"since_seq": run.last_seq})
                resume.append(attach)
            else:
                resume.append(self._resubscribe(run))
        # Topics and groups whose own command is still unanswered go again with it.
        waiting = [p.message for p in self._pending.values()]
        topics = self.topics.difference(*(m.topics or () for m in waiting if isinstance(m, Subscribe)))
        groups = self.groups - {m.group for m in waiting if isinstance(m, JoinGroup)}
        if topics:
            resume.append(self._internal(Subscribe(type="subscribe", topics=sorted(topics)), Subscribed))
        for group in sorted(groups):
            resume.append(self._internal(JoinGroup(type="join_group", group=group), Ack))
        rest = [p for p in self._pending.values() if p not in resume]
        self._outbox = deque(resume + rest)
        self.queue_mail_ack()  # handled before a drop, not acknowledged since

    def connection_lost(self) -> None:
        """The socket is gone: nothing is on a wire any more; internal commands are dropped."""
        self.online = False
        self.connected = None
        self._attached.clear()
        self._answered_early.clear()
        for cid, pending in list(self._pending.items()):
            if pending.internal:
                del self._pending[cid]
            pending.sent = False
        self._outbox.clear()
        self._held.clear()  # the next connection sends what is still pending anyway
        for run in self.runs.values():
            run.resyncing = False
        for box in self._mailboxes.values():
            box.acking = None  # an internal command: dropped above, sent again on the next connection

    def fail_all(self, error: GraphwireError) -> Received:
        """Give up: every pending command and every open run fails with ``error``."""
        out = Received()
        for pending in self._pending.values():
            if not pending.done:
                pending.error = error
                out.settled.append(pending)
        self._pending.clear()
        self._outbox.clear()
        self._held.clear()
        for run in self.runs.values():
            if not run.done:
                run.failure = error
                out.touch(run)
        self.runs.clear()
        return out

    # --- frames in ---------------------------------------------------------------------

    def receive_text(self, text: str) -> Received:
        """Parse one text frame (a ``batch`` is unpacked in order) and route each message."""
        out = Received()
        try:
            raw = json.loads(text)
        except ValueError:
            log.warning("ignoring a frame that is not JSON: %.200r", text)
            return out
        items = raw.get("messages") if isinstance(raw, dict) and raw.get("type") == "batch" else [raw]
        for item in items if isinstance(items, list) else []:
            message = self._parse(item)
            if message is not None:
                self._route(message, out)
        return out

    @staticmethod
    def _parse(item: Any) -> ServerEvent | None:
        kind = item.get("type") if isinstance(item, dict) else None
        model = SERVER_EVENT_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            # A newer server may send types this SDK does not know; they are skipped.
            log.debug("ignoring a message of unknown type %r", kind)
            return None
        try:
            return model.model_validate(item)
        except ValidationError as exc:
            log.warning("ignoring a %s message that breaks the spec: %s", kind, exc.errors(include_url=False)[:1])
            return None

    def _route(self, message: ServerEvent, out: Received) -> None:
        reply_to = getattr(message, "reply_to", None)
        pending = self._pending.pop(reply_to, None) if reply_to is not None else None
        if reply_to is not None and reply_to in self._answered_early:
            self._answered_early.discard(reply_to)
            if isinstance(message, Error):  # the refusal its caller already got as InputClosed
                return
        if message.type in RUN_EVENT_TYPES:
            self._route_run_event(message, pending, out)  # type: ignore[arg-type]
            return
        if isinstance(message, Connected):
            self._open_mailbox(message)  # before the mail that follows it in the same frame
        elif isinstance(message, Mail):
            box = self.mailbox
            if box is not None and not box.receive(message.mail_seq):
                log.debug("mail %d of %s: handed out already; skipped", message.mail_seq, box.owner)
                return
            generation = box.generation if box is not None else 0
            out.deliveries.append(Delivery(message, mailbox=box, mail_generation=generation))
            return
        if isinstance(message, Error):
            if pending is not None:
                self._settle_error(pending, message, out)
                if isinstance(pending.message, AckMail) and pending.error is not None:
                    self._mail_ack_settled(pending)
                if pending.internal or pending.error is None:  # internal, held, or a repeat that had landed
                    return
            out.deliveries.append(Delivery(message, reply=pending))
            return
        if isinstance(message, Subscribed) and message.workflow_id is not None:
            self._attached.add(message.workflow_id)
            run = self.runs.get(message.workflow_id)
            if run is not None:
                run.apply_snapshot(message)
                run.resyncing = False
                if run.attach_id == reply_to:
                    run.attach_id = None
                self._after_change(run, out)
        if pending is not None:
            pending.reply = message
            out.settled.append(pending)
            if isinstance(pending.message, AckMail):
                self._mail_ack_settled(pending)
            if pending.internal:
                return
        out.deliveries.append(Delivery(message, reply=pending))

    # --- the offline mailbox -----------------------------------------------------------

    def _open_mailbox(self, hello: Connected) -> None:
        """Select the connection's mailbox: the user's with auth on, else the client id's."""
        if self.resume_client_id is None:
            self.resume_client_id = hello.client_id
        owner = hello.user or hello.client_id
        box = self._mailboxes.get(owner)
        if box is None:
            if len(self._mailboxes) >= _MAILBOXES_KEPT:
                del self._mailboxes[next(iter(self._mailboxes))]
            box = self._mailboxes[owner] = MailboxState(owner)
        self.mailbox = box

    def queue_mail_ack(self) -> PendingCommand | None:
        """Queue ``ack_mail`` up to the last mail handled, if the server was not told and none is on the wire.

        Call it after ``handed_out``; the ``ack_mail`` in flight, once answered, queues the
        next one itself if more was handled meanwhile.
        """
        box = self.mailbox
        if box is None or not self.online or not box.ack_due:
            return None
        pending = self._internal(AckMail(type="ack_mail", up_to=box.handled), Ack)
        box.acking = pending.id
        return pending

    def _mail_ack_settled(self, pending: PendingCommand) -> None:
        assert isinstance(pending.message, AckMail)
        for box in self._mailboxes.values():
            if box.acking != pending.id:
                continue
            box.acking = None
            if pending.error is not None:
                # Past its retries (or refused): the next reconnect, or the next mail handled, sends it again.
                log.info("ack_mail up to %d refused: %s", pending.message.up_to, pending.error)
                return
            box.acked = max(box.acked, pending.message.up_to)
        self.queue_mail_ack()

    def _route_run_event(self, event: RunEvent, pending: PendingCommand | None, out: Received) -> None:
        self._attached.add(event.workflow_id)
        run = self.runs.get(event.workflow_id)
        if run is None and pending is not None:  # our start_workflow's answer: follow the new run
            run = self._follow(RunState(event.workflow_id))
        if pending is not None:
            pending.reply = event
            pending.run = run
            out.settled.append(pending)
        if isinstance(event, WorkflowStarted) and event.reply_to is not None:
            # The run's events are the log's: ``reply_to`` belongs to the answer, not to seq 1.
            event = event.model_copy(update={"reply_to": None})
        if run is None:
            # Not a run we follow (e.g. a frame from before an unsubscribe): hand it out as is.
            out.deliveries.append(Delivery(event, reply=pending))
            return
        verdict = run.accept(event)
        if verdict == "new":
            if isinstance(event, InputClosed):
                self._settle_answers_to_closed(event, out)
            out.deliveries.append(Delivery(event, run=run, reply=pending))
            self._after_change(run, out)
        elif verdict == "gap":
            log.info("run %s: seq %d after %d; resubscribing", run.workflow_id, event.seq, run.last_seq)
            self._resync(run)
        if pending is not None and (pending.attempts > 1 or pending.caller_key) and not run.done:
            # A start that repeats a key gets the existing run's seq 1 and then only live
            # events, not what the run logged meanwhile: fetch the rest of its log.
            self._resync(run)

    def _after_change(self, run: RunState, out: Received) -> None:
        out.touch(run)
        if run.done and self.runs.get(run.workflow_id) is run:
            del self.runs[run.workflow_id]

    def _resync(self, run: RunState) -> None:
        """Fetch the run's log after ``last_seq`` again on this connection."""
        if run.resyncing:
            return
        run.resyncs += 1
        if run.resyncs > MAX_RESYNCS:
            run.failure = RunLost(run.workflow_id, f"run {run.workflow_id}: the event stream keeps skipping seqs")
            self.runs.pop(run.workflow_id, None)
            return
        run.resyncing = True
        # The server skips seqs this connection was already given; unsubscribing first
        # resets that, so the replay starts right after last_seq.
        self._internal(Unsubscribe(type="unsubscribe", workflow_id=run.workflow_id), Ack)
        self._resubscribe(run)

    def _resubscribe(self, run: RunState) -> PendingCommand:
        """``subscribe`` from the run's last seq, naming the log it came from (``epoch``).

        So a log lost and recreated meanwhile is told (``recovered: false``, the whole new
        log), not replayed from ``since_seq`` as if it were the one this client knew.
        """
        message = Subscribe(type="subscribe", workflow_id=run.workflow_id, since_seq=run.last_seq, epoch=run.epoch)
        return self._internal(message, Subscribed)

    def _settle_answers_to_closed(self, event: InputClosed, out: Received) -> None:
        """Answers to a request closed unanswered can only be refused: settle them now.

        Queued, held after ``rate_limited`` or unacknowledged, across a reconnect too: no
        copy was applied (the gateway never closes an answered request), so none need go
        (again), and nobody waits for a resume or a retry that cannot help.
        """
        for cid, pending in list(self._pending.items()):
            message = pending.message
            if (
                isinstance(message, NodeInput)
                and message.workflow_id == event.workflow_id
                and message.request_id == event.request_id
                and not pending.done
            ):
                del self._pending[cid]
                if pending.sent:
                    self._answered_early.add(cid)
                pending.error = InputClosedError(event.workflow_id, event.request_id, event.reason)
                out.settled.append(pending)

    def _settle_error(self, pending: PendingCommand, frame: Error, out: Received) -> None:
        message = pending.message
        again = repeatable(message)
        if again and frame.code is ErrorCode.rate_limited and pending.rate_limited < MAX_RATE_LIMIT_RETRIES:
            pending.rate_limited += 1
            pending.attempts -= 1  # this copy was not applied: the next one is no repeat
            self._hold(pending, frame, out)
            return
        if again and frame.code in _UNAVAILABLE and pending.unavailable < MAX_UNAVAILABLE_RETRIES:
            # The copy may have been applied (it stays counted); the same frame again counts once.
            pending.unavailable += 1
            self._hold(pending, frame, out)
            return
        if pending.attempts > 1 and isinstance(message, CancelWorkflow) and frame.code is ErrorCode.run_finished:
            # The first copy may have ended the run; either way the run is over, as asked.
            wid = message.workflow_id
            pending.reply = Ack(type="ack", reply_to=pending.id, command=Command.cancel_workflow, workflow_id=wid)
            out.settled.append(pending)
            return
        lost = {
            ErrorCode.unknown_run: "the server no longer knows run {}",
            # Our since_seq is the last seq we saw: a log behind it lost events we have.
            ErrorCode.since_seq_ahead: "the server's log of run {} ends before the events this client saw",
        }.get(frame.code)
        pending.error = error_from_frame(frame)
        out.settled.append(pending)
        if not isinstance(message, Subscribe) or message.workflow_id is None:
            return
        run = self.runs.get(message.workflow_id)
        if run is None:
            return
        if lost is not None or pending.internal or run.attach_id == pending.id:
            # The run cannot be followed: the server forgot it, or refused this client the
            # attach or the resume (forbidden, too_many_subscriptions …). Hanging on would
            # only ask again after every reconnect.
            del self.runs[message.workflow_id]
            if not run.done:
                run.failure = RunLost(run.workflow_id, lost.format(run.workflow_id)) if lost else pending.error
                out.touch(run)

    def _hold(self, pending: PendingCommand, frame: Error, out: Received) -> None:
        """Keep a refused command for ``release_held()``, after the frame's ``retry_after``."""
        pending.sent = False
        self._pending[pending.id] = pending
        self._held.append(pending)
        wait = frame.retry_after if frame.retry_after is not None else DEFAULT_RETRY_AFTER
        out.retry_after = max(out.retry_after or 0.0, wait)

    def _internal(self, message: BaseModel, reply_type: type[BaseModel]) -> PendingCommand:
        return self.command(message, reply_type, internal=True)

    def _follow(self, run: RunState) -> RunState:
        self.runs[run.workflow_id] = run
        self._known[run.workflow_id] = run
        return run

    def known_run(self, workflow_id: str) -> RunState | None:
        """The state of a run followed now or earlier (while something still references it)."""
        return self.runs.get(workflow_id) or self._known.get(workflow_id)
