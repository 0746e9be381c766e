"""``GraphwireClient``: the asyncio client, a thin I/O adapter around the sans-I/O ``ClientCore``.

One task keeps the connection: connect, wait for ``connected``, write what the core
queued (resubscribes first), then read frames into the core until the socket ends; on
a drop it reconnects after a full-jitter backoff (above the ``Retry-After`` of a refused
handshake), and gives up after ``ReconnectPolicy.max_attempts`` failed attempts in a row.
With a ``get_token``, a second task per connection renews the token in band before it
expires (``_auth.keep_fresh``), and a 4002 close is one more reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel

from graphwire_client._auth import TokenProvider, call_provider, keep_fresh
from graphwire_client._backoff import ReconnectPolicy
from graphwire_client._core import ClientCore, Delivery, PendingCommand, Received, RunState
from graphwire_client._generated.commands import Commands
from graphwire_client._generated.events import SERVER_EVENT_TYPES, EventHandlers, Unregister
from graphwire_client._generated.messages import (
    Ack,
    CloseCode,
    Connected,
    Mail,
    RefreshToken,
    StartWorkflow,
    Subscribe,
    Subscribed,
    SystemAlert,
    TopicMessage,
    WorkflowStarted,
)
from graphwire_client._generated.typed_workflows import TypedStartWorkflow, Workflows
from graphwire_client._handlers import Handler, HandlerRunner
from graphwire_client._mail import Mailbox, MailClaim
from graphwire_client._run import Run
from graphwire_client._state import ConnectionState, StateChange
from graphwire_client._subscription import Subscription
from graphwire_client._transport import HandshakeRefused, Socket, Transport, TransportClosed, WebSocketTransport
from graphwire_client._workflow import ParamsInput
from graphwire_client.exceptions import ClientClosed, ConnectionLost, GraphwireError, close_error

__all__ = ["DEFAULT_URL", "GraphwireClient"]

log = logging.getLogger("graphwire_client")

DEFAULT_URL = "ws://127.0.0.1:8000/ws/workflow"
# Close codes that another attempt cannot fix: bad token, missing scope, origin refused,
# a frame above the limit (the same frame would be sent again); an expired token too,
# unless get_token can give a fresh one.
_NO_RETRY = frozenset(
    {
        CloseCode.unauthorized,
        CloseCode.token_expired,
        CloseCode.forbidden,
        CloseCode.policy_violation,
        CloseCode.message_too_big,
    }
)
# A rate-limited retry waits retry_after plus up to this fraction of it, so that the
# clients refused together do not come back together.
_RETRY_JITTER = 0.2
# The workflow channel's ``client_id`` query parameter (spec: channels.workflow.bindings.ws.query).
_CLIENT_ID = re.compile(r"cl_[0-9a-f]{16}")
# Mail handed out within this many seconds is acknowledged with one ``ack_mail``.
MAIL_ACK_DELAY = 0.05
# How long close() waits for the answer to its last ``ack_mail``.
_CLOSE_ACK_TIMEOUT = 2.0
# Mail kept, unacknowledged, while no on("mail") handler and no client.mail() takes it.
_MAIL_BACKLOG = 1000

R = TypeVar("R")
ReplyT = TypeVar("ReplyT", bound=BaseModel)
ModelT = TypeVar("ModelT", bound=BaseModel)


def _as_dict(result: dict[str, Any]) -> dict[str, Any]:
    return result


class GraphwireClient(EventHandlers, TypedStartWorkflow):
    """A connection to a graphwire gateway's ``/ws/workflow`` that survives drops.

    Use it as an async context manager::

        async with GraphwireClient("ws://127.0.0.1:8000/ws/workflow") as client:
            run = await client.start_workflow("data_processing", {"data": [1, 2, 3]})
            async for event in run:
                print(event.type, event.seq)
            print(await run.result())

    ``token`` is sent as ``Authorization: Bearer <token>`` (a header, not the URL, which
    proxies log). ``get_token`` instead (a function returning the token, or an ``async
    def``) is called at every connect and reconnect, and before the token expires: from
    ``connected.expires_at`` the client sends ``refresh_token`` with a fresh one at 80 %
    of the remaining lifetime or 30 s before expiry, whichever is earlier (never before
    half of it), so the connection stays open; if that fails it tries again at halving
    intervals, and a 4002 close (token expired) reconnects with a fresh token and resumes.
    A static ``token`` is not renewed: a 4002 ends the client with ``TokenExpired``. A
    4001 (the token is refused) ends it with ``ConnectionUnauthorized``, a 4003 with
    ``ConnectionForbidden``, without another attempt. ``reconnect`` sets the backoff and
    how many failed attempts in a row end the client (``ConnectionLost``; a ``get_token``
    that raises counts as a failed attempt).

    A command refused with ``rate_limited`` goes again after the frame's ``retry_after``
    when it is safe to repeat (a start or an answer with its ``idempotency_key``,
    ``subscribe``, ``join_group``, ``leave_group``, ``ping``, ``refresh_token``), up to 3
    times; then, and for the others at once, the call raises ``RateLimited``. One
    answered with ``run_unavailable`` (with several gateways, the one running the run did
    not answer; the command may have been applied) goes again the same way, the same
    frame, so an answer keeps its ``idempotency_key``; then, or at once for a
    ``cancel_workflow``, the call raises ``RunUnavailable``.
    Batching is negotiated: by default the client asks for ``batch`` frames (it connects
    with ``?batch=1``, other query parameters kept) and unpacks them; ``batch=False``
    asks for one frame per message (``?batch=0``). The keyword decides: a ``batch`` in
    ``url`` is replaced. ``transport`` replaces the ``websockets`` client (tests).

    ``on(event_type, handler)`` handlers: a plain function is called when its event
    arrives; an ``async def`` one is awaited on the client's handler task, one at a time
    in event order, and ``await run.result()`` returns only once the handlers of every
    event of the run have finished.

    The offline mailbox: ``mail`` (alerts of joined groups and input requests kept while
    the user was away, and operators' ``direct_message``s) comes through
    ``client.mail()`` or ``on("mail", handler)``, each ``mail_seq`` once per client
    object. The client acknowledges it (``ack_mail``) once handed to the application: an
    ``on("mail")`` handler returned (an ``async def`` one finished), and every open
    ``client.mail()`` iterator yielded it; without either it waits, unacknowledged, for
    the first ``client.mail()``. Every reconnect asks for the first connection's client
    id back (``?client_id=``), which owns the mailbox when auth is off; pass
    ``client_id`` (``client.client_id`` of an earlier run) to reclaim it after a restart.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        get_token: TokenProvider | None = None,
        reconnect: ReconnectPolicy | None = None,
        open_timeout: float = 10.0,
        batch: bool = True,
        headers: Mapping[str, str] | None = None,
        transport: Transport | None = None,
        rand: Callable[[], float] = random.random,
        client_id: str | None = None,
    ) -> None:
        if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
            raise ValueError(f"client_id {client_id!r} is not a graphwire client id (cl_ and 16 hex digits)")
        self.url = url
        self._connect_url = _with_query(url, batch="1" if batch else "0")
        if token is not None and get_token is not None:
            raise ValueError("pass token= or get_token=, not both")
        self._token = token
        self._get_token = get_token
        self._headers = dict(headers or {})
        self._policy = reconnect or ReconnectPolicy()
        self._open_timeout = open_timeout
        self._transport: Transport = transport or WebSocketTransport()
        self._rand = rand
        self._core = ClientCore(client_id)
        self.commands = Commands(self._send_command)
        """Every command of the spec as a typed method returning the server's direct answer."""
        self.workflows = Workflows(self)
        """The spec's workflows as typed handles: ``client.workflows.chat.start(message="hi")``."""
        self._state = ConnectionState.disconnected
        self._handlers: dict[str, list[Handler]] = {}
        self._runner = HandlerRunner(f"graphwire-client handlers {url}")
        self._futures: dict[str, asyncio.Future[PendingCommand]] = {}
        self._wakers: weakref.WeakKeyDictionary[RunState, asyncio.Event] = weakref.WeakKeyDictionary()
        self._topic_subs: dict[str, list[Subscription[TopicMessage]]] = {}
        self._group_subs: dict[str, list[Subscription[SystemAlert]]] = {}
        self._mailboxes: list[Mailbox] = []
        self._mail_backlog: deque[MailClaim] = deque()
        self._ack_task: asyncio.Task[None] | None = None
        self._socket: Socket | None = None
        self._send_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._retry_at = 0.0
        self._ready: asyncio.Future[None] | None = None
        self._terminal: GraphwireError | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<GraphwireClient {self.url} {self._state.value}>"

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """``disconnected``, ``connecting`` or ``connected``; changes are ``on("state", ...)`` events."""
        return self._state

    @property
    def client_id(self) -> str | None:
        """The id the server gave this connection (``None`` while offline).

        Every reconnect asks for the first one back (or for the ``client_id`` passed in),
        so it stays the same unless the server gave a new one (the old connection was
        still open there).
        """
        hello = self._core.connected
        return hello.client_id if hello is not None else None

    @property
    def user(self) -> str | None:
        """The token's ``sub`` as the server read it (``None`` with auth off, or offline)."""
        hello = self._core.connected
        return hello.user if hello is not None else None

    @property
    def server_info(self) -> Connected | None:
        """The current connection's ``connected`` greeting (protocol version, limits)."""
        return self._core.connected

    async def connect(self) -> None:
        """Connect, retrying per the ``ReconnectPolicy``; returns once the server greeted us.

        Raises ``ConnectionLost`` after ``max_attempts`` failed attempts, or
        ``ConnectionRejected`` when the server refuses the client for good: its subclasses
        ``ConnectionUnauthorized`` (4001), ``TokenExpired`` (4002 with a static token) and
        ``ConnectionForbidden`` (4003), or itself (1008, 1009).
        """
        if self._closed:
            raise ClientClosed("this client was closed; create a new one")
        if self._task is not None:
            return
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._maintain(), name=f"graphwire-client {self.url}")
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection; pending commands and open runs raise ``ClientClosed``."""
        if self._closed:
            return
        await self._ack_mail_before_close()
        self._closed = True
        if self._ack_task is not None:
            self._ack_task.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ClientClosed("the client was closed while connecting"))
            self._ready.exception()  # retrieved: connect() re-raises it itself
        self._dispatch(self._core.fail_all(ClientClosed("the client was closed")))
        for sub in self._subscriptions():
            sub._closed = True
            sub._wakeup.set()
        self._end_mail()
        self._set_state(ConnectionState.disconnected)
        await self._runner.close()  # a handler may be the one closing the client: it is not waited for

    async def __aenter__(self) -> GraphwireClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the high-level API ------------------------------------------------------------

    async def _start_run(
        self,
        workflow: str,
        params: ParamsInput,
        parse_result: Callable[[dict[str, Any]], R],
        idempotency_key: str | None,
    ) -> Run[R]:
        if isinstance(params, BaseModel):
            payload = params.model_dump(mode="json", exclude_unset=True)
        else:
            payload = dict(params or {})
        message = StartWorkflow(
            type="start_workflow", workflow=workflow, params=payload, idempotency_key=idempotency_key
        )
        pending = await self._request(message, WorkflowStarted)
        assert pending.run is not None
        return Run(self, pending.run, parse_result)

    @overload
    async def attach(self, workflow_id: str, since_seq: int = 0) -> Run[dict[str, Any]]: ...

    @overload
    async def attach(self, workflow_id: str, since_seq: int = 0, *, result_type: type[ModelT]) -> Run[ModelT]: ...

    async def attach(
        self, workflow_id: str, since_seq: int = 0, *, result_type: type[BaseModel] | None = None
    ) -> Run[Any]:
        """Follow a run started elsewhere: its events after ``since_seq`` (0: all), then live ones.

        Returns once the server answered ``subscribed`` (``run.snapshot``,
        ``run.pending_inputs``). ``result_type`` types ``await run.result()`` (e.g.
        ``ApprovalResult``); without it the result is a ``dict``. Raises ``UnknownRun``.
        If this client already follows the run, returns it (from the events it has).
        """
        parse: Callable[[dict[str, Any]], Any] = result_type.model_validate if result_type else _as_dict
        existing = self._core.runs.get(workflow_id)
        if existing is not None:
            return Run(self, existing, parse)
        message = Subscribe(type="subscribe", workflow_id=workflow_id, since_seq=since_seq)
        pending = await self._request(message, Subscribed)
        assert pending.run is not None
        return Run(self, pending.run, parse)

    async def subscribe(self, *topics: str, buffer: int = 1000) -> Subscription[TopicMessage]:
        """Receive ``topic_message``s published on ``topics`` (``POST /api/publish``).

        Returns once the server answered ``subscribed``; renewed after every reconnect.
        ``await subscription.close()`` unsubscribes.
        """
        if not topics:
            raise ValueError("subscribe() needs at least one topic")
        names = frozenset(topics)
        sub: Subscription[TopicMessage] = Subscription(names, lambda: self._close_topics(sub), buffer)
        for topic in names:
            self._topic_subs.setdefault(topic, []).append(sub)
        try:
            await self.commands.subscribe(topics=sorted(names))
        except BaseException:
            self._drop_sub(self._topic_subs, sub)
            raise
        return sub

    async def join_group(self, group: str, *, buffer: int = 1000) -> Subscription[SystemAlert]:
        """Join ``group`` and receive its ``system_alert`` broadcasts; rejoined after every reconnect.

        ``await subscription.close()`` leaves the group.
        """
        sub: Subscription[SystemAlert] = Subscription(frozenset({group}), lambda: self._close_group(sub), buffer)
        self._group_subs.setdefault(group, []).append(sub)
        try:
            await self.commands.join_group(group)
        except BaseException:
            self._drop_sub(self._group_subs, sub)
            raise
        return sub

    def mail(self, *, buffer: int = 1000) -> Mailbox:
        """The user's mailbox: ``async for mail in client.mail()`` yields each ``Mail``, in ``mail_seq`` order.

        ``mail.message`` is a ``SystemAlert``, an ``InputRequest`` or a ``DirectMessage``
        (tell them apart by ``mail.message.type``). Taking a mail from the iterator
        acknowledges it; the first ``client.mail()`` also gets the mail that arrived
        before it. ``await mailbox.close()`` stops it.
        """
        mailbox = Mailbox(self._close_mailbox, buffer)
        if self._closed or self._terminal is not None:
            mailbox._end(self._terminal)
            return mailbox
        while self._mail_backlog:
            mailbox._push(self._mail_backlog.popleft(), held=True)
        self._mailboxes.append(mailbox)
        return mailbox

    async def ping(self) -> float:
        """Round trip to the server and back (``ping`` → ``pong``), in seconds."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.commands.ping()
        return loop.time() - started

    # --- subscriptions -----------------------------------------------------------------

    @staticmethod
    def _drop_sub(table: dict[str, list[Subscription[Any]]], sub: Subscription[Any]) -> list[str]:
        """Remove ``sub``; returns the names nobody else subscribes to any more."""
        orphaned = []
        for name in sub.names:
            subs = table.get(name, [])
            if sub in subs:
                subs.remove(sub)
            if not subs:
                table.pop(name, None)
                orphaned.append(name)
        return sorted(orphaned)

    def _subscriptions(self) -> list[Subscription[Any]]:
        subs: list[Subscription[Any]] = []
        for topic_subs in self._topic_subs.values():
            subs.extend(topic_subs)
        for group_subs in self._group_subs.values():
            subs.extend(group_subs)
        return subs

    async def _close_topics(self, sub: Subscription[TopicMessage]) -> None:
        orphaned = self._drop_sub(self._topic_subs, sub)
        if orphaned and self._usable():
            await self.commands.unsubscribe(topics=orphaned)

    async def _close_group(self, sub: Subscription[SystemAlert]) -> None:
        orphaned = self._drop_sub(self._group_subs, sub)
        if orphaned and self._usable():
            await self.commands.leave_group(orphaned[0])

    # --- mail --------------------------------------------------------------------------

    def _deliver_mail(self, delivery: Delivery) -> None:
        """Hand a ``mail`` to the ``on("mail")`` handlers and the mailboxes (else keep it); acknowledge it after."""
        mail = delivery.message
        assert isinstance(mail, Mail)
        box, generation = delivery.mailbox, delivery.mail_generation

        def handled(_claim: MailClaim) -> None:
            if box is not None:
                box.handed_out(mail.mail_seq, generation)
                self._schedule_mail_ack()

        claim = MailClaim(mail, handled)
        claim.hold()  # until every consumer below has it
        handlers = bool(self._handlers.get("mail"))
        if handlers:
            self._emit("mail", mail)
            claim.hold()
            self._runner.then(claim.release)  # once the async handlers finished too
        for mailbox in self._mailboxes:
            mailbox._push(claim)
        if not handlers and not self._mailboxes:
            claim.hold()
            self._keep_mail(claim)
        self._emit("*", mail)
        claim.release()

    def _keep_mail(self, claim: MailClaim) -> None:
        """Keep a held mail for the next ``client.mail()``; beyond the bound the oldest is let go of."""
        self._mail_backlog.append(claim)
        if len(self._mail_backlog) > _MAIL_BACKLOG:
            self._mail_backlog.popleft().release()

    def _close_mailbox(self, mailbox: Mailbox, unread: list[MailClaim]) -> None:
        if mailbox in self._mailboxes:
            self._mailboxes.remove(mailbox)
        for claim in unread:
            if self._mailboxes:
                claim.release()  # the other mailboxes have it
            else:
                self._keep_mail(claim)

    def _end_mail(self, error: GraphwireError | None = None) -> None:
        """The client is done: the mailboxes end; what they did not yield stays unacknowledged."""
        for mailbox in self._mailboxes:
            mailbox._end(error)
        self._mailboxes.clear()
        self._mail_backlog.clear()

    def _schedule_mail_ack(self) -> None:
        if self._ack_task is None and self._usable():
            self._ack_task = asyncio.create_task(self._send_mail_ack(), name=f"graphwire-client ack_mail {self.url}")

    async def _send_mail_ack(self) -> None:
        try:
            await asyncio.sleep(MAIL_ACK_DELAY)  # what the application handles meanwhile goes in the same ack
        finally:
            self._ack_task = None
        if self._core.queue_mail_ack() is not None:
            await self._flush()

    async def _ack_mail_before_close(self) -> None:
        """Tell the server, before closing, what mail the application handled (best effort)."""
        box = self._core.mailbox
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError, GraphwireError):
            async with asyncio.timeout(_CLOSE_ACK_TIMEOUT):
                while box is not None and self._socket is not None and self._terminal is None:
                    ack_id = box.acking
                    if ack_id is None:
                        queued = self._core.queue_mail_ack()
                        if queued is None:
                            return
                        ack_id = queued.id
                    future = self._futures.setdefault(ack_id, loop.create_future())
                    try:
                        await self._flush()
                        await future
                    finally:
                        self._futures.pop(ack_id, None)

    # --- events ------------------------------------------------------------------------

    def _add_handler(self, event: str, handler: Handler) -> Unregister:
        if event not in SERVER_EVENT_TYPES and event not in ("state", "*"):
            known = ", ".join(sorted(SERVER_EVENT_TYPES))
            raise ValueError(f"unknown event type {event!r}; expected 'state', '*' or one of {known}")
        handlers = self._handlers.setdefault(event, [])
        handlers.append(handler)

        def unregister() -> None:
            if handler in handlers:
                handlers.remove(handler)

        return unregister

    def _emit(self, event: str, payload: object) -> None:
        for handler in list(self._handlers.get(event, ())):
            self._runner.call(event, handler, payload)

    async def _handlers_settled(self) -> None:
        await self._runner.settled()

    def _set_state(self, new: ConnectionState, attempt: int = 0, error: BaseException | None = None) -> None:
        old = self._state
        if new is old:
            return
        self._state = new
        self._emit("state", StateChange(old, new, attempt, error))

    def _deliver(self, delivery: Delivery) -> None:
        message = delivery.message
        if isinstance(message, Mail):
            self._deliver_mail(delivery)
            return
        if isinstance(message, TopicMessage):
            for topic_sub in list(self._topic_subs.get(message.topic, ())):
                topic_sub._push(message)
        elif isinstance(message, SystemAlert):
            for group_sub in list(self._group_subs.get(message.group, ())):
                group_sub._push(message)
        self._emit(message.type, message)
        self._emit("*", message)

    def _dispatch(self, received: Received) -> None:
        if received.retry_after is not None:
            self._retry_later(received.retry_after)
        for pending in received.settled:
            if isinstance(pending.message, RefreshToken) and pending.reply is not None:
                self._token = pending.message.token  # in force now: reconnects present it
            future = self._futures.pop(pending.id, None)
            if future is None or future.done():
                continue
            if pending.error is not None:
                future.set_exception(pending.error)
            else:
                future.set_result(pending)
        for run in received.changed:
            waker = self._wakers.pop(run, None)
            if waker is not None:
                waker.set()
        for delivery in received.deliveries:
            self._deliver(delivery)

    async def _wait_run(self, state: RunState) -> None:
        waker = self._wakers.get(state)
        if waker is None:
            waker = self._wakers[state] = asyncio.Event()
        await waker.wait()

    # --- commands ----------------------------------------------------------------------

    def _usable(self) -> bool:
        return self._task is not None and not self._closed and self._terminal is None

    async def _request(self, message: BaseModel, reply: type[BaseModel], *, internal: bool = False) -> PendingCommand:
        """Queue a command, write it when connected, and wait for its answer (across reconnects).

        An ``internal`` one belongs to the current connection: a drop forgets it, and whoever
        awaits it is cancelled with the connection (the token refresher).
        """
        if self._terminal is not None:
            raise self._terminal
        if self._closed or self._task is None:
            raise ClientClosed("the client is not connected; use `async with GraphwireClient(...)` or connect()")
        pending = self._core.command(message, reply, internal=internal)
        future: asyncio.Future[PendingCommand] = asyncio.get_running_loop().create_future()
        self._futures[pending.id] = future
        try:
            await self._flush()
            return await future
        except asyncio.CancelledError:
            self._core.forget(pending)
            raise
        finally:
            self._futures.pop(pending.id, None)

    async def _send_command(self, message: BaseModel, reply: type[ReplyT]) -> ReplyT:
        pending = await self._request(message, reply)
        answer = pending.reply
        if not isinstance(answer, reply):  # pragma: no cover - the server answered with another type
            raise GraphwireError(f"expected {reply.__name__} in answer to {pending.message_type}, got {answer!r}")
        return answer

    async def _flush(self) -> None:
        """Write every command the core has queued, in order (one writer at a time)."""
        async with self._send_lock:
            socket = self._socket
            if socket is None:
                return
            to_send, refused = self._core.take_outgoing()
            if refused:
                self._dispatch(Received(settled=refused))
            for _pending, frame in to_send:
                try:
                    await socket.send(frame)
                except Exception as exc:  # the reader sees the drop; these go again after reconnecting
                    log.debug("send failed: %s", exc)
                    return

    def _retry_later(self, delay: float) -> None:
        """Release the commands held after ``rate_limited`` in ``delay`` seconds (or later, if already due later).

        One release for all of them, so they go again in the order they were first sent.
        """
        loop = asyncio.get_running_loop()
        at = loop.time() + delay * (1 + _RETRY_JITTER * self._rand())
        if self._retry_task is not None:
            if at <= self._retry_at:
                return
            self._retry_task.cancel()
        self._retry_at = at
        self._retry_task = asyncio.create_task(
            self._release_held(at - loop.time()), name=f"graphwire-client retry {self.url}"
        )

    async def _release_held(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._retry_task = None
        self._core.release_held()
        await self._flush()

    # --- the token ---------------------------------------------------------------------

    async def _connect_headers(self) -> dict[str, str]:
        """The handshake's headers, with the token: a fresh one from ``get_token``, else the static one."""
        if self._get_token is not None:
            async with asyncio.timeout(self._open_timeout):
                token: str | None = await call_provider(self._get_token)
        else:
            token = self._token
        if token is None:
            return self._headers
        headers = {k: v for k, v in self._headers.items() if k.lower() != "authorization"}
        headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _send_refresh(self, token: str) -> None:
        await self._request(RefreshToken(type="refresh_token", token=token), Ack, internal=True)

    # --- the connection task -----------------------------------------------------------

    async def _maintain(self) -> None:
        failures = 0
        first = True
        error: BaseException | None = None
        while True:
            if not first:
                # A refused handshake's Retry-After is a floor under the jittered delay.
                floor = (error.retry_after or 0.0) if isinstance(error, HandshakeRefused) else 0.0
                await asyncio.sleep(self._policy.delay(failures, self._rand, floor))
            first = False
            self._set_state(ConnectionState.connecting, failures, error)
            greeted = False
            try:
                headers = await self._connect_headers()
                socket = await self._transport.connect(
                    self._attempt_url(), headers=headers, open_timeout=self._open_timeout
                )
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel (close())
                    # that arrives as the greeting does, and the client would never stop.
                    async with asyncio.timeout(self._open_timeout):
                        hello = await self._greeting(socket)
                    greeted = True
                    failures = 0
                    self._online(socket, hello)
                    await self._flush()
                    await self._read(socket)
                finally:
                    self._offline()
                    await socket.close()
            except TransportClosed as exc:
                error = exc
                if exc.code == CloseCode.token_expired and self._get_token is not None:
                    log.info("the token expired (4002); reconnecting to %s with a fresh one", self.url)
                elif exc.code in _NO_RETRY:
                    self._give_up(close_error(exc.code or 0, exc.reason), exc)
                    return
                else:
                    log.info("connection to %s closed: %s", self.url, exc)
            except Exception as exc:
                error = exc
                log.info("connection to %s failed: %r", self.url, exc)
            if not greeted:
                failures += 1
                if failures >= self._policy.max_attempts:
                    lost = ConnectionLost(f"could not connect to {self.url} after {failures} attempts", failures)
                    self._give_up(lost, error)
                    return

    def _attempt_url(self) -> str:
        """The URL of the next attempt: asking for the client id to take over, once there is one."""
        client_id = self._core.resume_client_id
        return self._connect_url if client_id is None else _with_query(self._connect_url, client_id=client_id)

    async def _greeting(self, socket: Socket) -> Connected:
        while True:
            received = self._core.receive_text(await socket.recv())
            self._dispatch(received)
            for delivery in received.deliveries:
                if isinstance(delivery.message, Connected):
                    return delivery.message

    async def _read(self, socket: Socket) -> None:
        while True:
            text = await socket.recv()
            self._dispatch(self._core.receive_text(text))
            await self._flush()

    def _online(self, socket: Socket, hello: Connected) -> None:
        self._socket = socket
        self._core.connection_made(hello)
        if self._get_token is not None and hello.expires_at is not None:
            refreshing = keep_fresh(
                self._get_token, hello.expires_at, self._send_refresh, self._usable, timeout=self._open_timeout
            )
            self._refresher = asyncio.create_task(refreshing, name=f"graphwire-client refresh {self.url}")
        self._set_state(ConnectionState.connected)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _offline(self) -> None:
        self._socket = None
        for task in (self._refresher, self._retry_task):
            if task is not None:
                task.cancel()  # both belong to this connection
        self._refresher = self._retry_task = None
        self._core.connection_lost()

    def _give_up(self, error: GraphwireError, cause: BaseException | None) -> None:
        error.__cause__ = cause
        self._terminal = error
        log.warning("giving up on %s: %s", self.url, error)
        self._dispatch(self._core.fail_all(error))
        for sub in self._subscriptions():
            sub._fail(error)
        self._end_mail(error)
        self._set_state(ConnectionState.disconnected, error=error)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)


def _with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set, replacing those names and keeping every other parameter as it was."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()])))
