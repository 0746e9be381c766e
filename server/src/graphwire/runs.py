"""Runs: an id, a status, an append-only event log with gap-free ``seq``, and open inputs.

``RunManager`` starts a workflow's graph in its own asyncio task with a
``GatewayRunContext`` set, so a node's ``send_update`` / ``wait_for_input`` become spec
events. Each event is built from its generated model and serialised exactly once; the
same string goes into the log and to every subscriber.

With Redis (``broker.runs``) every run this gateway starts is also written to Redis
(``graphwire.run_store``), and a run another gateway owns is *mirrored* here while this
gateway's clients watch it: a ``Run`` with ``mirror`` set, built from Redis, kept up to
date from the owner's wake-ups and repaired from the stream by ``seq`` whenever one is
missing. Answers and cancels for a mirrored run go to its owner's inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import random
import time
import typing
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from graphwire import logs
from graphwire._generated.messages import (
    ErrorCode,
    ErrorDetail,
    InputAnswered,
    InputClosed,
    InputClosedReason,
    InputRequest,
    NodeEvent,
    NodeStatusData,
    NodeUpdate,
    PendingInput,
    Progress,
    ProgressData,
    Result,
    RunResumed,
    RunSnapshot,
    RunStatus,
    Subscribed,
    Token,
    WorkflowCancelled,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
)
from graphwire.broker import Broker, LocalBroker
from graphwire.connections import Connection, Flusher, ensure_room
from graphwire.graph import AsyncGraph, InputTimeout, use_run_context
from graphwire.graph.persistence import Checkpoint, run_checkpointed
from graphwire.metrics import OFF, Metrics
from graphwire.post_office import PostOffice
from graphwire.protocol import ProtocolError, encode, explicit_null, frame_type, now
from graphwire.registry import ParamsError, WorkflowDefinition, WorkflowRegistry
from graphwire.run_store import GATEWAY, RUN, RunRecord, RunStore, new_epoch
from graphwire.settings import Settings

__all__ = ["EventTooLarge", "GatewayRunContext", "PendingRequest", "Run", "RunManager"]

log = logging.getLogger("graphwire.runs")

_TERMINAL = {RunStatus.completed, RunStatus.failed, RunStatus.cancelled}
# Events after which the run's snapshot (status, open inputs, result, error) is different.
_STATE_EVENTS = frozenset(
    {WorkflowStarted, InputRequest, InputAnswered, InputClosed, WorkflowCompleted, WorkflowFailed, WorkflowCancelled}
)
# Seconds before a mirror whose repair failed (Redis out of reach) tries again.
REPAIR_RETRY = 0.5
# A mirrored run whose log cannot be completed: its watchers reconnect and resume.
_LOG_HOLE = (1013, "the run's log has a hole this gateway cannot fill: reconnect and resume")


@functools.cache
def _type_const(model: type[BaseModel]) -> str:
    (const,) = typing.get_args(model.model_fields["type"].annotation)
    return str(const)


class EventTooLarge(Exception):
    """A node produced an event above ``max_event_bytes``; nothing was logged or sent.

    It reaches the node like any error from ``send_update`` (its ``on_error`` may handle
    it); unhandled, the run fails with ``event_too_large``.
    """


@dataclass(eq=False)
class PendingRequest:
    """An open ``input_request``: the node awaits ``future``."""

    request_id: str
    node_id: str
    prompt: str
    options: list[str] | None
    expires_at: datetime | None
    future: asyncio.Future[dict[str, Any]]
    opened_at: float = field(default_factory=time.monotonic)  # for graphwire_input_wait_seconds


@dataclass(eq=False)
class Rerun:
    """Work that runs one at a time: asked for again while it runs, it runs once more after."""

    busy: bool = False
    again: bool = False

    def ask(
        self, work: Callable[[], Coroutine[Any, Any, None]], spawn: Callable[[Coroutine[Any, Any, None]], None]
    ) -> None:
        if self.busy:
            self.again = True
            return
        self.busy = True
        spawn(self._loop(work))

    async def _loop(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            while True:
                self.again = False
                await work()
                if not self.again:
                    return
        finally:
            self.busy = False


@dataclass(eq=False)
class Run:
    """One run of a workflow and its event log."""

    workflow_id: str
    workflow: str
    settings: Settings
    flusher: Flusher
    # The connection that started the run: the run counts against its limit while in flight.
    starter: Connection | None = None
    # With auth on, the `sub` that started the run: it may always watch, answer and cancel it.
    owner: str | None = None
    status: RunStatus = RunStatus.running
    log: deque[tuple[int, str]] = field(default_factory=deque)
    log_bytes: int = 0
    last_seq: int = 0
    pending: dict[str, PendingRequest] = field(default_factory=dict)
    # request_id -> the applied answer: (node_id, idempotency_key or None, data).
    answered: dict[str, tuple[str, str | None, dict[str, Any]]] = field(default_factory=dict)
    # idempotency_key of an applied answer -> its request_id.
    answer_keys: dict[str, str] = field(default_factory=dict)
    subscribers: set[Connection] = field(default_factory=set)
    result: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    task: asyncio.Task[None] | None = None
    finished_at: float | None = None
    cancel_reason: str = "cancelled"
    # `cancel_workflow` was applied: the run is unwinding towards `workflow_cancelled`, whose
    # terminal event closes what is still open (no `input_closed` on the way).
    cancel_requested: bool = False
    # With Redis: the log's epoch, the seq of the last state change, where the run is written.
    epoch: str = field(default_factory=new_epoch)
    state_seq: int = 0
    store: RunStore | None = None
    # A run another gateway (`gateway`) owns, watched from here: no task, events observed.
    mirror: bool = False
    gateway: str | None = None
    repairing: Rerun = field(default_factory=Rerun)
    # The owner's place in the run's inbox (commands from other gateways), and its reader.
    inbox_cursor: str = "0"
    inbox_reading: Rerun = field(default_factory=Rerun)
    # Subscribes of this gateway's clients still on their way to a mirror: it stays meanwhile.
    pins: int = 0
    # Durable runs (with Redis): this gateway's fencing token, the last checkpoint (JSON:
    # its seq and the graph's `Checkpoint`) and its version; input requests carried over
    # from the gateway that ran the run before (request_id -> request); whether the run
    # left this gateway (taken over, or handed over on SIGTERM) rather than ended.
    fence: int = 1
    checkpoint: str = ""
    checkpoint_version: int = 0
    carried: dict[str, PendingRequest] = field(default_factory=dict)
    moved: bool = False
    # Whose offline mailbox gets the run's input requests while they are away: the owner
    # (with auth on), else the starter's client id; and how they reach it (frame, request_id).
    mail_to: str | None = None
    on_input: Callable[[str, str], None] | None = None
    # When this gateway began running it (started, or taken over): graphwire_run_duration_seconds.
    started_at: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> bool:
        return self.status in _TERMINAL

    @property
    def first_seq(self) -> int:
        return self.log[0][0] if self.log else self.last_seq + 1

    def append(self, model: type[BaseModel], **fields: Any) -> str:
        """Build the next event from its generated model, log it once, fan it out.

        The log keeps at most ``run_log_max_events`` events and ``run_log_max_bytes``
        (the newest event always stays); an event over ``max_event_bytes`` raises
        ``EventTooLarge`` and changes nothing.
        """
        seq = self.last_seq + 1
        frame = encode(model(type=_type_const(model), workflow_id=self.workflow_id, seq=seq, timestamp=now(), **fields))
        settings = self.settings
        if len(frame) > settings.max_event_bytes and len(frame.encode()) > settings.max_event_bytes:
            raise EventTooLarge(
                f"a {_type_const(model)} event of {len(frame.encode())} bytes is above {settings.max_event_bytes}"
            )
        self._add(seq, frame)
        if model in _STATE_EVENTS:
            self.state_seq = seq
        if self.store is not None:
            self.store.changed(self)
        return frame

    def _add(self, seq: int, frame: str) -> None:
        self.last_seq = seq
        log = self.log
        settings = self.settings
        log.append((seq, frame))
        self.log_bytes += len(frame)
        while len(log) > 1 and (len(log) > settings.run_log_max_events or self.log_bytes > settings.run_log_max_bytes):
            self.log_bytes -= len(log.popleft()[1])
        if self.subscribers:
            self.flusher.fan_out_run_event(self.subscribers, self.workflow_id, seq, frame)

    def events_after(self, seq: int) -> list[tuple[int, str]]:
        """The logged events after ``seq``, oldest first."""
        log = self.log
        if not log or log[-1][0] <= seq:
            return []
        if seq < log[0][0]:
            return list(log)
        newer: list[tuple[int, str]] = []
        for item in reversed(log):
            if item[0] <= seq:
                break
            newer.append(item)
        newer.reverse()
        return newer

    def state(self) -> str:
        return encode(self.snapshot())

    @classmethod
    def mirror_of(cls, record: RunRecord, settings: Settings, flusher: Flusher) -> Run:
        """A run another gateway owns, as Redis holds it: its state, then its logged events."""
        run = cls(record.workflow_id, record.workflow, settings, flusher, owner=record.owner)
        run.mirror = True
        run.gateway = record.gateway
        run.epoch = record.epoch
        if record.state is not None:
            snapshot = RunSnapshot.model_validate_json(record.state)
            run.status = RunStatus.running if snapshot.status is RunStatus.waiting else snapshot.status
            run.result = snapshot.result
            run.error = snapshot.error
            for p in snapshot.pending_inputs or ():
                run.pending[p.request_id] = PendingRequest(
                    p.request_id, p.node_id, p.prompt, p.options, p.expires_at, _not_awaited()
                )
            if run.finished:
                run.finished_at = time.monotonic()
        for seq, frame in record.events:
            run._add(seq, frame)
        if not record.events:
            run.last_seq = record.last_seq
        return run

    def observe(self, seq: int, frame: str) -> None:
        """A mirror's next event (``seq`` is ``last_seq + 1``): its state follows, then its watchers get it."""
        kind = _event_type(frame)
        if kind == "input_request":
            request = InputRequest.model_validate_json(frame)
            self.pending[request.request_id] = PendingRequest(
                request.request_id, request.node_id, request.prompt, request.options, request.expires_at, _not_awaited()
            )
        elif kind in ("input_answered", "input_closed"):
            self.pending.pop(orjson.loads(frame).get("request_id", ""), None)
        elif kind == "workflow_completed":
            self.result = WorkflowCompleted.model_validate_json(frame).data
            self._ended(RunStatus.completed)
        elif kind == "workflow_failed":
            self.error = WorkflowFailed.model_validate_json(frame).error
            self._ended(RunStatus.failed)
        elif kind == "workflow_cancelled":
            self._ended(RunStatus.cancelled)
        self._add(seq, frame)

    def _ended(self, status: RunStatus) -> None:
        self.status = status
        self.pending.clear()
        self.finished_at = time.monotonic()

    def snapshot(self) -> RunSnapshot:
        status = self.status
        if status is RunStatus.running and self.pending:
            status = RunStatus.waiting
        return RunSnapshot(
            workflow_id=self.workflow_id,
            workflow=self.workflow,
            status=status,
            last_seq=self.last_seq,
            pending_inputs=[
                PendingInput(
                    request_id=p.request_id,
                    node_id=p.node_id,
                    prompt=p.prompt,
                    options=p.options,
                    expires_at=p.expires_at,
                )
                for p in self.pending.values()
            ],
            result=self.result,
            error=self.error,
        )

    def finish(self, status: RunStatus, model: type[BaseModel], **fields: Any) -> None:
        """Append the one terminal event of the run; later calls do nothing."""
        if self.finished:
            return
        self.append(model, **fields)
        self.status = status
        self.finished_at = time.monotonic()


