"""Every exception the SDK raises has one root, ``GraphwireError``::

    GraphwireError
    ├── ConnectionLost          gave up reconnecting after ReconnectPolicy.max_attempts (terminal)
    ├── ConnectionRejected      the server closed with a code that forbids retrying (terminal)
    │   ├── ConnectionUnauthorized  4001: the token is missing, malformed or forged (also an ``Unauthorized``)
    │   ├── TokenExpired            4002 with no ``get_token`` to fetch a fresh one (also an ``Unauthorized``)
    │   └── ConnectionForbidden     4003: the token may not connect (also a ``Forbidden``)
    ├── ClientClosed            the client was closed while the call waited, or before it
    ├── ServerError             an ``error`` frame answered a command (``code``, ``retry_after`` …)
    │   ├── BadRequest              invalid_json, binary_not_supported, not_an_object,
    │   │                           unknown_type, invalid_message, message_too_large,
    │   │                           since_seq_ahead
    │   ├── UnknownWorkflow         unknown_workflow
    │   ├── InvalidParams           invalid_params
    │   ├── UnknownRun              unknown_run
    │   ├── RunFinished             run_finished
    │   ├── InputRejected           no_pending_input, unknown_request,
    │   │   │                       input_already_answered, invalid_input
    │   │   └── InputClosed             the request was closed unanswered (``input_closed``)
    │   │                               while the answer waited to be sent or acknowledged
    │   ├── IdempotencyConflict     idempotency_conflict
    │   ├── RateLimited             rate_limited (see ``retry_after``)
    │   ├── TooManyRuns             too_many_runs
    │   ├── TooManySubscriptions    too_many_subscriptions
    │   ├── RunUnavailable          run_unavailable (the gateway running the run did not answer)
    │   ├── MailboxUnavailable      mailbox_unavailable (with Redis, the mailbox did not answer)
    │   ├── Unauthorized            unauthorized
    │   ├── Forbidden               forbidden
    │   └── InternalServerError     internal_error
    └── RunError                a run did not end with ``workflow_completed`` (``workflow_id``)
        ├── WorkflowFailed          ``workflow_failed`` (``error.code`` is input_timeout, node_error …)
        │   ├── EventTooLarge           … with event_too_large
        │   └── GatewayShutdown         … with gateway_shutdown (start the run again)
        ├── WorkflowCancelled       ``workflow_cancelled``
        └── RunLost                 the run can no longer be followed (the server forgot it)

The three close errors are also the ``ServerError`` of their meaning, so ``except Unauthorized``
catches a refused token whether the server said so in an ``error`` frame (a ``refresh_token``
whose token does not verify; the connection stays usable) or by closing the connection.

``ServerError`` subclasses are picked by the spec's ``ErrorCode`` (``components.schemas.ErrorCode``);
``error_from_frame`` does the mapping; ``workflow_failed_error`` picks the ``WorkflowFailed`` subclass
of a ``workflow_failed`` event's ``error.code``.
"""

from __future__ import annotations

from graphwire_client._generated.messages import CloseCode, Error, ErrorCode, ErrorDetail, InputClosedReason

__all__ = [
    "BadRequest",
    "ClientClosed",
    "ConnectionForbidden",
    "ConnectionLost",
    "ConnectionRejected",
    "ConnectionUnauthorized",
    "EventTooLarge",
    "Forbidden",
    "GatewayShutdown",
    "GraphwireError",
    "IdempotencyConflict",
    "InputClosed",
    "InputRejected",
    "InternalServerError",
    "InvalidParams",
    "MailboxUnavailable",
    "RateLimited",
    "RunError",
    "RunFinished",
    "RunLost",
    "RunUnavailable",
    "ServerError",
    "TokenExpired",
    "TooManyRuns",
    "TooManySubscriptions",
    "Unauthorized",
    "UnknownRun",
    "UnknownWorkflow",
    "WorkflowCancelled",
    "WorkflowFailed",
    "close_error",
    "error_from_frame",
    "workflow_failed_error",
]


