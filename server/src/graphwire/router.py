"""The command router: one parsed client message on one connection → its effects.

Every refusal is a ``ProtocolError`` that the endpoint turns into an ``error`` frame;
nothing here closes a socket or touches another client's state.

With auth on, every command is checked against the connection's token: a run belongs to
the ``sub`` that started it, and others need a scope (``runs:read``, ``runs:answer``,
``runs:cancel``). A refused caller gets ``forbidden`` whether or not the run exists, so
a ``workflow_id`` tells nothing to someone who may not see it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from pydantic import BaseModel

from graphwire._generated.messages import (
    Ack,
    AckMail,
    CancelWorkflow,
    ChatMessage,
    ErrorCode,
    JoinGroup,
    LeaveGroup,
    NodeInput,
    Ping,
    Pong,
    RefreshToken,
    StartWorkflow,
    Subscribe,
    Subscribed,
    Unsubscribe,
)
from graphwire.auth import Authenticator, TokenRefused
from graphwire.connections import Connection, ConnectionManager, Ready, ensure_room
from graphwire.mailbox import MailboxUnavailable
from graphwire.post_office import PostOffice
from graphwire.protocol import ProtocolError, encode, error_frame, now
from graphwire.rate_limits import ABUSE, CommandLimits
from graphwire.registry import WorkflowRegistry
from graphwire.runs import Run, RunManager

__all__ = ["Router"]

log = logging.getLogger("graphwire.router")


class Router:
    """Applies client commands (the spec's ``receive`` operations)."""

    def __init__(
        self,
        registry: WorkflowRegistry,
        runs: RunManager,
        connections: ConnectionManager,
        auth: Authenticator | None = None,
        limits: CommandLimits | None = None,
        post: PostOffice | None = None,
    ) -> None:
        self.post = post
        self.registry = registry
        self.runs = runs
        self.connections = connections
        self.auth = auth
        self.limits = limits

    async def over_limit(self, conn: Connection, command: str, reply_to: str | None) -> bool:
        """True: close the connection (1008). Raises ``rate_limited`` for one command too many.

        Awaits Redis (at most ``redis_timeout``) only for a user's limit shared by all gateways.
        """
        if self.limits is None:
            return False
        user = conn.principal.sub if conn.principal is not None else None
        wait = await self.limits.check(conn.client_id, user, command)
        if wait is None:
            return False
        if wait == ABUSE:
            self.connections.metrics.abuse_closes.inc()
            return True
        self.connections.metrics.rate_limited.inc()
        raise ProtocolError(
            ErrorCode.rate_limited,
            f"rate limit exceeded: retry in {wait:.2f} s",
            None,
            reply_to,
            retry_after=round(wait, 3),
        )

    def handle(self, conn: Connection, message: BaseModel) -> None:
        if isinstance(message, Ping):
            conn.enqueue(encode(Pong(type="pong", reply_to=message.id, timestamp=now())))
        elif isinstance(message, StartWorkflow):
            self.start_workflow(conn, message)
        elif isinstance(message, NodeInput):
            if self._elsewhere(message.workflow_id):
                body = {
                    "op": "answer",
                    "node_id": message.node_id,
                    "request_id": message.request_id,
                    "data": message.data,
                    "idempotency_key": message.idempotency_key,
                    "reply_to": message.id,
                }
                self._later(
                    conn,
                    message.id,
                    self._remote(conn, message.workflow_id, "runs:answer", message.id, body, "node_input"),
                )
                return
            run = self._run(conn, message.workflow_id, "runs:answer", message.id)
            self.runs.answer(
                run, message.node_id, message.request_id, message.data, message.id, message.idempotency_key
            )
            self._ack(conn, message.id, "node_input", run.workflow_id)
        elif isinstance(message, Subscribe):
            self.subscribe(conn, message)
        elif isinstance(message, Unsubscribe):
            if message.workflow_id is not None:
                self.runs.detach(conn, self._run(conn, message.workflow_id, "runs:read", message.id))
            for topic in message.topics or ():
                self.connections.unsubscribe_topic(conn, topic)
            self._ack(conn, message.id, "unsubscribe", message.workflow_id)
        elif isinstance(message, CancelWorkflow):
            if self._elsewhere(message.workflow_id):
                body = {"op": "cancel", "reason": f"cancelled by client {conn.client_id}", "reply_to": message.id}
                self._later(
                    conn,
                    message.id,
                    self._remote(conn, message.workflow_id, "runs:cancel", message.id, body, "cancel_workflow"),
                )
                return
            run = self._run(conn, message.workflow_id, "runs:cancel", message.id)
            self.runs.cancel(run, f"cancelled by client {conn.client_id}", message.id)
            self._ack(conn, message.id, "cancel_workflow", run.workflow_id)
        elif isinstance(message, JoinGroup):
            if conn.principal is not None and not conn.principal.may_with("groups:join", message.group):
                raise ProtocolError(
                    ErrorCode.forbidden,
                    f"joining {message.group!r} needs groups:join:{message.group}",
                    "group",
                    message.id,
                )
            if message.group not in conn.groups:
                ensure_room(conn, 1, message.id)
            ready = self.connections.join_group(conn, message.group)
            if self.post is not None:
                self.post.joined(conn, message.group)  # its alerts wait for this user while away
            _reply_when(conn, [ready], lambda: self._ack(conn, message.id, "join_group"))
        elif isinstance(message, LeaveGroup):
            self.connections.leave_group(conn, message.group)
            if self.post is not None:
                self.post.left(conn, message.group)
            self._ack(conn, message.id, "leave_group")
        elif isinstance(message, AckMail):
            if self.post is None or self.post.ack_at_once(conn, message.up_to):
                self._ack(conn, message.id, "ack_mail")  # in memory: answered in order, like ping
            else:
                self._later(conn, message.id, self._ack_mail(conn, message))
        elif isinstance(message, RefreshToken):
            self.refresh_token(conn, message)
        elif isinstance(message, ChatMessage):
            self._start(conn, "chat", {"message": message.content}, message.id, None)
        else:  # pragma: no cover - the parse tables only hold the types above
            raise ProtocolError(ErrorCode.unknown_type, f"unhandled message {type(message).__name__}")

    async def _ack_mail(self, conn: Connection, message: AckMail) -> None:
        if self.post is not None:
            try:
                await self.post.ack(conn, message.up_to)
            except MailboxUnavailable as exc:
                raise ProtocolError(
                    ErrorCode.mailbox_unavailable,
                    f"the mailbox is out of reach ({exc}); send it again",
                    None,
                    message.id,
                ) from exc
        if not conn.closed:
            self._ack(conn, message.id, "ack_mail")

    def _elsewhere(self, workflow_id: str) -> bool:
        """With Redis: the run is not one this gateway runs (another gateway's, or unknown here)."""
        if self.runs.store is None:
            return False
        run = self.runs.runs.get(workflow_id)
        return run is None or run.mirror

    def _later(self, conn: Connection, reply_to: str | None, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (which waits on Redis) in the background; its refusal becomes an ``error`` frame."""

        async def answered() -> None:
            try:
                await work
            except ProtocolError as exc:
                if not conn.closed:
                    conn.enqueue(error_frame(exc))
            except Exception:
                log.exception("internal error on a command from %s", conn.client_id)
                if not conn.closed:
                    conn.enqueue(error_frame(ProtocolError(ErrorCode.internal_error, "internal error", None, reply_to)))

        self.runs.spawn(answered())

    async def _remote(
        self, conn: Connection, workflow_id: str, scope: str, reply_to: str | None, body: dict[str, Any], command: str
    ) -> None:
        """``node_input`` / ``cancel_workflow`` for a run another gateway runs: through its inbox."""
        run = self._authorized(conn, await self.runs.remote(workflow_id, reply_to), workflow_id, scope, reply_to)
        await self.runs.command(run, body, reply_to)
        if not conn.closed:
            self._ack(conn, reply_to, command, workflow_id)

    def _run(self, conn: Connection, workflow_id: str, scope: str, reply_to: str | None) -> Run:
        """The run, if this connection may act on it with ``scope``; else ``forbidden``."""
        return self._authorized(conn, self.runs.runs.get(workflow_id), workflow_id, scope, reply_to)

    @staticmethod
    def _authorized(conn: Connection, run: Run | None, workflow_id: str, scope: str, reply_to: str | None) -> Run:
        """``run`` if this connection may act on it with ``scope``; else ``forbidden``.

        Without that scope, an unknown run is refused the same way as another user's.
        """
        principal = conn.principal
        if principal is None or principal.may(scope):
            if run is None:
                raise ProtocolError(
                    ErrorCode.unknown_run, f"no run {workflow_id!r}", "workflow_id", reply_to, workflow_id
                )
            return run
        if run is None or run.owner != principal.sub:
            raise ProtocolError(
                ErrorCode.forbidden,
                f"run {workflow_id!r} is not yours, and this needs the scope {scope}",
                "workflow_id",
                reply_to,
                workflow_id,
            )
        return run

    def start_workflow(self, conn: Connection, message: StartWorkflow) -> None:
        self._start(conn, message.workflow, message.params or {}, message.id, message.idempotency_key)

    def _start(
        self, conn: Connection, workflow: str, params: dict[str, object], reply_to: str | None, key: str | None
    ) -> None:
        principal = conn.principal
        if principal is not None and not principal.may_start(workflow):
            raise ProtocolError(
                ErrorCode.forbidden,
                f"starting {workflow!r} needs the scope workflows:start or workflows:start:{workflow}",
                "workflow",
                reply_to,
            )
        definition = self.registry.get(workflow)
        if definition is None:
            known = ", ".join(self.registry.names())
            raise ProtocolError(
                ErrorCode.unknown_workflow, f"no workflow {workflow!r}; registered: {known}", "workflow", reply_to
            )
        if self.runs.store is not None:
            # In Redis before the starter hears of it; a key is claimed first, so a retry on
            # any gateway finds the same run.
            self._later(conn, reply_to, self.runs.start_shared(definition, dict(params), conn, reply_to, key))
            return
        self.runs.start(definition, dict(params), conn, reply_to, key)

    def subscribe(self, conn: Connection, message: Subscribe, looked_up: bool = False) -> None:
        wid = message.workflow_id
        if wid is not None and not looked_up and wid not in self.runs.runs and self.runs.store is not None:
            self._later(conn, message.id, self._subscribe_elsewhere(conn, message))
            return
        # Naming neither a run nor topics is valid per the spec: the answer lists the
        # connection's current topics and changes nothing.
        run = self._run(conn, wid, "runs:read", message.id) if wid is not None else None
        topics = message.topics or []
        principal = conn.principal
        if principal is not None:
            for topic in topics:
                if not principal.may_with("topics:subscribe", topic):
                    raise ProtocolError(
                        ErrorCode.forbidden, f"topic {topic!r} needs topics:subscribe:{topic}", "topics", message.id
                    )
        adding = len(set(topics) - conn.topics)
        if run is not None:
            self.runs.check_since(run, message.since_seq or 0, message.id, message.epoch)
            if run.workflow_id not in conn.runs:
                adding += 1
        # Refused before anything changes: no topic is added when the run part is refused.
        ensure_room(conn, adding, message.id)
        ready = [self.connections.subscribe_topic(conn, topic) for topic in topics]
        if run is not None:
            run.pins += 1  # a mirror stays until this watcher is attached

        def reply() -> None:
            if run is None:
                conn.enqueue(encode(Subscribed(type="subscribed", reply_to=message.id, topics=sorted(conn.topics))))
                return
            run.pins -= 1
            try:
                self.runs.subscribe(conn, run, message.since_seq or 0, message.id, message.epoch)
            finally:
                self.runs.release(run)

        _reply_when(conn, ready, reply)

    async def _subscribe_elsewhere(self, conn: Connection, message: Subscribe) -> None:
        """``subscribe`` to a run this gateway does not have: mirrored from Redis, then as a local one."""
        assert message.workflow_id is not None
        run = await self.runs.mirror(message.workflow_id, message.id)
        try:
            if not conn.closed:
                self.subscribe(conn, message, looked_up=True)
        finally:
            if run is not None:
                self.runs.release(run)  # refused (or gone): nobody here watches it

    def refresh_token(self, conn: Connection, message: RefreshToken) -> None:
        """A fresh token for the same ``sub``; then every watched run is checked again."""
        if self.auth is None or not self.auth.enabled or conn.principal is None:
            self._ack(conn, message.id, "refresh_token")  # auth is off: nothing to refresh
            return
        try:
            principal = self.auth.verify(message.token)
        except TokenRefused as refused:  # the old token stays in force until its own exp
            self.connections.metrics.auth_failures.labels(refused.kind).inc()
            raise ProtocolError(ErrorCode.unauthorized, refused.reason, "token", message.id) from None
        if principal.sub != conn.principal.sub:
            self.connections.metrics.auth_failures.labels("forbidden").inc()
            raise ProtocolError(ErrorCode.forbidden, "the fresh token is for another user", "token", message.id)
        conn.expire_at(principal)
        self._ack(conn, message.id, "refresh_token")
        # The new token may grant less: runs it may no longer read stop here.
        for workflow_id in list(conn.runs):
            run = self.runs.runs.get(workflow_id)
            if run is not None and run.owner != principal.sub and not principal.may("runs:read"):
                self.runs.detach(conn, run)
                conn.enqueue(
                    error_frame(
                        ProtocolError(
                            ErrorCode.forbidden,
                            f"the fresh token may not read run {workflow_id!r}; it was unsubscribed",
                            "workflow_id",
                            None,
                            workflow_id,
                        )
                    )
                )

    @staticmethod
    def _ack(conn: Connection, reply_to: str | None, command: str, workflow_id: str | None = None) -> None:
        conn.enqueue(encode(Ack(type="ack", reply_to=reply_to, command=command, workflow_id=workflow_id)))


def _reply_when(conn: Connection, ready: list[Ready], reply: Callable[[], None]) -> None:
    """Answer now, or once the broker has made the new memberships good on every gateway.

    An answer (``ack``, ``subscribed``) promises that broadcasts from any gateway reach
    the connection from then on; with Redis that takes a SUBSCRIBE's round trip (bounded
    by ``redis_timeout``). The in-process broker is always ready: the answer goes at once.
    """
    waiting = [future for future in ready if future is not None and not future.done()]
    if not waiting:
        reply()
        return

    def answer(_: object) -> None:
        if conn.closed:
            return
        try:
            reply()
        except ProtocolError as exc:
            conn.enqueue(error_frame(exc))
        except Exception:
            log.exception("internal error answering %s", conn.client_id)
            conn.enqueue(error_frame(ProtocolError(ErrorCode.internal_error, "internal error")))

    (waiting[0] if len(waiting) == 1 else asyncio.gather(*waiting)).add_done_callback(answer)
