"""Tokens, auth refusals and rate limits: the pure pieces, the core, and the client over a fake transport."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_client_core import HELLO, WID, error, frame, online, sent, start
from test_client_core import started as core_started
from test_client_transport import FAST, TS, FakeSocket, FakeTransport, started, token

from graphwire_client import (
    ConnectionForbidden,
    ConnectionLost,
    ConnectionRejected,
    ConnectionUnauthorized,
    Forbidden,
    GraphwireClient,
    RateLimited,
    RunUnavailable,
    ServerError,
    TokenExpired,
    TransportClosed,
    Unauthorized,
)
from graphwire_client._auth import MIN_REFRESH_LEAD, call_provider, refresh_delay, token_expiry
from graphwire_client._core import MAX_RATE_LIMIT_RETRIES, MAX_UNAVAILABLE_RETRIES, repeatable
from graphwire_client._generated.messages import (
    Ack,
    CancelWorkflow,
    ErrorCode,
    JoinGroup,
    NodeInput,
    Ping,
    Pong,
    RefreshToken,
    StartWorkflow,
    Subscribe,
    Subscribed,
    Unsubscribe,
    WorkflowStarted,
)
from graphwire_client.exceptions import close_error


def jwt(exp: float | None, sub: str = "alice") -> str:
    """An unsigned JWT-shaped token: the client only reads ``exp``, the gateway verifies."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims: dict[str, Any] = {"sub": sub} if exp is None else {"sub": sub, "exp": exp}
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def in_seconds(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


class AuthTransport(FakeTransport):
    """Greets with ``expires_at`` (``lifetime`` seconds from now, when set) and ``user``."""

    def __init__(self, lifetime: float | None = None) -> None:
        super().__init__(greet=False)
        self.lifetime = lifetime
        self.greeting = True
        self.close_with: int | None = None
        """When set, every socket is closed with this code instead of the greeting."""

    async def connect(self, url: str, *, headers: Any, open_timeout: float) -> FakeSocket:
        socket = await super().connect(url, headers=headers, open_timeout=open_timeout)
        if self.close_with is not None:
            socket.drop(self.close_with)
        elif self.greeting:
            hello: dict[str, Any] = {
                "type": "connected",
                "client_id": f"cl_{len(self.sockets)}",
                "protocol_version": "1",
                "max_message_size": 1 << 20,
                "user": "alice",
            }
            if self.lifetime is not None:
                hello["expires_at"] = in_seconds(self.lifetime).isoformat()
            socket.push(hello)
        return socket

    def tokens(self) -> list[str | None]:
        return [headers.get("Authorization") for _, headers in self.calls]


class Provider:
    """``get_token``: hands out ``t1``, ``t2`` … (JWT-shaped, living ``lifetime`` seconds)."""

    def __init__(self, lifetime: float = 60.0) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.failing = False
        self.issued: list[str] = []

    async def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise RuntimeError("the identity provider is down")
        await asyncio.sleep(0)
        issued = jwt(time.time() + self.lifetime, sub=f"t{self.calls}")
        self.issued.append(issued)
        return issued


# --- the pure pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "delay"),
    [(3600.0, 2880.0), (120.0, 90.0), (40.0, 20.0), (5.0, 2.5), (MIN_REFRESH_LEAD, MIN_REFRESH_LEAD / 2)],
)
def test_refresh_comes_at_80_percent_or_30_s_before_but_not_before_half(remaining: float, delay: float) -> None:
    assert refresh_delay(remaining) == pytest.approx(delay)


@pytest.mark.parametrize("remaining", [0.99, 0.0, -5.0])
def test_too_close_to_expiry_there_is_no_in_band_refresh(remaining: float) -> None:
    assert refresh_delay(remaining) is None


def test_every_refresh_lands_before_expiry_with_a_margin() -> None:
    for remaining in [1.0, 2.0, 10.0, 60.0, 149.0, 151.0, 900.0, 86400.0]:
        delay = refresh_delay(remaining)
        assert delay is not None
        assert remaining / 2 <= delay <= remaining * 0.8


def test_the_expiry_is_read_from_the_jwt_exp_claim() -> None:
    assert token_expiry(jwt(1_800_000_000)) == datetime.fromtimestamp(1_800_000_000, UTC)
    assert token_expiry(jwt(None)) is None
    for junk in ["", "opaque-token", "a.b", "a.!!!.c", f"x.{base64.urlsafe_b64encode(b'[1]').decode()}.y"]:
        assert token_expiry(junk) is None, junk
    as_bool = base64.urlsafe_b64encode(b'{"exp": true}').decode().rstrip("=")
    assert token_expiry(f"h.{as_bool}.s") is None