class GraphwireError(Exception):
    """The root of every exception the SDK raises."""


class ConnectionLost(GraphwireError):
    """The client gave up: ``attempts`` consecutive connection attempts failed.

    Terminal: every pending command and every open run raises it; the client's state is
    ``disconnected``. ``__cause__`` is the last failure.
    """

    def __init__(self, message: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.attempts = attempts


class ConnectionRejected(GraphwireError):
    """The server closed the socket with a code that retrying cannot fix.

    ``close_code`` is one of the spec's ``CloseCode``: 4001 unauthorized, 4002 token
    expired (only without a ``get_token``), 4003 forbidden, 1008 policy violation (origin
    not allowed, or sustained abuse of the rate limits), 1009 a frame above
    ``max_message_size``. Terminal, like ``ConnectionLost``. ``close_error`` picks the
    subclass of a code.
    """

    def __init__(self, close_code: int, reason: str = "") -> None:
        try:
            name = CloseCode(close_code).name
        except ValueError:
            name = "unknown"
        detail = f": {reason}" if reason else ""
        # Not super(): in the subclasses below the next class in the MRO is a ServerError.
        GraphwireError.__init__(self, f"the server closed the connection with {close_code} ({name}){detail}")
        self.close_code = close_code
        self.reason = reason


class ClientClosed(GraphwireError):
    """The client was closed (``close()`` or leaving ``async with``) while this call waited."""


class ServerError(GraphwireError):
    """The server refused a command with an ``error`` frame; the connection stays usable.

    The fields are the frame's: ``code`` (the spec's ``ErrorCode``), ``message``, and
    where they apply ``path`` (the offending field), ``workflow_id``, ``retry_after``
    (seconds, with ``rate_limited``) and ``reply_to`` (the id of the refused command).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        path: str | None = None,
        workflow_id: str | None = None,
        retry_after: float | None = None,
        reply_to: str | None = None,
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.path = path
        self.workflow_id = workflow_id
        self.retry_after = retry_after
        self.reply_to = reply_to

    @property
    def frame(self) -> Error:
        """The ``error`` frame this exception stands for."""
        return Error(
            type="error",
            code=self.code,
            message=self.message,
            path=self.path,
            workflow_id=self.workflow_id,
            retry_after=self.retry_after,
            reply_to=self.reply_to,
        )


class BadRequest(ServerError):
    """The frame was not a valid message (``invalid_message`` names the field in ``path``).

    Also ``since_seq_ahead``: an ``attach``/``subscribe`` whose ``since_seq`` is above the
    run's ``last_seq``.
    """


class UnknownWorkflow(ServerError):
    """No workflow is registered under that name."""


class InvalidParams(ServerError):
    """The params break the workflow's params schema; ``path`` names the field."""


class UnknownRun(ServerError):
    """No run with that ``workflow_id`` (never started, or forgotten after its retention time)."""


class RunFinished(ServerError):
    """The run has already ended."""


class InputRejected(ServerError):
    """An answer to an input request was refused (already answered, unknown, not one of the options…)."""


class InputClosed(InputRejected):
    """The input request was closed unanswered (``input_closed``) before this answer landed.

    ``run.respond(...)`` raises it when the run's ``input_closed`` for its request arrives
    while the answer is still queued, held after ``rate_limited``, or waiting for its
    ``ack`` (across a reconnect too): the gateway would refuse it with ``unknown_request``
    (its ``code``). ``reason`` is the event's: ``timeout`` (nobody answered in time) or
    ``node_finished`` (the node ended without waiting for it).
    """

    def __init__(self, workflow_id: str, request_id: str, reason: InputClosedReason) -> None:
        super().__init__(
            ErrorCode.unknown_request,
            f"input request {request_id!r} was closed unanswered ({reason.value})",
            path="request_id",
            workflow_id=workflow_id,
        )
        self.request_id = request_id
        self.reason = reason


class IdempotencyConflict(ServerError):
    """The ``idempotency_key`` was used before with other params."""


class RateLimited(ServerError):
    """Too many commands; wait ``retry_after`` seconds."""


class TooManyRuns(ServerError):
    """Nothing was started: the connection or the gateway already has as many runs in flight as allowed."""


class TooManySubscriptions(ServerError):
    """Nothing changed: the connection already watches as many runs, topics and groups as allowed."""


class MailboxUnavailable(ServerError):
    """With Redis, the user's mailbox could not be reached in time (an ``ack_mail``).

    The client sends its own ``ack_mail`` again, the same frame, after the frame's
    ``retry_after``, and once more after the next reconnect; nothing is lost meanwhile:
    mail not acknowledged is only delivered again (and this client skips the repeats).
    """


class RunUnavailable(ServerError):
    """With several gateways, the gateway that runs the run did not answer in time.

    The command may or may not have been applied. A command that is safe to repeat (an
    answer with its ``idempotency_key``, a ``subscribe``) was sent again, the same frame,
    up to ``MAX_UNAVAILABLE_RETRIES`` times before this was raised; a ``cancel_workflow``
    raises it at once: send it again if the run should still end.
    """


class Unauthorized(ServerError):
    """The gateway does not accept the token (missing, malformed, forged, signed with another key).

    As an ``error`` frame it answers a ``refresh_token`` whose token does not verify (the
    old token stays in force). As ``ConnectionUnauthorized`` (4001) or ``TokenExpired``
    (4002) the server closed the connection and the client is done.
    """


class Forbidden(ServerError):
    """The token may not do this: it lacks the scope, or the run belongs to another user.

    The ``error`` frame leaves the connection usable (the answer is the same whether or
    not the run exists); ``ConnectionForbidden`` (4003) ends the client.
    """


class InternalServerError(ServerError):
    """A bug on the server; the command may be retried."""


class ConnectionUnauthorized(ConnectionRejected, Unauthorized):
    """The server closed with 4001: the token is missing, malformed or forged.

    Terminal and not retried, not even with a ``get_token``: the same refusal would come back.
    """

    def __init__(self, close_code: int = CloseCode.unauthorized, reason: str = "") -> None:
        ServerError.__init__(self, ErrorCode.unauthorized, reason or "the server refused the token")
        ConnectionRejected.__init__(self, close_code, reason)


class TokenExpired(ConnectionRejected, Unauthorized):
    """The server closed with 4002 (the token expired) and the client has no ``get_token``.

    A static ``token=`` cannot be renewed: create a client with a fresh token (runs can be
    followed again with ``attach(workflow_id, since_seq=run.last_seq)``), or pass
    ``get_token=`` so the client refreshes before expiry and reconnects after a 4002.
    """

    def __init__(self, close_code: int = CloseCode.token_expired, reason: str = "") -> None:
        ServerError.__init__(self, ErrorCode.unauthorized, reason or "the token expired")
        ConnectionRejected.__init__(self, close_code, reason)


class ConnectionForbidden(ConnectionRejected, Forbidden):
    """The server closed with 4003: the token is valid but may not connect. Terminal."""

    def __init__(self, close_code: int = CloseCode.forbidden, reason: str = "") -> None:
        ServerError.__init__(self, ErrorCode.forbidden, reason or "the token may not connect")
        ConnectionRejected.__init__(self, close_code, reason)


_CLOSE_ERRORS: dict[int, type[ConnectionRejected]] = {
    CloseCode.unauthorized: ConnectionUnauthorized,
    CloseCode.token_expired: TokenExpired,
    CloseCode.forbidden: ConnectionForbidden,
}


def close_error(close_code: int, reason: str = "") -> ConnectionRejected:
    """The terminal exception for a close code: the ``ConnectionRejected`` subclass of ``close_code``."""
    return _CLOSE_ERRORS.get(close_code, ConnectionRejected)(close_code, reason)


_BY_CODE: dict[ErrorCode, type[ServerError]] = {
    ErrorCode.invalid_json: BadRequest,
    ErrorCode.binary_not_supported: BadRequest,
    ErrorCode.not_an_object: BadRequest,
    ErrorCode.unknown_type: BadRequest,
    ErrorCode.invalid_message: BadRequest,
    ErrorCode.message_too_large: BadRequest,
    ErrorCode.since_seq_ahead: BadRequest,
    ErrorCode.unknown_workflow: UnknownWorkflow,
    ErrorCode.invalid_params: InvalidParams,
    ErrorCode.unknown_run: UnknownRun,
    ErrorCode.run_finished: RunFinished,
    ErrorCode.no_pending_input: InputRejected,
    ErrorCode.unknown_request: InputRejected,
    ErrorCode.input_already_answered: InputRejected,
    ErrorCode.invalid_input: InputRejected,
    ErrorCode.idempotency_conflict: IdempotencyConflict,
    ErrorCode.rate_limited: RateLimited,
    ErrorCode.too_many_runs: TooManyRuns,
    ErrorCode.too_many_subscriptions: TooManySubscriptions,
    ErrorCode.run_unavailable: RunUnavailable,
    ErrorCode.mailbox_unavailable: MailboxUnavailable,
    ErrorCode.unauthorized: Unauthorized,
    ErrorCode.forbidden: Forbidden,
    ErrorCode.internal_error: InternalServerError,
}
# Codes that only appear in ``workflow_failed.error`` (they become ``WorkflowFailed``);
# should one arrive in an ``error`` frame, it is a plain ``ServerError``.
RUN_FAILURE_CODES = frozenset(
    {ErrorCode.input_timeout, ErrorCode.node_error, ErrorCode.event_too_large, ErrorCode.gateway_shutdown}
)


def error_from_frame(frame: Error) -> ServerError:
    """The exception for an ``error`` frame: the ``ServerError`` subclass of its ``code``."""
    cls = _BY_CODE.get(frame.code, ServerError)
    return cls(
        frame.code,
        frame.message,
        path=frame.path,
        workflow_id=frame.workflow_id,
        retry_after=frame.retry_after,
        reply_to=frame.reply_to,
    )


class RunError(GraphwireError):
    """A run did not end with ``workflow_completed``."""

    def __init__(self, workflow_id: str, message: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowFailed(RunError):
    """The run ended with ``workflow_failed``; ``error`` is the spec's ``ErrorDetail``."""

    def __init__(self, workflow_id: str, error: ErrorDetail) -> None:
        where = f" in node {error.node_id!r}" if error.node_id else ""
        super().__init__(workflow_id, f"run {workflow_id} failed{where}: {error.code.value}: {error.message}")
        self.error = error

    @property
    def code(self) -> ErrorCode:
        return self.error.code

    @property
    def node_id(self) -> str | None:
        return self.error.node_id


class EventTooLarge(WorkflowFailed):
    """The run failed with ``event_too_large``: a node produced an event above the gateway's
    ``max_event_bytes``."""


class GatewayShutdown(WorkflowFailed):
    """The run failed with ``gateway_shutdown``: the gateway stopped while the run was in flight.

    The run is gone (it cannot be resumed or attached again to continue); start it again.
    """


_FAILED_BY_CODE: dict[ErrorCode, type[WorkflowFailed]] = {
    ErrorCode.event_too_large: EventTooLarge,
    ErrorCode.gateway_shutdown: GatewayShutdown,
}


def workflow_failed_error(workflow_id: str, error: ErrorDetail) -> WorkflowFailed:
    """The exception for a run that ended with ``workflow_failed``: the subclass of ``error.code``."""
    return _FAILED_BY_CODE.get(error.code, WorkflowFailed)(workflow_id, error)


class WorkflowCancelled(RunError):
    """The run ended with ``workflow_cancelled``; ``reason`` says by whom, when the server tells."""

    def __init__(self, workflow_id: str, reason: str | None = None) -> None:
        super().__init__(workflow_id, f"run {workflow_id} was cancelled{': ' + reason if reason else ''}")
        self.reason = reason


class RunLost(RunError):
    """The run can no longer be followed: the server forgot it (``unknown_run`` on resume),
    or its event stream broke the seq contract in a way a resubscribe could not repair."""
