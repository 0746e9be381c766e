"""The command router: one parsed client message on one connection → its effects.

Every refusal is a ``ProtocolError`` that the endpoint turns into an ``error`` frame;
nothing here closes a socket or touches another client's state.
"""

from __future__ import annotations

from pydantic import BaseModel

from graphwire._generated.messages import (
    Ack,
    CancelWorkflow,
    ChatMessage,
    ErrorCode,
    JoinGroup,
    LeaveGroup,
    NodeInput,
    Ping,
    Pong,
    StartWorkflow,
    Subscribe,
    Subscribed,
    Unsubscribe,
)
from graphwire.connections import Connection, ConnectionManager, ensure_room
from graphwire.protocol import ProtocolError, encode, now
from graphwire.registry import WorkflowRegistry
from graphwire.runs import RunManager

__all__ = ["Router"]


class Router:
    """Applies client commands (the spec's ``receive`` operations)."""

    def __init__(self, registry: WorkflowRegistry, runs: RunManager, connections: ConnectionManager) -> None:
        self.registry = registry
        self.runs = runs
        self.connections = connections

    def handle(self, conn: Connection, message: BaseModel) -> None:
        if isinstance(message, Ping):
            conn.enqueue(encode(Pong(type="pong", reply_to=message.id, timestamp=now())))
        elif isinstance(message, StartWorkflow):
            self.start_workflow(conn, message)
        elif isinstance(message, NodeInput):
            run = self.runs.get(message.workflow_id, message.id)
            self.runs.answer(
                run, message.node_id, message.request_id, message.data, message.id, message.idempotency_key
            )
            self._ack(conn, message.id, "node_input", run.workflow_id)
        elif isinstance(message, Subscribe):
            self.subscribe(conn, message)
        elif isinstance(message, Unsubscribe):
            if message.workflow_id is not None:
                self.runs.detach(conn, self.runs.get(message.workflow_id, message.id))
            for topic in message.topics or ():
                self.connections.unsubscribe_topic(conn, topic)
            self._ack(conn, message.id, "unsubscribe", message.workflow_id)
        elif isinstance(message, CancelWorkflow):
            run = self.runs.get(message.workflow_id, message.id)
            self.runs.cancel(run, f"cancelled by client {conn.client_id}", message.id)
            self._ack(conn, message.id, "cancel_workflow", run.workflow_id)
        elif isinstance(message, JoinGroup):
            if message.group not in conn.groups:
                ensure_room(conn, 1, message.id)
            self.connections.join_group(conn, message.group)
            self._ack(conn, message.id, "join_group")
        elif isinstance(message, LeaveGroup):
            self.connections.leave_group(conn, message.group)
            self._ack(conn, message.id, "leave_group")
        elif isinstance(message, ChatMessage):
            self._start(conn, "chat", {"message": message.content}, message.id, None)
        else:  # pragma: no cover - the parse tables only hold the types above
            raise ProtocolError(ErrorCode.unknown_type, f"unhandled message {type(message).__name__}")

    def start_workflow(self, conn: Connection, message: StartWorkflow) -> None:
        self._start(conn, message.workflow, message.params or {}, message.id, message.idempotency_key)

    def _start(
        self, conn: Connection, workflow: str, params: dict[str, object], reply_to: str | None, key: str | None
    ) -> None:
        definition = self.registry.get(workflow)
        if definition is None:
            known = ", ".join(self.registry.names())
            raise ProtocolError(
                ErrorCode.unknown_workflow, f"no workflow {workflow!r}; registered: {known}", "workflow", reply_to
            )
        self.runs.start(definition, dict(params), conn, reply_to, key)

    def subscribe(self, conn: Connection, message: Subscribe) -> None:
        # Naming neither a run nor topics is valid per the spec: the answer lists the
        # connection's current topics and changes nothing.
        run = self.runs.get(message.workflow_id, message.id) if message.workflow_id is not None else None
        adding = len(set(message.topics or ()) - conn.topics)
        if run is not None:
            self.runs.check_since(run, message.since_seq or 0, message.id)
            if run.workflow_id not in conn.runs:
                adding += 1
        # Refused before anything changes: no topic is added when the run part is refused.
        ensure_room(conn, adding, message.id)
        for topic in message.topics or ():
            self.connections.subscribe_topic(conn, topic)
        if run is None:
            conn.enqueue(encode(Subscribed(type="subscribed", reply_to=message.id, topics=sorted(conn.topics))))
            return
        self.runs.subscribe(conn, run, message.since_seq or 0, message.id)

    @staticmethod
    def _ack(conn: Connection, reply_to: str | None, command: str, workflow_id: str | None = None) -> None:
        conn.enqueue(encode(Ack(type="ack", reply_to=reply_to, command=command, workflow_id=workflow_id)))