async def test_a_provider_may_be_sync_or_async_and_must_return_a_token() -> None:
    async def from_network() -> str:
        return "async-token"

    assert await call_provider(lambda: "sync-token") == "sync-token"
    assert await call_provider(from_network) == "async-token"
    with pytest.raises(TypeError, match="non-empty str, not str"):
        await call_provider(lambda: "")
    with pytest.raises(TypeError) as wrong:
        await call_provider(lambda: b"eyJ-secret")  # type: ignore[arg-type, return-value]
    assert "secret" not in str(wrong.value), "the value is never in the message"


@pytest.mark.parametrize(
    ("code", "cls", "meaning"),
    [
        (4001, ConnectionUnauthorized, Unauthorized),
        (4002, TokenExpired, Unauthorized),
        (4003, ConnectionForbidden, Forbidden),
    ],
)
def test_an_auth_close_is_a_connection_rejected_and_the_error_of_its_meaning(
    code: int, cls: type[ConnectionRejected], meaning: type[ServerError]
) -> None:
    rejected = close_error(code, "nope")
    assert type(rejected) is cls
    assert isinstance(rejected, ConnectionRejected)
    assert isinstance(rejected, meaning)
    assert (rejected.close_code, rejected.reason) == (code, "nope")
    assert rejected.code.value == meaning.__name__.lower()
    assert str(code) in str(rejected)
    assert type(close_error(1008)) is ConnectionRejected


# --- the core: rate limits, refused attaches -----------------------------------------------------


def test_the_commands_safe_to_repeat_are_the_ones_retried() -> None:
    assert repeatable(StartWorkflow(type="start_workflow", workflow="chat", idempotency_key="k"))
    assert not repeatable(StartWorkflow(type="start_workflow", workflow="chat"))
    assert repeatable(NodeInput(type="node_input", workflow_id=WID, node_id="n", data={}, idempotency_key="k"))
    for message in [
        Ping(type="ping"),
        JoinGroup(type="join_group", group="g"),
        RefreshToken(type="refresh_token", token="t"),
    ]:
        assert repeatable(message)
    assert not repeatable(CancelWorkflow(type="cancel_workflow", workflow_id=WID))
    assert not repeatable(Unsubscribe(type="unsubscribe", topics=["t"]))


def test_a_rate_limited_start_is_held_then_goes_again_identical_and_is_no_repeat() -> None:
    core = online()
    pending = core.command(StartWorkflow(type="start_workflow", workflow="approval"), WorkflowStarted)
    (first,) = sent(core)
    refused = core.receive_text(frame(error("rate_limited", pending.id, retry_after=0.5)))
    assert refused.retry_after == 0.5
    assert refused.settled == [], "held: its caller waits on"
    assert refused.deliveries == [], "nobody hears of the refusal"
    assert sent(core) == [], "nothing goes before release_held()"
    core.release_held()
    assert sent(core) == [first], "the same frame: same id, same idempotency_key"
    core.receive_text(frame(core_started(reply_to=pending.id)))
    assert isinstance(pending.reply, WorkflowStarted)
    assert sent(core) == [], "a start that was refused, not applied, fetches no log again"


def test_a_command_refused_too_often_fails_with_rate_limited() -> None:
    core = online()
    pending = core.command(Ping(type="ping"), Pong)
    for _ in range(MAX_RATE_LIMIT_RETRIES):
        sent(core)
        assert core.receive_text(frame(error("rate_limited", pending.id, retry_after=1))).retry_after == 1
        core.release_held()
    assert len(sent(core)) == 1
    last = core.receive_text(frame(error("rate_limited", pending.id, retry_after=2)))
    assert last.settled == [pending]
    assert isinstance(pending.error, RateLimited)
    assert pending.error.retry_after == 2


def test_a_command_not_safe_to_repeat_fails_at_once() -> None:
    core = online()
    pending = core.command(CancelWorkflow(type="cancel_workflow", workflow_id=WID), Ack)
    sent(core)
    refused = core.receive_text(frame(error("rate_limited", pending.id)))
    assert refused.retry_after is None
    assert isinstance(pending.error, RateLimited)


