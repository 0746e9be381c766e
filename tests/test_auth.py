"""Who may connect and what each may do (issue 11), against a real ``graphwire serve`` with auth on."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed

from harness import Client, Server, connect, start_server, stop_server

SECRET = "a-test-secret-of-at-least-32-bytes!"
OTHER_SECRET = "another-secret-of-at-least-32-bytes"
EVERYTHING = "workflows:start runs:read runs:answer runs:cancel groups:join:* topics:subscribe:*"


def token(sub: str | None = "alice", scope: str = "workflows:start", ttl: float = 600, **claims: Any) -> str:
    body: dict[str, Any] = {"exp": int(time.time() + ttl), "scope": scope, **claims}
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, claims.pop("key", SECRET), algorithm="HS256")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = {"GRAPHWIRE_AUTH_JWT_SECRET": SECRET, "GRAPHWIRE_ORIGINS": '["http://good.example"]'}
    server = start_server(tmp_path_factory.mktemp("auth"), env=env)
    yield server
    stop_server(server)


async def as_user(server: Server, tok: str, path: str = "/ws/workflow", **kwargs: Any) -> Client:
    return await connect(server.ws(path), additional_headers={"Authorization": f"Bearer {tok}"}, **kwargs)


async def refused(url: str, **kwargs: Any) -> tuple[int | None, str, list[str]]:
    """Connect, and read until the gateway closes: (close code, reason, frames before it)."""
    frames: list[str] = []
    async with websockets.connect(url, open_timeout=10, **kwargs) as ws:
        with contextlib.suppress(ConnectionClosed):
            while True:
                frames.append(str(await asyncio.wait_for(ws.recv(), 10)))
        close = ws.protocol.close_rcvd
        if close is None:
            return None, "closed without a close frame", frames
        return close.code, close.reason, frames


def hs256_with(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token keyed with ``key`` by hand: pyjwt itself refuses a PEM as an HMAC key."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


BAD_TOKENS = {
    "junk": ("not-a-jwt", 4001),
    "forged": (token(key=OTHER_SECRET), 4001),
    "alg-none": (jwt.encode({"sub": "alice", "exp": int(time.time() + 600)}, None, algorithm="none"), 4001),
    "expired": (token(ttl=-10), 4002),
    "no-sub": (token(sub=None), 4001),
    "no-exp": (jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256"), 4001),
    "empty-sub": (token(sub=""), 4001),
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
async def test_a_bad_token_is_refused_with_its_code_and_nothing_else(auth_server: Server, name: str) -> None:
    bad, expected = BAD_TOKENS[name]
    for carrier in ("header", "query", "subprotocol"):
        if carrier == "header":
            result = await refused(auth_server.ws(), additional_headers={"Authorization": f"Bearer {bad}"})
        elif carrier == "query":
            result = await refused(auth_server.ws() + f"?token={bad}")
        else:
            result = await refused(auth_server.ws(), subprotocols=["graphwire.v1", f"bearer.{bad}"])  # type: ignore[list-item]
        code, reason, frames = result
        assert (code, frames) == (expected, []), (carrier, code, reason, frames)
        assert reason


async def test_no_token_is_4001(auth_server: Server) -> None:
    code, reason, frames = await refused(auth_server.ws())
    assert (code, frames) == (4001, [])
    assert "token" in reason


@pytest.mark.parametrize("carrier", ["header", "query", "subprotocol"])
async def test_a_good_token_connects_by_every_carrier(auth_server: Server, carrier: str) -> None:
    good = token("alice")
    if carrier == "header":
        client = await as_user(auth_server, good)
    elif carrier == "query":
        client = await connect(auth_server.ws() + f"?token={good}")
    else:
        client = await connect(auth_server.ws(), subprotocols=["graphwire.v1", f"bearer.{good}"])
        assert client.ws.subprotocol == "graphwire.v1"
    assert client.hello["user"] == "alice"
    assert client.hello["expires_at"]
    await client.ping()
    await client.close()


async def test_origins_are_checked_and_clients_without_one_pass(auth_server: Server) -> None:
    headers = {"Authorization": f"Bearer {token()}"}
    code, _reason, frames = await refused(auth_server.ws(), additional_headers=headers, origin="http://evil.example")  # type: ignore[arg-type]
    assert (code, frames) == (1008, [])
    good = await connect(auth_server.ws(), additional_headers=headers, origin="http://good.example")
    await good.ping()
    await good.close()


async def test_runs_belong_to_their_owner(auth_server: Server) -> None:
    alice = await as_user(auth_server, token("alice"))
    bob = await as_user(auth_server, token("bob"))
    reader = await as_user(auth_server, token("carol", "runs:read"))
    started = await alice.start("approval", {"message": "ok?", "timeout": 60})
    wid = started["workflow_id"]
    request = (await alice.until(lambda m: m["type"] == "input_request"))[-1]
    attempts = [
        {"type": "subscribe", "id": "s", "workflow_id": wid},
        {"type": "subscribe", "id": "r", "workflow_id": wid, "since_seq": 1},
        {"type": "node_input", "id": "a", "workflow_id": wid, "node_id": request["node_id"], "data": {"value": "yes"}},
        {"type": "cancel_workflow", "id": "c", "workflow_id": wid},
        {"type": "unsubscribe", "id": "u", "workflow_id": wid},
    ]
    for attempt in attempts:
        await bob.send(attempt)
        answer = (await bob.until(lambda m, i=attempt["id"]: m.get("reply_to") == i))[-1]
        assert answer["code"] == "forbidden", answer
        # A run that does not exist gets the very same answer: bob learns nothing.
        await bob.send({**attempt, "workflow_id": "run_doesnotexist"})
        ghost = (await bob.until(lambda m, i=attempt["id"]: m.get("reply_to") == i))[-1]
        assert ghost["code"] == "forbidden", ghost
    # Nothing changed: the run still waits for its owner.
    await reader.send({"type": "subscribe", "id": "s", "workflow_id": wid})
    snapshot = (await reader.until(lambda m: m.get("reply_to") == "s"))[-1]["snapshot"]
    assert snapshot["status"] == "waiting"
    # runs:read lets carol watch, not answer.
    await reader.send(attempts[2])
    assert (await reader.until(lambda m: m.get("reply_to") == "a"))[-1]["code"] == "forbidden"
    await alice.answer(request, "yes")
    assert (await alice.run_events(wid))[-1]["type"] == "workflow_completed"
    assert (await reader.run_events(wid))[-1]["type"] == "workflow_completed"
    await asyncio.gather(alice.close(), bob.close(), reader.close())


async def test_starting_needs_a_scope_and_keys_are_per_user(auth_server: Server) -> None:
    nobody = await as_user(auth_server, token("dave", ""))
    await nobody.send({"type": "start_workflow", "id": "x", "workflow": "chat", "params": {"message": "hi"}})
    assert (await nobody.until(lambda m: m.get("reply_to") == "x"))[-1]["code"] == "forbidden"
    only_chat = await as_user(auth_server, token("erin", "workflows:start:chat"))
    await only_chat.start("chat", {"message": "hi"}, "c")
    await only_chat.send({"type": "start_workflow", "id": "t", "workflow": "ticker", "params": {}})
    assert (await only_chat.until(lambda m: m.get("reply_to") == "t"))[-1]["code"] == "forbidden"
    # The same idempotency key from two users is two runs.
    a, b = await as_user(auth_server, token("alice")), await as_user(auth_server, token("bob"))
    start = {
        "type": "start_workflow",
        "id": "k",
        "workflow": "chat",
        "params": {"message": "x"},
        "idempotency_key": "k1",
    }
    await a.send(start)
    await b.send(start)
    run_a = (await a.until(lambda m: m.get("reply_to") == "k"))[-1]["workflow_id"]
    run_b = (await b.until(lambda m: m.get("reply_to") == "k"))[-1]["workflow_id"]
    assert run_a != run_b
    await asyncio.gather(nobody.close(), only_chat.close(), a.close(), b.close())


async def test_groups_and_topics_need_their_scopes(auth_server: Server) -> None:
    client = await as_user(auth_server, token("frank", "groups:join:ops topics:subscribe:news"))
    for frame, allowed in [
        ({"type": "join_group", "id": "g1", "group": "ops"}, True),
        ({"type": "join_group", "id": "g2", "group": "admins"}, False),
        ({"type": "subscribe", "id": "t1", "topics": ["news"]}, True),
        ({"type": "subscribe", "id": "t2", "topics": ["news", "secrets"]}, False),
    ]:
        await client.send(frame)
        answer = (await client.until(lambda m, i=frame["id"]: m.get("reply_to") == i))[-1]
        assert (answer["type"] != "error") == allowed, answer
        if not allowed:
            assert answer["code"] == "forbidden"
    await client.send({"type": "subscribe", "id": "now"})
    assert (await client.until(lambda m: m.get("reply_to") == "now"))[-1]["topics"] == ["news"]
    await client.close()


def http(server: Server, path: str, body: dict[str, Any] | None = None, tok: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.http + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_operator_endpoints_need_admin(auth_server: Server) -> None:
    alert = {"group": "ops", "message": "disk full", "level": "critical"}
    assert http(auth_server, "/api/broadcast", alert)[0] == 401
    assert http(auth_server, "/api/broadcast", alert, "junk")[0] == 401
    assert http(auth_server, "/api/broadcast", alert, token("alice", EVERYTHING))[0] == 403
    assert http(auth_server, "/api/publish", {"topic": "t", "data": {}}, token("alice"))[0] == 403
    status, body = http(auth_server, "/api/broadcast", alert, token("root", "admin"))
    assert (status, body["delivered"]) == (200, 0)  # `kept` too if an earlier test's member of ops is away
    status, metrics = http(auth_server, "/ws/metrics")
    assert status == 200
    assert "clients" not in metrics
    assert "clients" in http(auth_server, "/ws/metrics", tok=token("root", "admin"))[1]


async def test_a_token_expiring_while_connected_closes_4002_unless_refreshed(auth_server: Server) -> None:
    short = await as_user(auth_server, token("alice", ttl=2))
    refreshed = await as_user(auth_server, token("alice", ttl=2))
    await refreshed.send({"type": "refresh_token", "id": "bad", "token": "junk"})
    assert (await refreshed.until(lambda m: m.get("reply_to") == "bad"))[-1]["code"] == "unauthorized"
    await refreshed.send({"type": "refresh_token", "id": "other", "token": token("mallory")})
    assert (await refreshed.until(lambda m: m.get("reply_to") == "other"))[-1]["code"] == "forbidden"
    await refreshed.send({"type": "refresh_token", "id": "ok", "token": token("alice", ttl=600)})
    assert (await refreshed.until(lambda m: m.get("reply_to") == "ok"))[-1]["type"] == "ack"
    with pytest.raises(ConnectionClosed) as closed:
        await short.until(lambda m: False, timeout=15)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4002
    await asyncio.sleep(1)  # past the old expiry: the refreshed one lives on
    await refreshed.ping()
    await refreshed.close()


async def test_a_fresh_token_rechecks_the_runs_it_watches(auth_server: Server) -> None:
    alice = await as_user(auth_server, token("alice"))
    carol = await as_user(auth_server, token("carol", "runs:read"))
    run = await alice.start("approval", {"message": "?", "timeout": 60})
    await carol.send({"type": "subscribe", "id": "s", "workflow_id": run["workflow_id"]})
    await carol.until(lambda m: m.get("reply_to") == "s")
    await carol.send({"type": "refresh_token", "id": "r", "token": token("carol", "")})
    dropped = await carol.until(lambda m: m.get("code") == "forbidden")
    assert dropped[-1]["workflow_id"] == run["workflow_id"]
    await alice.send({"type": "cancel_workflow", "id": "c", "workflow_id": run["workflow_id"]})
    await alice.until(lambda m: m["type"] == "workflow_cancelled")
    await carol.ping()  # and carol never saw the cancellation
    assert not any(m["type"] == "workflow_cancelled" for m in carol.frames)
    await asyncio.gather(alice.close(), carol.close())


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    env = {
        "GRAPHWIRE_RATE_LIMIT_PER_CONNECTION": "20/second",
        "GRAPHWIRE_RATE_LIMIT_PER_USER": "1000/second",
        "GRAPHWIRE_RATE_LIMIT_PER_COMMAND": '{"start_workflow": "2/minute"}',
        "GRAPHWIRE_RATE_LIMIT_CLOSE_AFTER": "5",
    }
    server = start_server(tmp_path, env=env)
    yield server
    stop_server(server)


async def test_commands_over_the_limit_are_refused_with_retry_after(limited: Server) -> None:
    client, other = await connect(limited.ws()), await connect(limited.ws())
    for i in range(30):
        await client.send({"type": "ping", "id": f"p{i}"})
    answers = [(await client.until(lambda m, i=i: m.get("reply_to") == f"p{i}"))[-1] for i in range(30)]
    served = [a for a in answers if a["type"] == "pong"]
    limited_ = [a for a in answers if a["type"] == "error"]
    assert len(served) == 20
    assert {a["code"] for a in limited_} == {"rate_limited"}
    assert all(0 < a["retry_after"] <= 1 for a in limited_)
    await other.ping()  # another connection has its own budget
    for i in range(3):  # and a kind of command has its own, on top
        await other.send({"type": "start_workflow", "id": f"s{i}", "workflow": "chat", "params": {"message": "hi"}})
    starts = [(await other.until(lambda m, i=i: m.get("reply_to") == f"s{i}"))[-1] for i in range(3)]
    assert [s.get("code", s["type"]) for s in starts] == ["workflow_started", "workflow_started", "rate_limited"]
    await asyncio.gather(client.close(), other.close())


async def test_a_flood_far_over_the_limit_is_closed_with_1008(limited: Server) -> None:
    flood = await connect(limited.ws())
    watcher = await connect(limited.ws())

    async def send_flood() -> None:
        for i in range(1000):
            await flood.send({"type": "ping", "id": f"f{i}"})
        await flood.until(lambda m: False, timeout=10)

    with pytest.raises(ConnectionClosed) as closed:
        await send_flood()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    await watcher.ping()
    await watcher.close()


def test_graphwire_token_mints_what_the_gateway_accepts(auth_server: Server) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "graphwire", "token", "--sub", "gina", "--scope", "runs:read admin", "--ttl", "60"],
        env={**os.environ, "GRAPHWIRE_AUTH_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "gina"
    assert claims["scope"] == "runs:read admin"
    assert http(auth_server, "/ws/metrics", tok=minted)[0] == 200


async def test_with_a_public_key_only_its_algorithm_passes(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    env = {"GRAPHWIRE_AUTH_JWT_PUBLIC_KEY": pem, "GRAPHWIRE_AUTH_AUDIENCE": "graphwire", "GRAPHWIRE_AUTH_ISSUER": "idp"}
    server = start_server(tmp_path, env=env)
    try:
        claims = {"sub": "alice", "exp": int(time.time() + 600), "aud": "graphwire", "iss": "idp"}
        good = jwt.encode(claims, private, algorithm="RS256")
        client = await as_user(server, good)
        assert client.hello["user"] == "alice"
        await client.close()
        confused = hs256_with(pem.encode(), claims)  # HS256 "signed" with the public key
        wrong_aud = jwt.encode({**claims, "aud": "other"}, private, algorithm="RS256")
        wrong_iss = jwt.encode({**claims, "iss": "other"}, private, algorithm="RS256")
        for bad in (confused, wrong_aud, wrong_iss):
            code, _, frames = await refused(server.ws(), additional_headers={"Authorization": f"Bearer {bad}"})
            assert (code, frames) == (4001, [])
    finally:
        stop_server(server)


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_no_token_or_key_reaches_any_log(tmp_path: Path, log_format: str) -> None:
    env = {"GRAPHWIRE_AUTH_JWT_SECRET": SECRET, "GRAPHWIRE_LOG_FORMAT": log_format}
    server = start_server(tmp_path, "--log-level", "debug", env=env)
    tokens = [token("alice", EVERYTHING) for _ in range(3)] + ["junk-token-value", token(key=OTHER_SECRET)]
    try:
        header = await as_user(server, tokens[0])
        query = await connect(server.ws() + f"?batch=1&token={tokens[1]}")
        sub = await connect(server.ws(), subprotocols=["graphwire.v1", f"bearer.{tokens[2]}"])
        run = await header.start("chat", {"message": "hello there"})
        await header.run_events(run["workflow_id"])
        await query.send({"type": "refresh_token", "id": "r", "token": tokens[1]})
        await query.until(lambda m: m.get("reply_to") == "r")
        for bad in tokens[3:]:
            await refused(server.ws() + f"?token={bad}")
            await refused(server.ws(), additional_headers={"Authorization": f"Bearer {bad}"})
        http(server, "/api/broadcast", {"group": "g", "message": "m"}, tokens[3])
        await asyncio.gather(header.close(), query.close(), sub.close())
    finally:
        stop_server(server)
    log = server.log()
    assert "[accepted]" in log  # uvicorn's line is there, with the token replaced
    for secret in [*tokens, SECRET]:
        assert secret not in log
        # The signature is the part that grants access; no part of it may leak either.
        assert secret.rsplit(".", 1)[-1] not in log


async def test_chat_needs_a_token_that_may_start_chat(auth_server: Server) -> None:
    headers = {"Authorization": f"Bearer {token('alice', 'runs:read')}"}
    code, _, frames = await refused(auth_server.ws("/ws/chat"), additional_headers=headers)
    assert (code, frames) == (4003, [])
    chat = await as_user(auth_server, token("alice", "workflows:start:chat"), path="/ws/chat")
    await chat.send({"type": "message", "id": "m", "content": "hi"})
    assert (await chat.until(lambda m: m["type"] == "workflow_completed"))[-1]["data"]["reply"]
    await chat.close()


async def test_runs_in_flight_are_limited_per_user_across_connections(tmp_path: Path) -> None:
    env = {"GRAPHWIRE_AUTH_JWT_SECRET": SECRET, "GRAPHWIRE_MAX_RUNS_PER_USER": "2"}
    server = start_server(tmp_path, env=env)
    try:
        first, second = await as_user(server, token("alice")), await as_user(server, token("alice"))
        ask = {"message": "?", "timeout": 60}
        await first.start("approval", ask, "a")
        await second.start("approval", ask, "b")
        await first.send({"type": "start_workflow", "id": "c", "workflow": "approval", "params": ask})
        over = (await first.until(lambda m: m.get("reply_to") == "c"))[-1]
        assert over["code"] == "too_many_runs"
        assert "max_runs_per_user" in over["message"]
        bob = await as_user(server, token("bob"))
        await bob.start("approval", ask, "d")  # another user has their own
        await asyncio.gather(first.close(), second.close(), bob.close())
    finally:
        stop_server(server)


def test_the_openapi_document_declares_the_bearer_token_when_auth_is_on(auth_server: Server) -> None:
    document = auth_server.get_json("/openapi.json")
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method in [("/api/broadcast", "post"), ("/api/publish", "post"), ("/ws/metrics", "get")]:
        assert document["paths"][path][method]["security"] == [{"bearer": []}]


def test_the_startup_line_says_who_may_connect(server: Server, auth_server: Server) -> None:
    assert "auth is off: anyone who reaches this port may connect" in server.log()
    assert "auth is on: every connection needs a valid token; browsers from Origins http://good.example" in (
        auth_server.log()
    )
