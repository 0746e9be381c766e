"""The FastAPI application: endpoints of DESIGN.md over the router and managers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, field_validator
from starlette.types import Receive, Scope, Send

from graphwire import docs_page, logs
from graphwire._direct import direct_text_writer
from graphwire._generated.messages import CloseCode, Connected, ErrorCode
from graphwire.auth import SUBPROTOCOL, Authenticator, Principal, TokenRefused, origin_allowed, presented_token
from graphwire.broker import Broker, RedisBroker, create_broker
from graphwire.connections import Connection, ConnectionManager, Reach, alert_frame
from graphwire.mailbox import MAIL, MailboxUnavailable
from graphwire.metrics import Metrics
from graphwire.post_office import PostOffice
from graphwire.protocol import (
    CHAT_MESSAGES,
    MAX_NESTING,
    WORKFLOW_MESSAGES,
    ProtocolError,
    chat_frame,
    encode,
    error_frame,
    nests_deeper,
    parse_frame,
)
from graphwire.rate_limits import CommandLimits
from graphwire.registry import WorkflowRegistry
from graphwire.router import Router
from graphwire.run_store import GATEWAY, RUN, RUNS, RedisRunStore
from graphwire.runs import RunManager
from graphwire.settings import Settings
from graphwire.watchdog import LoopWatchdog, describe_runs
from graphwire.workflows import register_builtin_workflows

__all__ = ["Gateway", "GatewayApp", "create_app"]

log = logging.getLogger("graphwire.app")
# A client id the gateway gave (`cl_` and 16 hex digits): the only kind a client may take over.
CLIENT_ID = re.compile(r"cl_[0-9a-f]{16}")

SPEC_YAML = resources.files("graphwire._generated").joinpath("asyncapi.yaml").read_text(encoding="utf-8")
# Build outputs of clients/js (`make setup`): the browser demo and the rendered AsyncAPI docs.
STATIC = Path(__file__).resolve().parent / "static"


def _static_page(name: str, what: str, command: str) -> Response:
    """A built page from ``static/``, or a 503 that says how to build it."""
    page = STATIC / name
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return HTMLResponse(
        f"<!doctype html><title>graphwire</title><h1>{what} is not built</h1>"
        f"<p>Run <code>{command}</code> in the graphwire repository (it needs Node.js 20 and npm), "
        f"then reload. Expected <code>{page}</code>.</p>",
        status_code=503,
    )


class Gateway:
    """One gateway process: settings, workflows, runs, connections and the broker to the others."""

    def __init__(self, settings: Settings, registry: WorkflowRegistry, broker: Broker | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.auth = Authenticator(settings)
        self.broker = broker if broker is not None else create_broker(settings)
        # Prometheus metrics of this process (GET /metrics; graphwire.metrics).
        self.metrics = Metrics(settings.metrics)
        self.connections = ConnectionManager(settings.flush_quiet_ms / 1000.0, self.broker, self.metrics)
        self.runs = RunManager(settings, self.connections.flusher, self.broker, registry)
        self.runs.metrics = self.metrics
        # With redis_url, the per-user limits are counted in Redis, shared by all gateways.
        self.limits = CommandLimits(settings)
        # The offline mailbox: in memory, or in Redis with redis_url (graphwire.post_office).
        self.post = PostOffice(settings, self.broker)
        self.runs.post = self.post
        self.router = Router(registry, self.runs, self.connections, self.auth, self.limits, self.post)
        if isinstance(self.broker, RedisBroker):
            # Broadcasts (the broker's publisher) and run events (the run store's writes).
            self.broker.on_published = self.metrics.published
            if isinstance(self.broker.runs, RedisRunStore):
                self.broker.runs.on_published = self.metrics.published
        self.metrics.watch_broker(self.broker_errors)
        self.metrics.runs_in_flight.set_function(lambda: self.runs.in_flight)
        self.metrics.gateway_info.labels(self.broker.gateway_id).set(1)
        # SIGTERM (GatewayServer.shutdown): `/ready` says draining, new sockets are refused.
        self.draining = False

    def broker_errors(self) -> dict[str, int]:
        """What ``graphwire_broker_errors_total`` counts, by kind (nothing without Redis)."""
        broker = self.broker
        if not isinstance(broker, RedisBroker):
            return {}
        errors = {"outage": broker.outages, "publish_failed": broker.publish_failures}
        if broker.runs is not None:
            errors["run_write_failed"] = broker.runs.write_failures
        if self.limits.shared is not None:
            errors["rate_limit_check_failed"] = self.limits.shared.failures
        return errors

    def drain(self) -> None:
        """SIGTERM: from now on ``/ready`` answers 503 draining and new sockets are refused."""
        if not self.draining:
            self.draining = True
            log.info("shutting down: /ready reports draining; new connections are refused")

    def not_ready(self) -> tuple[str, str] | None:
        """Why the gateway does not take new work now (reason, detail), or ``None``: ready."""
        if self.draining:
            return "draining", "the gateway is shutting down: connect to another one"
        if self.broker.shared and not self.broker.connected:
            return "broker_unreachable", "Redis is out of reach: runs, groups and topics would reach this gateway only"
        if len(self.connections.connections) >= self.settings.max_connections:
            return "full", f"{self.settings.max_connections} connections are open (max_connections)"
        return None

    async def serve(self, ws: WebSocket, table: dict[str, type[BaseModel]], send: Send) -> None:
        """Read frames until the client leaves; bad input gets ``error``, never a close.

        ``send`` is the server's raw ASGI send: the fan-out path writes through it
        directly (see ``_text_sender``), skipping Starlette's per-call state checks.
        """
        settings = self.settings
        full = len(self.connections.connections) >= settings.max_connections
        if full or self.draining:
            # Refused before the upgrade: an HTTP 503 costs what a health check does, and
            # holds no socket waiting for a close handshake the client may never answer.
            # A balancer (nginx's proxy_next_upstream http_503) tries another gateway.
            await ws.send_denial_response(
                PlainTextResponse(
                    "too many connections" if full else "shutting down", status_code=503, headers={"Retry-After": "1"}
                )
            )
            return
        metrics = self.metrics
        endpoint = "chat" if table is CHAT_MESSAGES else "workflow"
        offered: list[str] = ws.scope.get("subprotocols") or []
        principal, refusal = self.admit(ws.scope, offered, chat=table is CHAT_MESSAGES)
        # A browser that offers subprotocols fails the handshake unless one is selected.
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        metrics.connected(endpoint)
        if refusal is not None:
            # Completed, then closed with the reason: a browser cannot read a refused
            # handshake's status. Nothing else is read or sent on this socket.
            log.info("refused a connection: %s (%d)", refusal.reason, refusal.code)
            metrics.auth_failures.labels(refusal.kind).inc()
            await ws.close(refusal.code, refusal.reason)
            metrics.disconnected(endpoint, refusal.code)
            return
        # Read from the raw query string: ws.query_params would keep a parsed copy per socket.
        query = parse_qs(ws.scope.get("query_string", b"").decode("latin-1"))
        # Batching is negotiated: only a client that asks (the SDKs do) may get `batch` frames.
        batching = query.get("batch", ["0"])[-1].lower() in ("1", "true", "yes")
        # A client takes an earlier client id over (and, without auth, its mailbox).
        wanted = query.get("client_id", [""])[-1]
        resumed = CLIENT_ID.fullmatch(wanted) is not None and wanted not in self.connections.connections
        conn = Connection(
            client_id=wanted if resumed else f"cl_{uuid.uuid4().hex[:16]}",
            send_text=_text_sender(send),
            write_now=direct_text_writer(send),
            close_socket=lambda code, reason: ws.close(code, reason),
            settings=settings,
            batching=batching,
            shape=chat_frame if table is CHAT_MESSAGES else None,
        )
        self.connections.add(conn)
        logs.enter_connection(conn.client_id, principal.sub if principal is not None else None, ws.scope)
        if principal is not None:
            conn.expire_at(principal)
        conn.enqueue(
            encode(
                Connected(
                    type="connected",
                    client_id=conn.client_id,
                    protocol_version=settings.protocol_version,
                    max_message_size=settings.max_message_size,
                    heartbeat_interval=settings.ping_interval,
                    resumed=True if resumed else None,
                    user=principal.sub if principal is not None else None,
                    expires_at=datetime.fromtimestamp(principal.expires_at, UTC) if principal is not None else None,
                )
            )
        )
        self.post.arrived(conn)  # what waits in the mailbox follows `connected`
        code = 1006  # how the connection ended, for graphwire_disconnects_total
        try:
            while not conn.closed:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    code = int(message.get("code") or 1005)
                    break
                text: str | None = message.get("text")
                if text is None:
                    data: bytes = message.get("bytes") or b""
                    metrics.received_frame("binary")
                    if len(data) > settings.max_message_size:
                        code = CloseCode.message_too_big
                        await ws.close(code, "frame too large")
                        break
                    conn.enqueue(
                        error_frame(ProtocolError(ErrorCode.binary_not_supported, "binary frames are not supported"))
                    )
                    continue
                # len(text) bounds the UTF-8 size from below; encode only when it may be over.
                if len(text) * 4 > settings.max_message_size and len(text.encode()) > settings.max_message_size:
                    metrics.received_frame("oversized")
                    code = CloseCode.message_too_big
                    await ws.close(code, "frame too large")
                    break
                self.connections.total_messages += 1
                try:
                    try:
                        parsed: BaseModel | ProtocolError = parse_frame(text, table)
                    except ProtocolError as exc:  # junk counts against the limits too
                        parsed = exc
                    if isinstance(parsed, ProtocolError):
                        kind, reply_to = "invalid", parsed.reply_to
                    else:
                        kind, reply_to = getattr(parsed, "type", "invalid"), getattr(parsed, "id", None)
                    metrics.received_frame(kind)
                    if await self.router.over_limit(conn, kind, reply_to):
                        code = CloseCode.policy_violation
                        await ws.close(code, "rate limit exceeded, far and for long")
                        break
                    if isinstance(parsed, ProtocolError):
                        raise parsed
                    self.router.handle(conn, parsed)
                except ProtocolError as exc:
                    conn.enqueue(error_frame(exc))
                except Exception:
                    log.exception("internal error on a frame from %s", conn.client_id)
                    conn.enqueue(error_frame(ProtocolError(ErrorCode.internal_error, "internal error")))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            # Detach from runs first: remove() forgets the connection's run table.
            for workflow_id in list(conn.runs):
                run = self.runs.runs.get(workflow_id)
                if run is not None:
                    self.runs.detach(conn, run)
            await self.post.departed(conn)
            await self.connections.remove(conn)
            metrics.disconnected(endpoint, code)

    def admit(self, scope: Scope, offered: list[str], chat: bool) -> tuple[Principal | None, TokenRefused | None]:
        """Who the handshake is from: its Origin, then (with auth on) its token."""
        principal, refusal = self._identify(scope, offered)
        if principal is not None and chat and not principal.may_start("chat"):
            # All /ws/chat does is start `chat` runs: a token that may not is refused at once.
            return None, TokenRefused(CloseCode.forbidden, "/ws/chat needs the scope workflows:start:chat")
        return principal, refusal

    def _identify(self, scope: Scope, offered: list[str]) -> tuple[Principal | None, TokenRefused | None]:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        if not origin_allowed(headers.get("origin"), self.settings.origins):
            return None, TokenRefused(CloseCode.policy_violation, "origin not allowed")
        if not self.auth.enabled:
            return None, None
        token = presented_token(headers, scope.get("query_string", b""), offered)
        if token is None:
            return None, TokenRefused(CloseCode.unauthorized, "a token is required", "missing")
        try:
            return self.auth.verify(token), None
        except TokenRefused as refused:
            return None, refused

    def deliver_remote(self, channel: str, frame: str) -> None:
        """What another gateway sent on a channel this one watches: a run's event, a command, a broadcast."""
        if channel.startswith(RUN):
            self.runs.deliver_run_frame(channel[len(RUN) :], frame)
        elif channel.startswith(GATEWAY):
            self.runs.deliver_gateway_frame(frame)
        elif channel == RUNS:
            self.runs.orphans_released()
        elif channel == MAIL:
            self.post.deliver_remote(frame)
        else:
            self.connections.deliver_remote(channel, frame)

    async def end_runs(self, budget: float) -> None:
        """Shutdown, before any socket closes: end every run in flight, deliver the endings.

        Watchers that read get their runs' ``workflow_failed`` (``gateway_shutdown``)
        before the 1012; ``budget`` bounds the wait for slow ones.
        """
        if self.runs.store is not None:
            # With Redis, runs outlive this gateway: another one takes each over at once.
            handed = await self.runs.hand_over()
            if handed:
                log.info("shutting down: %d runs in flight handed over to the other gateways", handed)
        ended = self.runs.end_all()
        if ended:
            log.info("shutting down: %d runs in flight ended with gateway_shutdown", ended)
        await asyncio.sleep(0)  # let the cancelled run tasks unwind
        await self.connections.drain(budget)

    async def expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(self.settings.run_retention_seconds, 0.5)))
            self.runs.forget_expired()