class GatewayRunContext:
    """The ``RunContext`` a run's nodes talk to: maps updates onto spec events."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.workflow_id = run.workflow_id
        # Requests opened and not closed yet, answered or not: the node may still wait on them.
        self._opened: dict[str, PendingRequest] = {}

    async def emit(self, node_id: str, update_type: str, data: Any) -> None:
        """``send_update(update_type, data)`` → the spec event, with the node's payload in ``data``."""
        run = self.run
        if update_type == "token":
            run.append(Token, node_id=node_id, data=_token_text(data))
        elif update_type == "progress":
            fields = data if isinstance(data, dict) else {}
            current = int(fields.get("current", 0))
            total = int(fields.get("total", 0))
            percent = fields.get("percent")
            if percent is None:
                percent = 100.0 * current / total if total else 0.0
            progress = ProgressData(percent=float(percent), current=current, total=total, message=fields.get("message"))
            run.append(Progress, node_id=node_id, data=progress)
        elif update_type in ("node_status", "status"):
            fields = data if isinstance(data, dict) else {"status": data}
            status = NodeStatusData(
                status=fields["status"], progress=fields.get("progress"), message=fields.get("message")
            )
            run.append(NodeUpdate, node_id=node_id, data=status)
        elif update_type == "result":
            run.append(Result, node_id=node_id, data=_json_object(data))
        else:
            run.append(NodeEvent, node_id=node_id, event=update_type, data=_json_object(data))
        # Yield between events of a tight loop, as a real await would, so the flusher and
        # other runs get the loop.
        await asyncio.sleep(0)

    async def request_input(
        self, node_id: str, prompt: str, options: list[str] | None, timeout: float | None
    ) -> dict[str, Any] | None:
        """``wait_for_input(prompt, ...)``: open a request, wait for it; ``None`` on a timeout."""
        request_id = await self.open_input(node_id, prompt, options, timeout)
        return await self.wait_input(request_id, timeout)

    async def open_input(
        self, node_id: str, prompt: str, options: list[str] | None, timeout: float | None = None
    ) -> str:
        """Send ``input_request`` and register it as pending: snapshots list it, answers may come.

        An answer that arrives before `wait_input` resolves the request's future and is
        kept until the node waits (or ends).
        """
        run = self.run
        for carried in run.carried.values():
            if carried.node_id == node_id and carried.prompt == prompt:
                # The node runs again after a move: its request (already logged, perhaps
                # answered meanwhile) is the same one, under the same request_id.
                del run.carried[carried.request_id]
                self._opened[carried.request_id] = carried
                return carried.request_id
        request_id = f"req_{uuid.uuid4().hex[:12]}"
        expires_at = now() + timedelta(seconds=timeout) if timeout is not None else None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # Logged first (it may raise EventTooLarge, leaving nothing open); nothing awaits
        # between the two steps, so no answer can come before the request is pending.
        frame = run.append(
            InputRequest,
            node_id=node_id,
            request_id=request_id,
            prompt=prompt,
            options=options,
            expires_at=expires_at,
        )
        if run.on_input is not None:
            run.on_input(frame, request_id)  # kept in the mailbox if its user is away
        request = PendingRequest(request_id, node_id, prompt, options, expires_at, future)
        run.pending[request_id] = request
        self._opened[request_id] = request
        return request_id

    async def wait_input(self, request_id: str, timeout: float | None) -> dict[str, Any] | None:
        """Wait for the request's answer; ``None`` after ``timeout`` s. The request is closed after."""
        request = self._opened.get(request_id)
        if request is None:
            raise RuntimeError(f"input request {request_id!r} is not open")
        future = request.future
        if timeout is not None and request.expires_at is None and not future.done():
            # An announced request learns its deadline when the node starts waiting.
            request.expires_at = now() + timedelta(seconds=timeout)
        reason = InputClosedReason.node_finished  # the wait was cancelled: the node stopped waiting
        try:
            # asyncio.wait leaves the future alone on a timeout, so nothing awaits between
            # the deadline and close_input: an answer is either applied or gets unknown_request.
            await asyncio.wait((future,), timeout=timeout)
            if future.done() and not future.cancelled():
                return future.result()
            reason = InputClosedReason.timeout
            return None
        finally:
            self.close_input(request_id, reason)

    def close_input(self, request_id: str, reason: InputClosedReason = InputClosedReason.node_finished) -> None:
        """No longer pending: a later answer gets ``unknown_request`` (``run_finished`` once the run ended).

        A request closed unanswered while the run goes on is logged as ``input_closed``
        (``reason``), in the same step that drops it from the snapshot's
        ``pending_inputs``; an answered one, or one closed while the run ends (its terminal
        event closes everything), is not.
        """
        request = self._opened.pop(request_id, None)
        if request is None:
            return
        run = self.run
        unanswered = run.pending.pop(request_id, None) is not None
        if not request.future.done():
            request.future.cancel()
        if unanswered and not run.finished and not run.cancel_requested:
            run.append(InputClosed, node_id=request.node_id, request_id=request_id, reason=reason)