def test_held_commands_go_again_in_the_order_they_were_sent() -> None:
    core = online()
    first = core.command(Subscribe(type="subscribe", topics=["a"]), Subscribed)
    second = core.command(JoinGroup(type="join_group", group="g"), Ack)
    sent(core)
    refused = core.receive_text(
        frame(error("rate_limited", first.id, retry_after=0.2), error("rate_limited", second.id, retry_after=0.4))
    )
    assert refused.retry_after == 0.4, "one release, when the last of them may go"
    core.release_held()
    assert [m["id"] for m in sent(core)] == [first.id, second.id]


def test_a_rate_limited_resume_subscribe_is_retried() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.connection_lost()
    core.connection_made(HELLO)
    (resume,) = sent(core)
    assert core.receive_text(frame(error("rate_limited", resume["id"], retry_after=0.1))).retry_after == 0.1
    core.release_held()
    assert sent(core) == [resume]
    assert not run.done


# --- run_unavailable: the gateway running the run did not answer -------------------------------


def test_an_answer_the_owner_did_not_confirm_goes_again_identical_and_counts_as_a_repeat() -> None:
    core = online()
    start(core)
    pending = core.command(
        NodeInput(type="node_input", workflow_id=WID, node_id="approve", request_id="req_1", data={"value": "yes"}),
        Ack,
    )
    (first,) = sent(core)
    refused = core.receive_text(frame(error("run_unavailable", pending.id, workflow_id=WID)))
    assert refused.retry_after == 1.0, "no retry_after in the frame: the default wait"
    assert (refused.settled, refused.deliveries) == ([], [])
    assert sent(core) == []
    core.release_held()
    assert sent(core) == [first], "the same frame: same id, same idempotency_key"
    assert pending.attempts == 2, "the first copy may have landed"
    core.receive_text(frame({"type": "ack", "reply_to": pending.id, "command": "node_input", "workflow_id": WID}))
    assert isinstance(pending.reply, Ack)


def test_a_command_the_owner_never_confirms_fails_with_run_unavailable() -> None:
    core = online()
    start(core)
    pending = core.command(
        NodeInput(type="node_input", workflow_id=WID, node_id="approve", data={"value": "yes"}, idempotency_key="k"),
        Ack,
    )
    for _ in range(MAX_UNAVAILABLE_RETRIES):
        sent(core)
        assert core.receive_text(frame(error("run_unavailable", pending.id))).settled == []
        core.release_held()
    assert len(sent(core)) == 1
    last = core.receive_text(frame(error("run_unavailable", pending.id, workflow_id=WID)))
    assert last.settled == [pending]
    assert isinstance(pending.error, RunUnavailable)
    assert (pending.error.code, pending.error.workflow_id) == (ErrorCode.run_unavailable, WID)


def test_a_cancel_the_owner_did_not_confirm_fails_at_once_with_run_unavailable() -> None:
    core = online()
    start(core)
    pending = core.command(CancelWorkflow(type="cancel_workflow", workflow_id=WID), Ack)
    sent(core)
    refused = core.receive_text(frame(error("run_unavailable", pending.id)))
    assert refused.retry_after is None
    assert isinstance(pending.error, RunUnavailable)


def test_a_resume_that_finds_the_run_unavailable_is_retried_not_lost() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.connection_lost()
    core.connection_made(HELLO)
    (resume,) = sent(core)
    refused = core.receive_text(frame(error("run_unavailable", resume["id"], workflow_id=WID)))
    assert refused.retry_after == 1.0
    assert refused.changed == []
    assert not run.done
    core.release_held()
    assert sent(core) == [resume]


def test_a_refused_attach_forgets_the_run_so_a_second_attach_asks_again() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    sent(core)
    core.receive_text(frame(error("forbidden", attach.id)))
    assert isinstance(attach.error, Forbidden)
    assert WID not in core.runs
    again = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    assert [m["id"] for m in sent(core)] == [again.id]
    core.connection_lost()
    core.connection_made(HELLO)
    assert [m["id"] for m in sent(core)] == [again.id], "no resume of the refused attach"


def test_a_resume_the_server_refuses_fails_the_run_with_that_error() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.connection_lost()
    core.connection_made(HELLO)
    (resume,) = sent(core)
    refused = core.receive_text(frame(error("forbidden", resume["id"])))
    assert refused.changed == [run]
    assert isinstance(run.failure, Forbidden)
    assert run.done
    assert WID not in core.runs