def _text_sender(send: Send) -> Callable[[str], Awaitable[None]]:
    def send_text(text: str) -> Awaitable[None]:
        return send({"type": "websocket.send", "text": text})

    return send_text


class GatewayApp(FastAPI):
    """FastAPI for HTTP; the gateway's sockets are served before its middleware stack.

    A socket lives for hours and thousands are open at once. Routed through FastAPI, each
    would keep the error middleware's, the exception middleware's, the router's and an
    ``AsyncExitStack``'s frames alive for its whole life (several KB per idle connection)
    for features the sockets do not use; served here, only Starlette's ``WebSocket`` stays.
    """

    def __init__(self, gateway: Gateway, socket_tables: dict[str, dict[str, type[BaseModel]]], **fastapi: Any) -> None:
        super().__init__(**fastapi)
        self.gateway = gateway
        self.socket_tables = socket_tables

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            table = self.socket_tables.get(scope["path"])
            if table is not None:
                scope["app"] = self
                await self.gateway.serve(WebSocket(scope, receive, send), table, send)
                return
        await super().__call__(scope, receive, send)


class Ready(BaseModel):
    """``GET /ready`` while the gateway takes new work."""

    status: str = Field(description="`ready`.")
    gateway_id: str


class NotReady(BaseModel):
    """``GET /ready`` while it does not (503)."""

    status: str = Field(description="`not_ready`.")
    reason: str = Field(description="`draining` (SIGTERM), `broker_unreachable` (Redis) or `full` (max_connections).")
    detail: str
    gateway_id: str