def _not_awaited() -> asyncio.Future[dict[str, Any]]:
    """A mirrored input request's future: its node waits on the owner's gateway, not here."""
    return asyncio.get_running_loop().create_future()


def _event_type(frame: str) -> str:
    """An event frame's ``type``: read from its front, or parsed from a frame written otherwise."""
    kind = frame_type(frame)
    if kind is None:
        kind = orjson.loads(frame).get("type")
    return kind if isinstance(kind, str) else ""


def _token_text(data: Any) -> str:
    """A token's text: the seed sends a string; ``{"token": ...}`` / ``{"content": ...}`` are read too."""
    if isinstance(data, dict):
        data = data.get("token", data.get("content", data.get("text", "")))
    return data if isinstance(data, str) else str(data)


def _json_object(data: Any) -> dict[str, Any]:
    """``result`` and ``node_event`` carry a JSON object; any other payload is wrapped as ``{"value": ...}``."""
    if data is None:
        return {}
    return data if isinstance(data, dict) else {"value": data}


def _fingerprint(workflow: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps([workflow, params], option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(eq=False)
class _Building:
    """A mirror being read from Redis: wake-ups that arrive meanwhile wait here."""

    done: asyncio.Future[None]
    frames: list[tuple[int, str]] = field(default_factory=list)


class RunManager:
    """Every run this gateway owns (and, with Redis, mirrors); starts, answers, cancels, forgets them."""

    def __init__(
        self,
        settings: Settings,
        flusher: Flusher,
        broker: Broker | None = None,
        registry: WorkflowRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.flusher = flusher
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.store: RunStore | None = self.broker.runs
        # Where a run taken over from another gateway finds its workflow.
        self.registry = registry
        self.post: PostOffice | None = None  # the offline mailbox, set by the gateway
        self.metrics: Metrics = OFF  # set by the gateway
        self._orphans_woken = asyncio.Event()
        if self.store is not None:
            self.store.on_fenced = self._taken_from_us
            self.store.on_inbox = lambda workflow_id: self.deliver_gateway_frame(f"inbox {workflow_id}")
        self.runs: dict[str, Run] = {}
        self._building: dict[str, _Building] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idempotency: dict[str, tuple[str, str]] = {}
        self.in_flight = 0  # runs whose task has not ended
        # SIGTERM with Redis (hand_over): from then on this gateway takes no run over, not
        # even the ones it just released, which its own orphan loop would otherwise see.
        self.handing_over = False
        self.in_flight_by_user: dict[str, int] = {}

    def get(self, workflow_id: str, reply_to: str | None = None) -> Run:
        run = self.runs.get(workflow_id)
        if run is None:
            raise ProtocolError(ErrorCode.unknown_run, f"no run {workflow_id!r}", "workflow_id", reply_to, workflow_id)
        return run

    def start(
        self,
        definition: WorkflowDefinition,
        params: dict[str, Any],
        starter: Connection | None,
        reply_to: str | None = None,
        idempotency_key: str | None = None,
    ) -> Run:
        """Create the run, send seq 1 to the starter with ``reply_to``, start its task."""
        validated, owner, key = self._accept(definition, params, starter, reply_to, idempotency_key)
        if key is not None:
            existing = self._repeat(key, definition, validated, starter, reply_to)
            if existing is not None:
                return existing
        return self._create(definition, validated, starter, owner, reply_to, key)

    async def start_shared(
        self,
        definition: WorkflowDefinition,
        params: dict[str, Any],
        starter: Connection | None,
        reply_to: str | None,
        idempotency_key: str | None,
    ) -> None:
        """``start`` with Redis: the run is in Redis (its seq 1, its lease) before the starter
        hears of it. An ``idempotency_key`` is claimed in Redis first, so a retry that lands on
        another gateway finds the run instead of starting another."""
        store = self.store
        assert store is not None
        validated, owner, key = self._accept(definition, params, starter, reply_to, idempotency_key)
        if key is None:
            await self._start_durably(definition, validated, starter, owner, reply_to, None, None)
            return
        if self._repeat(key, definition, validated, starter, reply_to) is not None:
            return
        self._ensure_room(starter, owner, reply_to)
        fingerprint = _fingerprint(definition.name, validated)
        workflow_id = f"run_{uuid.uuid4().hex}"
        claim = f"{fingerprint} {workflow_id}"
        try:
            held = await store.claim(key, claim)
        except Exception as exc:  # Redis slow or gone: nothing was started
            raise ProtocolError(
                ErrorCode.run_unavailable,
                f"Redis did not answer in time ({type(exc).__name__}); nothing was started, send it again",
                None,
                reply_to,
            ) from None
        if held is None:
            try:
                await self._start_durably(definition, validated, starter, owner, reply_to, key, workflow_id)
            except ProtocolError:
                store.unclaim(key, claim)  # refused after all (too_many_runs): the key is free again
                raise
            return
        known_fingerprint, _, known_id = held.partition(" ")
        if known_fingerprint != fingerprint:
            raise ProtocolError(
                ErrorCode.idempotency_conflict,
                "idempotency_key was used with other params",
                "idempotency_key",
                reply_to,
            )
        run = await self.mirror(known_id, reply_to)
        if run is None:  # claimed a moment ago; its first event is not in Redis yet
            raise ProtocolError(
                ErrorCode.run_unavailable,
                "the run of this idempotency_key is starting on another gateway; send it again",
                None,
                reply_to,
                known_id,
            )
        if starter is not None and not starter.closed:
            self._tell_starter(starter, run, reply_to)
        self.release(run)

    async def _start_durably(
        self,
        definition: WorkflowDefinition,
        validated: dict[str, Any],
        starter: Connection | None,
        owner: str | None,
        reply_to: str | None,
        key: str | None,
        workflow_id: str | None,
    ) -> None:
        """Create the run, wait (at most redis_timeout) for Redis to have it, then tell the starter.

        While Redis is out the run goes on in memory (and is written once Redis is back)
        rather than be refused: the starter's answer only waits longer.
        """
        assert self.store is not None
        run = self._create(definition, validated, starter, owner, reply_to, key, workflow_id, announce=False)
        if not await self.store.flush(run, self.settings.redis_timeout):
            log.warning(
                "run %s: Redis did not take its start in time; it runs in memory until Redis is back", run.workflow_id
            )
        if starter is not None and not starter.closed:
            self._tell_starter(starter, run, reply_to)

    def _accept(
        self,
        definition: WorkflowDefinition,
        params: dict[str, Any],
        starter: Connection | None,
        reply_to: str | None,
        idempotency_key: str | None,
    ) -> tuple[dict[str, Any], str | None, str | None]:
        """The validated params, the starting user and the user's idempotency key; ``invalid_params`` else."""
        try:
            model = definition.params.model_validate(params)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            path = ".".join(str(p) for p in ("params", *first["loc"]))
            raise ProtocolError(ErrorCode.invalid_params, f"{path}: {first['msg']}", path, reply_to) from None
        null = explicit_null(model, "params.")
        if null is not None:  # the spec's params schemas have no null: leave a field out instead
            raise ProtocolError(ErrorCode.invalid_params, f"{null}: must be left out, not null", null, reply_to)
        validated = model.model_dump(mode="json")
        if definition.check is not None:
            try:
                definition.check(validated)
            except ParamsError as exc:
                path = f"params.{exc.path}"
                raise ProtocolError(ErrorCode.invalid_params, f"{path}: {exc.message}", path, reply_to) from None
        owner = starter.principal.sub if starter is not None and starter.principal is not None else None
        if idempotency_key is not None and owner is not None:
            # Keys are per user: another user's key must not hand over (or reveal) a run.
            idempotency_key = f"{owner}\x00{idempotency_key}"
        return validated, owner, idempotency_key

    def _repeat(
        self,
        key: str,
        definition: WorkflowDefinition,
        validated: dict[str, Any],
        starter: Connection | None,
        reply_to: str | None,
    ) -> Run | None:
        """The run this gateway started under ``key``, answered again; ``idempotency_conflict`` for other params."""
        known = self._idempotency.get(key)
        if known is None:
            return None
        if known[0] != _fingerprint(definition.name, validated):
            raise ProtocolError(
                ErrorCode.idempotency_conflict,
                "idempotency_key was used with other params",
                "idempotency_key",
                reply_to,
            )
        existing = self.runs.get(known[1])
        if existing is not None and starter is not None:
            # A repeated start (typically a retry after a lost answer) gets seq 1 again,
            # then everything the run logged since: no gap.
            self._tell_starter(starter, existing, reply_to)
        return existing

    def _create(
        self,
        definition: WorkflowDefinition,
        validated: dict[str, Any],
        starter: Connection | None,
        owner: str | None,
        reply_to: str | None,
        key: str | None,
        workflow_id: str | None = None,
        announce: bool = True,
    ) -> Run:
        self._ensure_room(starter, owner, reply_to)
        run = Run(
            workflow_id or f"run_{uuid.uuid4().hex}", definition.name, self.settings, self.flusher, starter, owner
        )
        run.store = self.store
        run.mail_to = owner if owner is not None else (starter.client_id if starter is not None else None)
        self._address(run)
        if self.store is not None:
            self.store.hold(run)
            # Until its first node boundary, a run taken over starts again from its params.
            saved = {"seq": 1, "params": validated, "checkpoint": None, "mail_to": run.mail_to}
            run.checkpoint = orjson.dumps(saved).decode()
            run.checkpoint_version = 1
        self.runs[run.workflow_id] = run
        if key is not None:
            self._idempotency[key] = (_fingerprint(definition.name, validated), run.workflow_id)
        run.append(WorkflowStarted, workflow=definition.name, epoch=run.epoch)
        self.metrics.runs_started.labels(definition.name).inc()
        if starter is not None and announce:
            starter.enqueue(self._started_reply(run, reply_to))
            self.attach(starter, run, 1)
        self.in_flight += 1
        if starter is not None:
            starter.runs_in_flight += 1
        if owner is not None:
            self.in_flight_by_user[owner] = self.in_flight_by_user.get(owner, 0) + 1
        run.task = asyncio.get_running_loop().create_task(self._drive(run, definition, validated))
        return run

    def _address(self, run: Run) -> None:
        post, user = self.post, run.mail_to
        if post is not None and user is not None:
            run.on_input = lambda frame, request_id: post.input_requested(user, frame, request_id)

    def _ensure_room(self, starter: Connection | None, owner: str | None, reply_to: str | None) -> None:
        """Refuse a new run over ``max_runs_in_flight``, ``max_runs_per_connection`` or the
        starter's subscription limit (the starter watches what it starts)."""
        settings = self.settings
        if self.in_flight >= settings.max_runs_in_flight:
            raise ProtocolError(
                ErrorCode.too_many_runs,
                f"the gateway has {self.in_flight} runs in flight, its limit (max_runs_in_flight)",
                None,
                reply_to,
            )
        if owner is not None and self.in_flight_by_user.get(owner, 0) >= settings.max_runs_per_user:
            raise ProtocolError(
                ErrorCode.too_many_runs,
                f"you have {self.in_flight_by_user[owner]} runs in flight, your limit (max_runs_per_user)",
                None,
                reply_to,
            )
        if starter is None:
            return
        if starter.runs_in_flight >= settings.max_runs_per_connection:
            raise ProtocolError(
                ErrorCode.too_many_runs,
                f"this connection has {starter.runs_in_flight} runs in flight, its limit"
                " (max_runs_per_connection); wait for one to end",
                None,
                reply_to,
            )
        ensure_room(starter, 1, reply_to)

    def _tell_starter(self, starter: Connection, run: Run, reply_to: str | None) -> None:
        """Seq 1 with ``reply_to``, then everything the run logged since that the starter lacks."""
        starter.enqueue(self._started_reply(run, reply_to))
        self._replay(starter, run, max(1, starter.runs.get(run.workflow_id, 0)))

    @staticmethod
    def _started_reply(run: Run, reply_to: str | None) -> str:
        """Seq 1 as the starter gets it: the logged event plus ``reply_to``."""
        frame = run.log[0][1] if run.log and run.log[0][0] == 1 else None
        if frame is None:  # the log was trimmed; rebuild seq 1 from what the run knows
            frame = encode(
                WorkflowStarted(
                    type="workflow_started",
                    workflow_id=run.workflow_id,
                    seq=1,
                    workflow=run.workflow,
                    epoch=run.epoch,
                    timestamp=now(),
                )
            )
        if reply_to is None:
            return frame
        return encode(WorkflowStarted.model_validate_json(frame).model_copy(update={"reply_to": reply_to}))

    async def _drive(
        self, run: Run, definition: WorkflowDefinition, params: dict[str, Any], resume: Checkpoint | None = None
    ) -> None:
        logs.enter_run(run.workflow_id, run.workflow, run.owner)  # in the run's own task
        try:
            await self._run_graph(run, definition, params, resume)
        finally:
            if run.finished and not run.moved:
                self.metrics.runs_finished.labels(run.workflow, run.status.value).inc()
                self.metrics.run_duration.labels(run.workflow).observe(time.monotonic() - run.started_at)
            self.in_flight -= 1
            if run.starter is not None:
                run.starter.runs_in_flight -= 1
                run.starter = None
            if run.owner is not None:
                left = self.in_flight_by_user[run.owner] - 1
                if left:
                    self.in_flight_by_user[run.owner] = left
                else:
                    del self.in_flight_by_user[run.owner]

    async def _run_graph(
        self, run: Run, definition: WorkflowDefinition, params: dict[str, Any], resume: Checkpoint | None
    ) -> None:
        # The run's input is what WebSocketNode.prep_async returns by default: one named
        # param (`register(..., input=...)`) or the whole params dict.
        run_input = params if definition.input is None else params.get(definition.input)
        shared: dict[str, Any] = {"params": params, "input": run_input, "workflow_id": run.workflow_id}
        if resume is not None:
            shared = resume.shared
        try:
            with use_run_context(GatewayRunContext(run)):
                graph = definition.build()
                if self.store is not None and isinstance(graph, AsyncGraph):
                    # Durable: a checkpoint in Redis before each node (graphwire.graph.persistence).
                    save = functools.partial(self._save, run, params)
                    await run_checkpointed(graph, shared, save, resume)
                else:
                    await graph.run_async(shared)
            # A graph that left no result (the seed's nodes return None) completes with {}
            # when its result model allows it.
            raw = shared.get("result")
            result = definition.result.model_validate({} if raw is None else raw).model_dump(mode="json")
            if not run.finished:  # the gateway may have ended it meanwhile (end_all)
                run.finish(RunStatus.completed, WorkflowCompleted, data=result)
                run.result = result
        except asyncio.CancelledError:
            if not run.moved:  # a run that moved to another gateway goes on there
                run.finish(RunStatus.cancelled, WorkflowCancelled, reason=run.cancel_reason)
        except InputTimeout as exc:
            self._fail(run, ErrorCode.input_timeout, str(exc))
        except EventTooLarge as exc:
            self._fail(run, ErrorCode.event_too_large, str(exc))
        except ValidationError as exc:
            log.error("workflow %s returned a result that breaks its schema: %s", definition.name, exc)
            self._fail(run, ErrorCode.internal_error, "the workflow's result does not match its result schema")
        except Exception as exc:
            log.exception("run %s failed", run.workflow_id)
            self._fail(run, ErrorCode.node_error, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _fail(run: Run, code: ErrorCode, message: str) -> None:
        run.error = ErrorDetail(code=code, message=message)
        run.finish(RunStatus.failed, WorkflowFailed, error=run.error)

    def attach(self, conn: Connection, run: Run, last_seq: int) -> None:
        conn.runs[run.workflow_id] = last_seq
        run.subscribers.add(conn)

    def detach(self, conn: Connection, run: Run) -> None:
        conn.runs.pop(run.workflow_id, None)
        run.subscribers.discard(conn)
        self.release(run)

    def release(self, run: Run) -> None:
        """A mirror nobody here watches any more is dropped (and its channel left)."""
        if run.mirror and not run.subscribers and not run.pins and self.runs.get(run.workflow_id) is run:
            del self.runs[run.workflow_id]
            self.broker.unwatch(RUN + run.workflow_id)

    def subscribe(
        self, conn: Connection, run: Run, since_seq: int, reply_to: str | None, epoch: str | None = None
    ) -> None:
        """Answer ``subscribed`` with the snapshot, replay after ``since_seq``, then go live.

        Everything here is synchronous, so no event can slip between the replay and the
        live subscription: no gap, no duplicate. A client that names another ``epoch``
        (the log was lost and recreated since it last looked) gets the whole log and
        ``recovered: false``.
        """
        self.check_since(run, since_seq, reply_to, epoch)
        other_log = epoch is not None and epoch != run.epoch
        resuming = since_seq > 0 or epoch is not None
        if other_log:
            since_seq = 0
        first = run.first_seq
        truncated = since_seq + 1 < first
        if resuming:
            outcome = "new_epoch" if other_log else "truncated" if truncated else "recovered"
            self.metrics.resumes.labels(outcome).inc()
        conn.enqueue(
            encode(
                Subscribed(
                    type="subscribed",
                    reply_to=reply_to,
                    topics=sorted(conn.topics),
                    workflow_id=run.workflow_id,
                    since_seq=since_seq,
                    first_seq=first if run.log else None,
                    log_truncated=truncated,
                    epoch=run.epoch,
                    recovered=not (truncated or other_log),
                    snapshot=run.snapshot(),
                )
            )
        )
        # Already attached on this connection: never send a seq twice.
        self._replay(conn, run, max(since_seq, conn.runs.get(run.workflow_id, 0)))

    @staticmethod
    def check_since(run: Run, since_seq: int, reply_to: str | None, epoch: str | None = None) -> None:
        if since_seq > run.last_seq and (epoch is None or epoch == run.epoch):
            # The client claims events the run never had: answering `subscribed` would leave
            # it waiting for seqs it thinks it has. Nothing is attached.
            raise ProtocolError(
                ErrorCode.since_seq_ahead,
                f"since_seq {since_seq} is above the run's last seq {run.last_seq}",
                "since_seq",
                reply_to,
                run.workflow_id,
            )

    def _replay(self, conn: Connection, run: Run, after: int) -> None:
        """Queue the logged events after ``after``, then attach live, in one synchronous step."""
        for seq, frame in run.log:
            if seq > after:
                conn.enqueue(frame)
        self.attach(conn, run, max(after, run.last_seq))

    def answer(
        self,
        run: Run,
        node_id: str,
        request_id: str | None,
        data: dict[str, Any],
        reply_to: str | None,
        idempotency_key: str | None = None,
    ) -> None:
        """The first valid ``node_input`` for a request wins.

        A repeat of the applied answer itself (same ``idempotency_key``, same ``data``: an
        SDK re-sending after a reconnect) returns quietly, so the caller acks it again;
        the request is not answered twice and nothing is logged.
        """
        wid = run.workflow_id
        if idempotency_key is not None and self._is_repeat(run, node_id, request_id, data, idempotency_key):
            return
        if request_id is not None:
            pending = run.pending.get(request_id)
            if pending is None or pending.node_id != node_id:
                if request_id in run.answered:
                    raise ProtocolError(
                        ErrorCode.input_already_answered,
                        f"input request {request_id!r} was already answered",
                        "request_id",
                        reply_to,
                        wid,
                    )
                if run.finished:
                    raise ProtocolError(ErrorCode.run_finished, f"run {wid!r} has ended", "workflow_id", reply_to, wid)
                raise ProtocolError(
                    ErrorCode.unknown_request,
                    f"node {node_id!r} has no open input request {request_id!r}",
                    "request_id",
                    reply_to,
                    wid,
                )
        else:
            if run.finished:
                raise ProtocolError(ErrorCode.run_finished, f"run {wid!r} has ended", "workflow_id", reply_to, wid)
            pending = next((p for p in run.pending.values() if p.node_id == node_id), None)
            if pending is None:
                raise ProtocolError(
                    ErrorCode.no_pending_input, f"node {node_id!r} is not waiting for input", "node_id", reply_to, wid
                )
        if pending.options is not None and data.get("value") not in pending.options:
            raise ProtocolError(
                ErrorCode.invalid_input,
                f"data.value must be one of {pending.options}",
                "data.value",
                reply_to,
                wid,
            )
        if pending.future.done():  # closed a moment ago (close_input drops it from pending at once)
            if request_id is not None:
                raise ProtocolError(
                    ErrorCode.unknown_request, f"input request {request_id!r} was closed", "request_id", reply_to, wid
                )
            raise ProtocolError(
                ErrorCode.no_pending_input, f"node {node_id!r} stopped waiting", "node_id", reply_to, wid
            )
        run.pending.pop(pending.request_id, None)
        run.answered[pending.request_id] = (pending.node_id, idempotency_key, data)
        if idempotency_key is not None:
            run.answer_keys[idempotency_key] = pending.request_id
        pending.future.set_result(data)
        run.append(InputAnswered, node_id=pending.node_id, request_id=pending.request_id, data=data)
        self.metrics.input_wait.labels(run.workflow).observe(time.monotonic() - pending.opened_at)

    @staticmethod
    def _is_repeat(run: Run, node_id: str, request_id: str | None, data: dict[str, Any], key: str) -> bool:
        answered_id = run.answer_keys.get(key)
        if answered_id is None or (request_id is not None and request_id != answered_id):
            return False
        return run.answered[answered_id] == (node_id, key, data)

    def cancel(self, run: Run, reason: str, reply_to: str | None) -> None:
        if run.finished or run.task is None:
            raise ProtocolError(
                ErrorCode.run_finished, f"run {run.workflow_id!r} has ended", "workflow_id", reply_to, run.workflow_id
            )
        run.cancel_reason = reason
        run.cancel_requested = True
        run.task.cancel()

    def forget_expired(self) -> int:
        """Drop finished runs older than the retention time; returns how many."""
        horizon = time.monotonic() - self.settings.run_retention_seconds
        expired = [wid for wid, run in self.runs.items() if run.finished_at is not None and run.finished_at <= horizon]
        for wid in expired:
            run = self.runs.pop(wid)
            for conn in list(run.subscribers):
                self.detach(conn, run)
            if run.mirror:
                self.broker.unwatch(RUN + wid)
            elif self.store is not None:
                self.store.forget(wid)
        if expired:
            gone = set(expired)
            self._idempotency = {k: v for k, v in self._idempotency.items() if v[1] not in gone}
        return len(expired)

    def end_all(self) -> int:
        """The gateway is stopping: every run in flight ends with ``gateway_shutdown``.

        An in-memory run cannot outlive the process, so its log gets an honest ending
        that its watchers receive before their sockets close; the run's task is then
        cancelled (its own ending is dropped: a run ends once). A durable run store will
        checkpoint here instead, leaving the run to resume on another gateway. Returns
        how many runs were ended.
        """
        ended = 0
        for run in list(self.runs.values()):
            if run.finished or run.mirror or run.moved:
                continue
            self._fail(
                run, ErrorCode.gateway_shutdown, "the gateway stopped while the run was in flight; start it again"
            )
            if run.task is not None:
                run.task.cancel()
            ended += 1
        return ended

    async def shutdown(self) -> None:
        """End what is still in flight and wait for the runs' tasks."""
        self.end_all()
        tasks = [run.task for run in self.runs.values() if run.task is not None and not run.task.done()]
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- runs other gateways own (with Redis) ------------------------------------------

    def spawn(self, work: typing.Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def mirror(self, workflow_id: str, reply_to: str | None) -> Run | None:
        """The run, mirrored from Redis if another gateway owns it; ``None`` if Redis has no such run.

        The caller attaches a watcher at once (or ``release``s the mirror): nothing awaits
        between the return and that step. Raises ``run_unavailable`` when Redis does not
        answer in time.
        """
        store = self.store
        while True:
            run = self.runs.get(workflow_id)
            if run is not None or store is None:
                return run
            building = self._building.get(workflow_id)
            if building is None:
                break
            await asyncio.shield(building.done)
        building = self._building[workflow_id] = _Building(asyncio.get_running_loop().create_future())
        channel = RUN + workflow_id
        built = False
        try:
            # Subscribed first, read second: an event logged in between is both read and
            # woken about, and the second copy is skipped by its seq; none is missed.
            ready = self.broker.watch(channel)
            if ready is not None:
                await ready
            record = await self._read(workflow_id, 0, reply_to)
            if record is None:
                return None
            run = Run.mirror_of(record, self.settings, self.flusher)
            self.runs[workflow_id] = run
            built = True
            for seq, frame in building.frames:
                self._observe(run, seq, frame)
            return run
        finally:
            del self._building[workflow_id]
            building.done.set_result(None)
            if not built:
                self.broker.unwatch(channel)

    def deliver_run_frame(self, workflow_id: str, payload: str) -> None:
        """An owner's wake-up, ``<seq> <epoch> <frame>``: the next event of a mirrored run."""
        seq_text, _, rest = payload.partition(" ")
        epoch, _, frame = rest.partition(" ")
        building = self._building.get(workflow_id)
        if building is not None:
            building.frames.append((int(seq_text), frame))
            return
        run = self.runs.get(workflow_id)
        if run is not None and run.mirror:
            # The owner recreated the log Redis lost: same events, same seqs, a new epoch.
            run.epoch = epoch
            self._observe(run, int(seq_text), frame)

    def _observe(self, run: Run, seq: int, frame: str) -> None:
        if seq <= run.last_seq:
            return  # had it (read from the stream, or a repeated wake-up)
        if seq == run.last_seq + 1 and not run.repairing.busy:
            run.observe(seq, frame)
        else:
            self.repair(run)  # a hole: what is missing is in the stream

    def repair(self, run: Run) -> None:
        """Read what the mirror lacks from the run's stream, by seq (a lost wake-up, a reconnect)."""
        run.repairing.ask(lambda: self._repair(run), self.spawn)

    async def _repair(self, run: Run) -> None:
        assert self.store is not None
        if self.runs.get(run.workflow_id) is not run:
            return  # dropped meanwhile
        try:
            record = await self.store.read(run.workflow_id, after=run.last_seq)
        except Exception as exc:  # Redis out of reach: try again in a moment (and on the next SUBSCRIBE)
            log.warning("could not repair the mirror of run %s from Redis: %s; trying again", run.workflow_id, exc)
            asyncio.get_running_loop().call_later(REPAIR_RETRY, self._repair_again, run)
            return
        if record is None:
            return  # the log is gone from Redis: its owner recreates it and wakes us
        run.epoch = record.epoch
        if record.events and record.events[0][0] > run.last_seq + 1:
            self._lost(run)
            return
        filled = 0
        for seq, frame in record.events:
            if seq == run.last_seq + 1:
                run.observe(seq, frame)
                filled += 1
        if filled:
            self.metrics.broker_gap_repairs.inc()

    def _read_inbox_again(self, run: Run) -> None:
        if self.runs.get(run.workflow_id) is run and not run.finished:
            self.read_inbox(run)

    def _repair_again(self, run: Run) -> None:
        if self.runs.get(run.workflow_id) is run:
            self.repair(run)

    def _lost(self, run: Run) -> None:
        """The stream no longer holds what the mirror lacks: its watchers resume (and are told)."""
        log.warning(
            "run %s: the events after seq %d are gone from Redis; watchers resume", run.workflow_id, run.last_seq
        )
        for conn in list(run.subscribers):
            self.detach(conn, run)
            conn.close_soon(*_LOG_HOLE)
        self.release(run)

    def watching(self, channel: str) -> None:
        """Redis confirmed a subscription: catch up on what may have been missed before it."""
        if channel.startswith(RUN):
            run = self.runs.get(channel[len(RUN) :])
            if run is not None and run.mirror:
                self.repair(run)
        elif channel.startswith(GATEWAY):
            for run in list(self.runs.values()):
                if not run.mirror and not run.finished:
                    self.read_inbox(run)

    def deliver_gateway_frame(self, payload: str) -> None:
        """``inbox <workflow_id>``: another gateway left a command for a run owned here."""
        kind, _, workflow_id = payload.partition(" ")
        run = self.runs.get(workflow_id)
        if kind == "inbox" and run is not None and not run.mirror:
            self.read_inbox(run)

    def read_inbox(self, run: Run) -> None:
        run.inbox_reading.ask(lambda: self._read_inbox(run), self.spawn)

    async def _read_inbox(self, run: Run) -> None:
        store = self.store
        assert store is not None
        try:
            entries = await store.inbox(run.workflow_id, run.inbox_cursor)
        except Exception as exc:  # Redis out of reach: read again in a moment (and once it is back)
            log.warning("could not read the inbox of run %s: %s; trying again", run.workflow_id, exc)
            asyncio.get_running_loop().call_later(REPAIR_RETRY, self._read_inbox_again, run)
            return
        for entry_id, body in entries:
            run.inbox_cursor = entry_id  # applied once: the cursor moves before the answer
            store.reply(str(body.get("gateway")), str(body.get("command_id")), self._apply(run, body))
        if entries:
            store.done_with(run.workflow_id, run.inbox_cursor)

    def _apply(self, run: Run, body: dict[str, Any]) -> dict[str, Any]:
        """One command from another gateway's client, applied as if it came from here."""
        reply_to = body.get("reply_to")
        try:
            if body.get("op") == "answer":
                self.answer(
                    run,
                    str(body.get("node_id")),
                    body.get("request_id"),
                    dict(body.get("data") or {}),
                    reply_to,
                    body.get("idempotency_key"),
                )
            elif body.get("op") == "cancel":
                self.cancel(run, str(body.get("reason") or "cancelled"), reply_to)
            else:
                raise ProtocolError(ErrorCode.internal_error, f"unknown inbox command {body.get('op')!r}")
        except ProtocolError as exc:
            return {"error": {"code": exc.code.value, "message": exc.message, "path": exc.path}}
        return {"ok": True}

    async def remote(self, workflow_id: str, reply_to: str | None) -> Run | None:
        """The run: this gateway's, its mirror, or (not kept) what Redis says of it; ``None`` if unknown."""
        run = self.runs.get(workflow_id)
        if run is not None or self.store is None:
            return run
        record = await self._read(workflow_id, None, reply_to)
        return None if record is None else Run.mirror_of(record, self.settings, self.flusher)

    async def _read(self, workflow_id: str, after: int | None, reply_to: str | None) -> RunRecord | None:
        """``store.read``; ``run_unavailable`` when Redis does not answer in time."""
        assert self.store is not None
        try:
            return await self.store.read(workflow_id, after)
        except Exception as exc:  # Redis slow or gone
            raise ProtocolError(
                ErrorCode.run_unavailable,
                f"Redis did not answer in time ({type(exc).__name__}); try again",
                "workflow_id",
                reply_to,
                workflow_id,
            ) from None

    async def command(self, run: Run, body: dict[str, Any], reply_to: str | None) -> None:
        """Apply a command to a mirrored run on its owner; its refusal is raised here, as if local."""
        wid = run.workflow_id
        ended = ProtocolError(ErrorCode.run_finished, f"run {wid!r} has ended", "workflow_id", reply_to, wid)
        # An answer to an ended run goes to the owner all the same: it knows whether that
        # request was answered (`input_already_answered` comes first, as on the owner).
        if run.finished and body.get("op") == "cancel":
            raise ended
        assert self.store is not None
        gateway = run.gateway
        if self.runs.get(wid) is run:
            # A mirror kept here may be older than a move of the run: ask Redis who runs it
            # now. (A run `remote` just read is not kept, and already says so.)
            record = await self._read(wid, None, reply_to)
            if record is not None:
                gateway = record.gateway
        assert gateway is not None
        try:
            answer = await self.store.command(wid, gateway, body)
        except Exception as exc:  # Redis, or the owner, did not answer in time
            if run.finished:
                raise ended from None
            raise ProtocolError(
                ErrorCode.run_unavailable,
                f"the gateway running {wid!r} did not answer in time ({type(exc).__name__}); send it again",
                "workflow_id",
                reply_to,
                wid,
            ) from None
        error = answer.get("error")
        if error is not None:
            raise ProtocolError(ErrorCode(error["code"]), error["message"], error.get("path"), reply_to, wid)

    # -- durable runs: checkpoints, leases, taking runs over (with Redis) -------------------

    async def _save(self, run: Run, params: dict[str, Any], checkpoint: Checkpoint) -> None:
        """A checkpoint between two nodes, in Redis before the next node starts (bounded by redis_timeout)."""
        assert self.store is not None
        if checkpoint.node_id is None:
            return  # the graph ended: its terminal event says so
        try:
            body = checkpoint.to_json()
        except TypeError as exc:  # the shared store holds what JSON cannot: this run is not durable
            if run.checkpoint != "-":
                log.warning("run %s cannot be checkpointed (%s); it will not survive its gateway", run.workflow_id, exc)
            run.checkpoint = "-"
            return
        saved = {"seq": run.last_seq, "params": params, "checkpoint": body, "mail_to": run.mail_to}
        run.checkpoint = orjson.dumps(saved).decode()
        run.checkpoint_version += 1
        if not await self.store.flush(run, self.settings.redis_timeout):
            log.warning("run %s: Redis did not take its checkpoint in time; going on", run.workflow_id)

    def _taken_from_us(self, workflow_id: str) -> None:
        """Another gateway holds the run now: stop it here without an ending; its watchers resume there."""
        run = self.runs.get(workflow_id)
        if run is None or run.mirror or run.finished:
            return
        run.moved = True
        if run.task is not None:
            run.task.cancel()
        for conn in list(run.subscribers):
            self.detach(conn, run)
            conn.close_soon(1013, "the run moved to another gateway: reconnect and resume")
        del self.runs[workflow_id]

    async def take_over_orphans(self) -> int:
        """Claim and resume every run whose gateway went away; how many this gateway took."""
        store = self.store
        if store is None or self.registry is None:
            return 0
        taken = 0
        for workflow_id in await store.orphans():
            if self.handing_over:
                break
            fence = await store.claim_run(workflow_id)
            if fence and await self._resume(workflow_id, fence):
                taken += 1
                self.metrics.runs_reclaimed.inc()
        return taken

    async def _resume(self, workflow_id: str, fence: int) -> bool:
        """Go on with a run another gateway held, from its last checkpoint."""
        store, registry = self.store, self.registry
        assert store is not None
        assert registry is not None
        record = await store.read(workflow_id, after=0)
        if record is None or self.handing_over:
            # Claimed just before this gateway began to hand its runs over: left unresumed,
            # its lease lapses and another gateway takes it (a run here now would only end).
            return False
        run = Run.mirror_of(record, self.settings, self.flusher)
        run.mirror, run.gateway, run.fence, run.store = False, None, fence, store
        run.checkpoint = record.checkpoint or ""
        run.state_seq = run.last_seq
        # Open requests stay open, under the same request_id: the node asks again, gets the same one.
        loop = asyncio.get_running_loop()
        for request in run.pending.values():
            request.future = loop.create_future()
            run.carried[request.request_id] = request
        mirror = self.runs.get(workflow_id)
        self.runs[workflow_id] = run
        if mirror is not None and mirror.mirror:
            # This gateway's watchers stay attached, and first get what the mirror had not
            # shown them yet (the log read above may be ahead of it).
            self.broker.unwatch(RUN + workflow_id)
            for conn in list(mirror.subscribers):
                self._replay(conn, run, conn.runs.get(workflow_id, 0))
        definition = registry.get(record.workflow)
        saved = orjson.loads(record.checkpoint) if record.checkpoint and record.checkpoint != "-" else None
        if definition is None or saved is None or run.finished:
            if not run.finished:
                why = "its workflow is not registered here" if definition is None else "it could not be checkpointed"
                log.warning("run %s: taken over, but %s: it ends here", workflow_id, why)
                self._fail(run, ErrorCode.gateway_shutdown, f"the run's gateway went away and {why}; start it again")
            return False
        checkpoint = Checkpoint.from_json(saved["checkpoint"]) if saved.get("checkpoint") else None
        run.mail_to = saved.get("mail_to") or run.owner
        self._address(run)
        where = checkpoint.node_id if checkpoint is not None else "the start"
        log.info("run %s: taken over from its gateway; resuming at %s", workflow_id, where)
        run.append(RunResumed, from_seq=max(1, int(saved["seq"])))
        store.hold(run)
        self.in_flight += 1
        if run.owner is not None:
            self.in_flight_by_user[run.owner] = self.in_flight_by_user.get(run.owner, 0) + 1
        params = dict(saved.get("params") or {})
        run.task = loop.create_task(self._drive(run, definition, params, checkpoint))
        self.read_inbox(run)  # answers and cancels sent while nobody held the run
        return True

    async def orphan_loop(self) -> None:
        """Look for runs whose gateway went away, twice per lease time (and when woken)."""
        if self.store is None:
            return
        period = self.settings.run_lease_seconds / 2
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(period * (0.75 + 0.5 * random.random())):
                    await self._orphans_woken.wait()
            self._orphans_woken.clear()
            try:
                await self.take_over_orphans()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis out: try again next time
                log.debug("looking for orphaned runs failed: %s", exc)

    def orphans_released(self) -> None:
        """A gateway handed its runs over (SIGTERM): look now, not at the next tick."""
        self._orphans_woken.set()

    async def hand_over(self) -> int:
        """SIGTERM with Redis: stop every run here without an ending and give its lease up."""
        assert self.store is not None
        self.handing_over = True
        moving = [run for run in self.runs.values() if not run.mirror and not run.finished and run.checkpoint != "-"]
        for run in moving:
            run.moved = True
            if run.task is not None:
                run.task.cancel()
        await asyncio.sleep(0)  # let the tasks unwind (they log nothing more)
        return await self.store.release(list(moving))