def test_a_refused_subscribe_of_a_followed_run_leaves_the_run_alone() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    other = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=1), Subscribed)
    sent(core)
    core.receive_text(frame(error("too_many_subscriptions", other.id)))
    assert other.error is not None
    assert core.runs[WID] is run
    assert run.failure is None
    assert not run.done


# --- the client: tokens --------------------------------------------------------------------------


def client_for(transport: FakeTransport, **kwargs: Any) -> GraphwireClient:
    return GraphwireClient("ws://gateway.test/ws/workflow", reconnect=FAST, transport=transport, **kwargs)


async def test_token_and_get_token_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        GraphwireClient(token="a", get_token=lambda: "b")


async def test_get_token_is_asked_at_every_connect_and_its_token_sent_as_the_bearer_header() -> None:
    transport = AuthTransport()
    provider = Provider()
    headers = {"authorization": "Bearer stale", "X-Trace": "1"}
    async with client_for(transport, get_token=provider, headers=headers) as client:
        assert client.user == "alice"
        transport.sockets[0].drop(1012)
        await transport.next_socket(1)
    assert provider.calls == 2
    assert transport.tokens() == [f"Bearer {t}" for t in provider.issued]
    assert all(h["X-Trace"] == "1" and "authorization" not in h for _, h in transport.calls)
    assert all("token=" not in url for url, _ in transport.calls), "never in the URL"


async def test_a_sync_get_token_works_too() -> None:
    transport = AuthTransport()
    async with client_for(transport, get_token=lambda: "sync-token"):
        pass
    assert transport.tokens() == ["Bearer sync-token"]


async def test_a_get_token_that_raises_is_a_failed_attempt() -> None:
    transport = AuthTransport()
    provider = Provider()
    provider.failing = True
    with pytest.raises(ConnectionLost) as lost:
        await client_for(transport, get_token=provider).connect()
    assert provider.calls == FAST.max_attempts == lost.value.attempts
    assert isinstance(lost.value.__cause__, RuntimeError)
    assert transport.attempts == 0, "no handshake without a token"


async def test_the_token_is_refreshed_in_band_before_it_expires() -> None:
    transport = AuthTransport(lifetime=1.2)
    provider = Provider(lifetime=1.5)
    async with client_for(transport, get_token=provider) as client:
        socket = transport.sockets[0]
        for expected in (2, 3):
            refresh = await asyncio.wait_for(socket.sent.get(), 5)
            assert refresh == {"type": "refresh_token", "id": refresh["id"], "token": provider.issued[expected - 1]}
            socket.push({"type": "ack", "reply_to": refresh["id"], "command": "refresh_token"})
        assert client.state.value == "connected"
    assert transport.attempts == 1, "renewed on the open connection, no reconnect"


async def test_a_refused_refresh_is_tried_again_and_the_connection_stays() -> None:
    transport = AuthTransport(lifetime=3)  # asked after 1.5 s; refused; again 0.75 s later
    provider = Provider()
    async with client_for(transport, get_token=provider):
        socket = transport.sockets[0]
        first = await asyncio.wait_for(socket.sent.get(), 5)
        assert first["type"] == "refresh_token"
        socket.push(error("unauthorized", first["id"]))  # the old token stays in force
        second = await asyncio.wait_for(socket.sent.get(), 5)
        assert second["type"] == "refresh_token"
        assert second["token"] != first["token"], "a fresh token from get_token"
    assert transport.attempts == 1


async def test_a_static_token_is_not_refreshed_but_one_refreshed_by_hand_is_kept() -> None:
    transport = AuthTransport(lifetime=1.2)
    async with client_for(transport, token="t1") as client:
        socket = transport.sockets[0]
        refreshing = asyncio.create_task(client.commands.refresh_token("t2"))
        sent_frame = await socket.next()
        assert sent_frame["token"] == "t2"
        socket.push({"type": "ack", "reply_to": sent_frame["id"], "command": "refresh_token"})
        await refreshing
        await asyncio.sleep(0.8)  # past the point a get_token would have been asked
        assert socket.sent.empty(), "nothing to refresh with"
        socket.drop(1012)
        await transport.next_socket(1)
    assert transport.tokens() == ["Bearer t1", "Bearer t2"]