class BroadcastRequest(BaseModel):
    """Body of ``POST /api/broadcast``: a ``system_alert`` to a group's members."""

    group: str = Field(min_length=1, max_length=128)
    message: str
    level: str = Field(default="info", pattern="^(info|warning|critical)$")


def _shallow(data: dict[str, Any], field: str, levels: int) -> dict[str, Any]:
    """``data`` if it nests at most ``levels`` deep: then, once framed, it nests no deeper than a
    socket frame may (``MAX_NESTING``), so whatever is accepted can be sent on."""
    if nests_deeper(data, levels):
        raise ValueError(f"{field} nests deeper than {levels} levels")
    return data


class SendRequest(BaseModel):
    """Body of ``POST /api/send``: a ``direct_message`` to one user, through their mailbox."""

    user: str = Field(
        min_length=1, max_length=256, description="The token's `sub` with auth on; else a client id (`cl_…`)."
    )
    message: dict[str, Any] = Field(description="The `data` of the `direct_message`.")

    @field_validator("message")
    @classmethod
    def _not_too_deep(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _shallow(data, "message", MAX_NESTING - 3)  # in `data` of the `direct_message` in `mail`


class Sent(BaseModel):
    """A direct message kept in the user's mailbox."""

    mail_seq: int = Field(description="Its `mail_seq` in the user's mailbox.")
    delivered: int = Field(description="Connections of the user on this gateway that got it at once.")


class PublishRequest(BaseModel):
    """Body of ``POST /api/publish``: a ``topic_message`` to a topic's subscribers."""

    topic: str = Field(min_length=1, max_length=128)
    data: dict[str, Any]

    @field_validator("data")
    @classmethod
    def _not_too_deep(cls, data: dict[str, Any]) -> dict[str, Any]:
        return _shallow(data, "data", MAX_NESTING - 2)  # in `data` of the `topic_message`


# FastAPI answers a body that is not JSON at all with 400; say so in the OpenAPI document.
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"description": "The body is not valid JSON."}}
OPERATOR: dict[int | str, dict[str, Any]] = {
    **BAD_BODY,
    401: {"description": "With auth on: no bearer token, or one that does not verify."},
    403: {"description": "With auth on: the token's scope lacks `admin`."},
}


