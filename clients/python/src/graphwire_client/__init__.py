"""graphwire_client: the typed asyncio SDK for the graphwire WebSocket gateway.

Everything public is re-exported here (see ``__all__``). The message models live in
``graphwire_client.messages``; they, the typed commands (``client.commands``), the typed
events (``client.on``) and the per-workflow typing (``client.start_workflow`` overloads,
``client.workflows``) are generated from ``spec/asyncapi.yaml`` into ``_generated/``,
which is never edited by hand. The rest is the hand-written runtime: a sans-I/O core
(``_core``) and the asyncio client around it (``_client``).
"""

import logging

from graphwire_client import _generated, messages
from graphwire_client._backoff import ReconnectPolicy, backoff_delay
from graphwire_client._client import DEFAULT_URL, GraphwireClient
from graphwire_client._generated.commands import Commands
from graphwire_client._generated.events import RunEvent, ServerEvent
from graphwire_client._generated.typed_workflows import *  # noqa: F403 - the generated per-workflow names
from graphwire_client._generated.typed_workflows import __all__ as _typed_all
from graphwire_client._mail import Mailbox
from graphwire_client._run import Run
from graphwire_client._state import ConnectionState, StateChange
from graphwire_client._subscription import Subscription
from graphwire_client._transport import HandshakeRefused, Socket, Transport, TransportClosed, WebSocketTransport
from graphwire_client._workflow import UntypedWorkflow, WorkflowHandle
from graphwire_client.exceptions import (
    BadRequest,
    ClientClosed,
    ConnectionForbidden,
    ConnectionLost,
    ConnectionRejected,
    ConnectionUnauthorized,
    EventTooLarge,
    Forbidden,
    GatewayShutdown,
    GraphwireError,
    IdempotencyConflict,
    InputClosed,
    InputRejected,
    InternalServerError,
    InvalidParams,
    MailboxUnavailable,
    RateLimited,
    RunError,
    RunFinished,
    RunLost,
    RunUnavailable,
    ServerError,
    TokenExpired,
    TooManyRuns,
    TooManySubscriptions,
    Unauthorized,
    UnknownRun,
    UnknownWorkflow,
    WorkflowCancelled,
    WorkflowFailed,
)

# A library does not print: without logging configured, its warnings stay silent.
logging.getLogger("graphwire_client").addHandler(logging.NullHandler())

SPEC_SHA256 = _generated.SPEC_SHA256
"""sha256 of the ``spec/asyncapi.yaml`` this SDK was generated from."""

__all__ = [
    "DEFAULT_URL",
    "SPEC_SHA256",
    "BadRequest",
    "ClientClosed",
    "Commands",
    "ConnectionForbidden",
    "ConnectionLost",
    "ConnectionRejected",
    "ConnectionState",
    "ConnectionUnauthorized",
    "EventTooLarge",
    "Forbidden",
    "GatewayShutdown",
    "GraphwireClient",
    "GraphwireError",
    "HandshakeRefused",
    "IdempotencyConflict",
    "InputClosed",
    "InputRejected",
    "InternalServerError",
    "InvalidParams",
    "Mailbox",
    "MailboxUnavailable",
    "RateLimited",
    "ReconnectPolicy",
    "Run",
    "RunError",
    "RunEvent",
    "RunFinished",
    "RunLost",
    "RunUnavailable",
    "ServerError",
    "ServerEvent",
    "Socket",
    "StateChange",
    "Subscription",
    "TokenExpired",
    "TooManyRuns",
    "TooManySubscriptions",
    "Transport",
    "TransportClosed",
    "Unauthorized",
    "UnknownRun",
    "UnknownWorkflow",
    "UntypedWorkflow",
    "WebSocketTransport",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowHandle",
    "backoff_delay",
    "messages",
    *_typed_all,
]