async def test_a_4002_with_get_token_reconnects_with_a_fresh_token_and_resumes() -> None:
    transport = AuthTransport()
    provider = Provider()
    async with client_for(transport, get_token=provider) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        socket.push(started((await socket.next())["id"]), token(2, "a"))
        run = await starting
        socket.drop(4002)
        again = await transport.next_socket(1)
        resume = await again.next()
        assert (resume["type"], resume["workflow_id"], resume["since_seq"]) == ("subscribe", "r1", 2)
        again.push(
            {"type": "subscribed", "reply_to": resume["id"], "topics": [], "workflow_id": "r1", "since_seq": 2},
            token(3, "b"),
            {"type": "workflow_completed", "workflow_id": "r1", "seq": 4, "timestamp": TS, "data": {"reply": "ab"}},
        )
        assert (await asyncio.wait_for(run.result(), 2)).reply == "ab"
        assert [e.seq for e in run.events] == [1, 2, 3, 4]
    assert transport.tokens() == [f"Bearer {t}" for t in provider.issued]
    assert provider.calls == 2


async def test_a_4002_with_a_static_token_ends_the_client_with_token_expired() -> None:
    transport = AuthTransport()
    async with client_for(transport, token="t1") as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        socket.push(started((await socket.next())["id"]))
        run = await starting
        socket.incoming.put_nowait(TransportClosed(4002, "token expired"))
        with pytest.raises(TokenExpired) as expired:
            await asyncio.wait_for(run.result(), 2)
        assert expired.value.reason == "token expired"
        with pytest.raises(Unauthorized):
            await client.ping()
    assert transport.attempts == 1


async def test_a_token_expired_at_the_handshake_is_a_failed_attempt_with_get_token() -> None:
    transport = AuthTransport()
    transport.close_with = 4002
    provider = Provider()
    with pytest.raises(ConnectionLost) as lost:
        await client_for(transport, get_token=provider).connect()
    assert provider.calls == transport.attempts == FAST.max_attempts
    assert isinstance(lost.value.__cause__, TransportClosed)
    assert lost.value.__cause__.code == 4002


@pytest.mark.parametrize(("code", "cls"), [(4001, ConnectionUnauthorized), (4003, ConnectionForbidden)])
async def test_4001_and_4003_end_the_client_even_with_get_token(code: int, cls: type[ConnectionRejected]) -> None:
    transport = AuthTransport()
    transport.greeting = False
    provider = Provider()
    client = client_for(transport, get_token=provider)
    connecting = asyncio.create_task(client.connect())
    (await transport.next_socket(0)).drop(code)
    with pytest.raises(cls) as refused:
        await connecting
    assert refused.value.close_code == code
    assert (transport.attempts, provider.calls) == (1, 1), "not retried"


# --- the client: rate limits ---------------------------------------------------------------------


async def test_a_rate_limited_command_goes_again_after_retry_after() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        first = await socket.next()
        refused_at = asyncio.get_running_loop().time()
        socket.push(error("rate_limited", first["id"], retry_after=0.1))
        again = await socket.next()
        assert asyncio.get_running_loop().time() - refused_at >= 0.1
        assert again == first
        socket.push(started(again["id"]))
        assert (await asyncio.wait_for(starting, 2)).workflow_id == "r1"


async def test_a_command_still_rate_limited_after_the_retries_raises_rate_limited() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        pinging = asyncio.create_task(client.commands.ping())
        for _ in range(MAX_RATE_LIMIT_RETRIES + 1):
            socket.push(error("rate_limited", (await socket.next())["id"], retry_after=0.01))
        with pytest.raises(RateLimited) as limited:
            await asyncio.wait_for(pinging, 2)
        assert limited.value.retry_after == 0.01
        assert socket.sent.empty()


async def test_a_rate_limited_cancel_raises_at_once() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        cancelling = asyncio.create_task(client.commands.cancel_workflow("r1"))
        socket.push(error("rate_limited", (await socket.next())["id"], retry_after=0.01))
        with pytest.raises(RateLimited):
            await asyncio.wait_for(cancelling, 2)
        await asyncio.sleep(0.05)
        assert socket.sent.empty(), "not sent again"


async def test_a_drop_while_held_sends_the_command_on_the_next_connection() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        pinging = asyncio.create_task(client.commands.ping())
        socket.push(error("rate_limited", (await socket.next())["id"], retry_after=30))
        socket.drop()
        again = await transport.next_socket(1)
        ping = await again.next()
        again.push({"type": "pong", "reply_to": ping["id"], "timestamp": TS})
        assert (await asyncio.wait_for(pinging, 2)).type == "pong"