class Delivered(BaseModel):
    """What a broadcast or publish reached."""

    delivered: int = Field(description="Connections on the gateway that answered this request that got the message.")
    gateways: int | None = Field(
        default=None,
        description="With Redis (GRAPHWIRE_REDIS_URL): how many other gateways received it to fan out to "
        "their own members (those watching the group or topic). Absent on a single gateway.",
    )
    kept: int | None = Field(
        default=None,
        description="Broadcasts only: members away (no connection open) who find it in their offline mailbox; "
        "absent when none was away.",
    )


class Undelivered(BaseModel):
    """Redis did not take the message: only this gateway's members got it."""

    detail: str
    delivered: int


CLUSTER_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "model": Undelivered,
        "description": "With Redis: Redis did not take the message within GRAPHWIRE_REDIS_TIMEOUT, so only this "
        "gateway's members (`delivered`) got it. A retry may repeat it for them.",
    }
}
MAILBOX_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "With Redis: the mailbox could not be reached within GRAPHWIRE_REDIS_TIMEOUT; nothing was kept."
    }
}


def create_app(
    settings: Settings | None = None, registry: WorkflowRegistry | None = None, broker: Broker | None = None
) -> GatewayApp:
    """The gateway as an ASGI app; with no arguments, the embedded defaults.

    ``broker`` defaults to what the settings say: Redis with ``redis_url``, else in-process.
    """
    settings = settings or Settings()
    if registry is None:
        registry = WorkflowRegistry()
        register_builtin_workflows(registry)
        for target in settings.workflows:
            registry.load(target)
    gateway = Gateway(settings, registry, broker)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Sync nodes run in the loop's default executor (asyncio.to_thread): bound it here.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.node_threads, thread_name_prefix="graphwire-node")
        )
        expire = asyncio.create_task(gateway.expire_loop())
        # An AsyncNode that blocks the loop is logged with its workflow and node (graphwire.watchdog).
        watchdog = LoopWatchdog(
            asyncio.get_running_loop(), settings.loop_block_warn_ms / 1000, describe_runs(gateway.runs.runs)
        )
        watchdog.start()
        # The broker (Redis) before the first socket; closed last, once uvicorn closed them all.
        await gateway.broker.start(gateway.deliver_remote, gateway.runs.watching)
        await gateway.post.start()
        orphans = asyncio.create_task(gateway.runs.orphan_loop())
        try:
            yield
        finally:
            expire.cancel()
            orphans.cancel()
            try:
                await gateway.runs.shutdown()
            finally:
                try:
                    await gateway.post.close()
                    await gateway.broker.close()
                finally:
                    await gateway.limits.close()  # the rate limits' Redis connections; never raises
                    watchdog.stop()

    sockets = {"/ws/workflow": WORKFLOW_MESSAGES, "/ws/chat": CHAT_MESSAGES}
    app = GatewayApp(gateway, sockets, title="graphwire", version="0.1.0", lifespan=lifespan)

    @app.get("/ws/health")
    async def health() -> dict[str, Any]:
        """Liveness: ``status`` is ``ok`` while the gateway serves; ``gateway_id`` says which process answered."""
        active = sum(1 for run in gateway.runs.runs.values() if not run.finished and not run.mirror)
        return {
            "status": "ok",
            "gateway_id": gateway.broker.gateway_id,
            "active_connections": len(gateway.connections.connections),
            "active_runs": active,
            "workflows": registry.names(),
        }

    # The OpenAPI document declares the bearer token only when auth is on: with it off, the
    # operator endpoints are open, and the document must say what the gateway does.
    operator_security: dict[str, Any] = {"security": [{"bearer": []}]} if gateway.auth.enabled else {}

    def caller(request: docs_page.Request) -> Principal | None:
        """The verified caller of an operator endpoint (``None`` with auth off); 401 otherwise."""
        if not gateway.auth.enabled:
            return None
        token = presented_token(request.headers, b"", ())  # the Authorization header only
        if token is None:
            gateway.metrics.auth_failures.labels("missing").inc()
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return gateway.auth.verify(token)
        except TokenRefused as refused:
            gateway.metrics.auth_failures.labels(refused.kind).inc()
            raise HTTPException(401, refused.reason, headers={"WWW-Authenticate": "Bearer"}) from None

    def admin(request: docs_page.Request) -> None:
        principal = caller(request)
        if principal is not None and not principal.may("admin"):
            gateway.metrics.auth_failures.labels("forbidden").inc()
            raise HTTPException(403, "this needs the scope admin")

    def admin_or_none(request: docs_page.Request) -> bool:
        """Whether the caller may see client ids: auth off, or an admin token."""
        if not gateway.auth.enabled:
            return True
        try:
            principal = caller(request)
        except HTTPException:
            return False
        return principal is not None and principal.may("admin")

    @app.get("/ws/metrics", openapi_extra=operator_security)
    async def metrics(show_clients: bool = Depends(admin_or_none)) -> dict[str, Any]:
        """The seed's counters: ``active_connections``, ``total_messages``, ``uptime``, ``clients``.

        With auth on, ``clients`` (every client id) is listed for an ``admin`` token only.
        """
        counters = gateway.connections.seed_metrics()
        if not show_clients:
            del counters["clients"]
        return counters

    @app.get("/metrics", response_class=PlainTextResponse, responses={404: {"description": "GRAPHWIRE_METRICS=false."}})
    async def prometheus() -> Response:
        """Prometheus metrics of this process (text format); each worker is its own target."""
        if not gateway.metrics.enabled:
            raise HTTPException(404, "metrics are off (GRAPHWIRE_METRICS=false)")
        return Response(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/ready",
        response_model=Ready,
        responses={503: {"model": NotReady, "description": "Not taking new work now; `reason` says why."}},
    )
    async def ready() -> Ready | JSONResponse:
        """Readiness: 200 while the gateway takes new connections and runs; 503 while it drains
        (SIGTERM), while Redis is out of reach (with GRAPHWIRE_REDIS_URL) or when it is full."""
        why = gateway.not_ready()
        if why is None:
            return Ready(status="ready", gateway_id=gateway.broker.gateway_id)
        body = NotReady(status="not_ready", reason=why[0], detail=why[1], gateway_id=gateway.broker.gateway_id)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})

    @app.get("/asyncapi.yaml", response_class=Response)
    async def asyncapi() -> Response:
        """The protocol: the AsyncAPI 3.0 document every frame follows."""
        return Response(SPEC_YAML, media_type="application/yaml")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo() -> Response:
        """The browser demo: chat, data processing and approval over ``@graphwire/client``."""
        return _static_page("demo/index.html", "The browser demo", "make setup")

    @app.api_route("/docs/asyncapi", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def asyncapi_docs(request: docs_page.Request) -> Response:
        """``spec/asyncapi.yaml`` rendered as HTML (``make docs``), showing the address it was asked at."""
        page = STATIC / "docs" / "asyncapi.html"
        if not page.is_file():
            return _static_page("docs/asyncapi.html", "The AsyncAPI documentation", "make docs")
        return await docs_page.respond(page, request)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    def answer(reach: Reach) -> Delivered | JSONResponse:
        if not gateway.broker.shared:
            return Delivered(delivered=reach.delivered)
        if reach.gateways is None:
            # Partly done: a 503 makes the outage visible to the caller and its monitoring.
            body = Undelivered(
                detail="Redis is out of reach: only this gateway's members got it", delivered=reach.delivered
            )
            return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})
        return Delivered(delivered=reach.delivered, gateways=reach.gateways)

    @app.post(
        "/api/broadcast",
        responses={**OPERATOR, **CLUSTER_DOWN},
        dependencies=[Depends(admin)],
        openapi_extra=operator_security,
        response_model=Delivered,
        response_model_exclude_none=True,
    )
    async def broadcast(body: BroadcastRequest) -> Delivered | JSONResponse:
        """``manager.broadcast_to_group`` over HTTP, for back-ends that alert a group, on every gateway.

        Members who are away (no connection open anywhere) find it in their mailbox (``kept``).
        """
        frame = alert_frame(body.group, body.message, body.level)
        reach = await gateway.connections.broadcast_to_group_everywhere(body.group, frame)
        kept = await gateway.post.alert(body.group, frame)
        response = answer(reach)
        if isinstance(response, Delivered) and kept:
            response.kept = kept
        return response

    @app.post(
        "/api/send",
        responses={**OPERATOR, **MAILBOX_DOWN},
        openapi_extra=operator_security,
        response_model=Sent,
    )
    async def send(body: SendRequest, request: docs_page.Request) -> Sent | JSONResponse:
        """A ``direct_message`` to one user: kept in their mailbox until they acknowledge it.

        A user who is connected gets it at once as ``mail``, on every gateway; one who is
        away, on their next connection.
        """
        principal = caller(request)
        if principal is not None and not principal.may("admin"):
            gateway.metrics.auth_failures.labels("forbidden").inc()
            raise HTTPException(403, "this needs the scope admin")
        try:
            letter, delivered = await gateway.post.send(body.user, body.message, principal.sub if principal else None)
        except MailboxUnavailable as exc:
            return JSONResponse({"detail": f"the mailbox is out of reach: {exc}"}, status_code=503)
        return Sent(mail_seq=letter.mail_seq, delivered=delivered)

    @app.post(
        "/api/publish",
        responses={**OPERATOR, **CLUSTER_DOWN},
        dependencies=[Depends(admin)],
        openapi_extra=operator_security,
        response_model=Delivered,
        response_model_exclude_none=True,
    )
    async def publish(body: PublishRequest) -> Delivered | JSONResponse:
        """Publish ``data`` on a topic, on every gateway."""
        return answer(await gateway.connections.publish_everywhere(body.topic, body.data))

    if gateway.auth.enabled:
        generated = app.openapi

        def openapi_with_bearer() -> dict[str, Any]:
            schema = generated()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            return schema

        app.openapi = openapi_with_bearer  # type: ignore[method-assign]
    return app
