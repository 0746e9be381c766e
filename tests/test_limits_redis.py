"""A user's rate limit shared by the gateways of one Redis (issue 13), against real processes.

Two ``graphwire serve`` with auth on share the session's ``redis-server``; each client
connects to one gateway directly, so which gateway serves it is known. Every frame is
checked against the spec by ``harness.Client``; every receive has a timeout. The limits
are per minute, so no window slides during a test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from cluster import fresh_cluster
from harness import Client, Server, connect, start_cluster, stop_cluster
from redis_proc import RedisServer

SECRET = "a-test-secret-of-at-least-32-bytes!"
REDIS_TIMEOUT = 1.0
PER_USER = 6
LIMITS_ENV = {
    "GRAPHWIRE_AUTH_JWT_SECRET": SECRET,
    "GRAPHWIRE_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
    "GRAPHWIRE_RATE_LIMIT_PER_USER": f"{PER_USER}/minute",
    # Far past the limits, for the outage tests' many refusals: never closed with 1008 here.
    "GRAPHWIRE_RATE_LIMIT_CLOSE_AFTER": "100",
}
# Below the per-user limit: a single connection meets its own limit first.
PER_CONNECTION = 5
DEADLINE = 20.0

FELL_BACK = "failed a rate-limit check"
CAME_BACK = "per-user rate limits are shared by all gateways again"


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Gateways A and B with a per-connection limit below the per-user one."""
    env = {**LIMITS_ENV, "GRAPHWIRE_RATE_LIMIT_PER_CONNECTION": f"{PER_CONNECTION}/minute"}
    with fresh_cluster(redis_server, tmp_path_factory.mktemp("limits"), 2, env) as servers:
        yield servers


@pytest.fixture
def roomy_pair(redis_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    """Gateways A and B whose per-connection limit stays out of the way (the harness's roomy one)."""
    servers = start_cluster(tmp_path, 2, redis_url, env=LIMITS_ENV)
    yield servers
    stop_cluster(servers)
    for server in servers:
        assert "Traceback" not in server.log(), server.log()


@pytest.fixture
def redis_restored(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, running again after the test whatever it did to it."""
    yield redis_server
    if redis_server.running:
        os.kill(redis_server.pid, signal.SIGCONT)  # harmless unless it was frozen
    else:
        redis_server.start()


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 600), "scope": ""}, SECRET, algorithm="HS256")


class Users:
    """Clients with a token for a user, each on a given gateway; closed at the end of the test."""

    def __init__(self) -> None:
        self.open: list[Client] = []

    async def on(self, server: Server, sub: str) -> Client:
        client = await connect(server.ws(), additional_headers={"Authorization": f"Bearer {token(sub)}"})
        assert client.hello["user"] == sub
        self.open.append(client)
        return client


@pytest.fixture
async def users() -> Any:
    made = Users()
    yield made
    for client in made.open:
        await client.close()


async def command(client: Client, id_: str) -> tuple[dict[str, Any], float]:
    """A ping and its answer (``pong`` or ``error``), and how long the answer took."""
    sent = time.monotonic()
    await client.send({"type": "ping", "id": id_})
    answer = (await client.until(lambda m: m.get("reply_to") == id_))[-1]
    return answer, time.monotonic() - sent


async def answers(client: Client, tag: str, n: int) -> list[str]:
    """The kinds of answer to ``n`` pings: ``pong`` or the error code."""
    out = []
    for i in range(n):
        answer, _ = await command(client, f"{tag}{i}")
        out.append(answer.get("code", answer["type"]))
    return out


def assert_rate_limited(answer: dict[str, Any]) -> None:
    assert (answer["type"], answer["code"]) == ("error", "rate_limited"), answer
    assert 0 < answer["retry_after"] <= 60, answer


def user_windows(redis_server: RedisServer) -> dict[str, int]:
    """Every rate-limit counter in Redis: its key and how many commands it holds."""
    with redis_server.client() as admin:
        return {key.decode(): int(admin.llen(key)) for key in admin.keys("graphwire:limits:*")}


async def wait_for_log(server: Server, text: str, count: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while server.log().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times:\n{server.log()}"
        await asyncio.sleep(0.05)


async def test_one_user_on_two_gateways_gets_one_budget(
    pair: list[Server], users: Users, redis_server: RedisServer
) -> None:
    a, b = pair
    alice_a, alice_b = await users.on(a, "alice"), await users.on(b, "alice")
    bob_a, bob_b = await users.on(a, "bob"), await users.on(b, "bob")
    # Alternating gateways: 3 each, under each connection's own limit of 5, 6 in all.
    for i in range(PER_USER):
        answer, _ = await command((alice_a, alice_b)[i % 2], f"p{i}")
        assert answer["type"] == "pong", answer
    over_a, _ = await command(alice_a, "over-a")
    over_b, _ = await command(alice_b, "over-b")
    assert_rate_limited(over_a)
    assert_rate_limited(over_b)
    # Another user on the same gateways has a budget of their own.
    assert await answers(bob_a, "b", 3) + await answers(bob_b, "b", 3) == ["pong"] * PER_USER
    # Counted in Redis under graphwire:limits, per user; the refused commands are not counted.
    assert user_windows(redis_server) == {
        f"graphwire:limits:LIMITER/u/alice/{PER_USER}/1/minute": PER_USER,
        f"graphwire:limits:LIMITER/u/bob/{PER_USER}/1/minute": PER_USER,
    }


async def test_the_per_connection_limit_stays_on_the_connections_gateway(
    pair: list[Server], users: Users, redis_server: RedisServer
) -> None:
    a, b = pair
    carol_a = await users.on(a, "carol")
    # One connection meets its own limit (5) before carol's (6); the 6th is not counted for carol.
    assert await answers(carol_a, "a", PER_CONNECTION + 1) == ["pong"] * PER_CONNECTION + ["rate_limited"]
    key = f"graphwire:limits:LIMITER/u/carol/{PER_USER}/1/minute"
    assert user_windows(redis_server)[key] == PER_CONNECTION
    # The per-connection windows are in the gateway's memory, never in Redis.
    assert all("/u/" in k for k in user_windows(redis_server))
    # A second connection of carol's, on B, has a connection budget of its own, but only
    # what is left of carol's: one command.
    carol_b = await users.on(b, "carol")
    assert await answers(carol_b, "b", 2) == ["pong", "rate_limited"]
    assert user_windows(redis_server)[key] == PER_USER


async def test_redis_stopped_each_gateway_limits_the_user_alone_then_shares_again(
    roomy_pair: list[Server], users: Users, redis_restored: RedisServer
) -> None:
    a, b = roomy_pair
    dave_a, dave_b = await users.on(a, "dave"), await users.on(b, "dave")
    assert await answers(dave_a, "before", 2) == ["pong", "pong"]
    await asyncio.to_thread(redis_restored.kill)  # a crash: no persistence, its counts are gone
    # Answered at once, and still limited: per gateway. A counted dave's 2 before the
    # outage, so 4 more fit there; B counted none, so 6.
    during_a = [await command(dave_a, f"a{i}") for i in range(PER_USER)]
    during_b = [await command(dave_b, f"b{i}") for i in range(PER_USER + 1)]
    kinds = [[answer.get("code", answer["type"]) for answer, _ in during] for during in (during_a, during_b)]
    assert kinds == [["pong"] * 4 + ["rate_limited"] * 2, ["pong"] * PER_USER + ["rate_limited"]]
    for answer, _ in during_a[4:] + during_b[PER_USER:]:
        assert_rate_limited(answer)
    slowest = max(took for _, took in during_a + during_b)
    assert slowest < REDIS_TIMEOUT, f"a command waited {slowest:.2f} s on a Redis that is gone"
    for server in roomy_pair:
        assert server.log().count(FELL_BACK) == 1  # one warning per gateway, not one per command
    await asyncio.to_thread(redis_restored.start)
    for server in roomy_pair:
        await wait_for_log(server, CAME_BACK, 1)
    # Shared again: dave's windows on A and B are full, but Redis (restarted empty) decides,
    # for both gateways together.
    for i in range(PER_USER):
        answer, _ = await command((dave_a, dave_b)[i % 2], f"after{i}")
        assert answer["type"] == "pong", answer
    assert_rate_limited((await command(dave_b, "after-over"))[0])
    assert user_windows(redis_restored) == {f"graphwire:limits:LIMITER/u/dave/{PER_USER}/1/minute": PER_USER}
    for server in roomy_pair:
        assert (server.log().count(FELL_BACK), server.log().count(CAME_BACK)) == (1, 1)


async def test_redis_frozen_holds_one_command_for_the_timeout_and_no_other(
    roomy_pair: list[Server], users: Users, redis_restored: RedisServer
) -> None:
    a, b = roomy_pair
    erin_a, erin_b = await users.on(a, "erin"), await users.on(b, "erin")
    assert await answers(erin_a, "warm", 1) == ["pong"]  # A's pooled connection to Redis is open
    os.kill(redis_restored.pid, signal.SIGSTOP)  # it accepts connections and never answers
    try:
        (first, waited) = await command(erin_a, "first")
        assert first["type"] == "pong", first
        assert waited < REDIS_TIMEOUT + 1.0, f"the first command waited {waited:.2f} s"
        started = time.monotonic()
        rest = await answers(erin_a, "rest", PER_USER)
        assert time.monotonic() - started < REDIS_TIMEOUT, "commands after the first waited on Redis"
        assert rest == ["pong"] * (PER_USER - 2) + ["rate_limited"] * 2  # A's window: 2 counted before
        assert a.log().count(FELL_BACK) == 1
        # B had not asked Redis yet: its first command for erin meets the frozen Redis too.
        (on_b, waited) = await command(erin_b, "b")
        assert on_b["type"] == "pong", on_b
        assert waited < REDIS_TIMEOUT + 1.0
    finally:
        os.kill(redis_restored.pid, signal.SIGCONT)
    for server in roomy_pair:
        await wait_for_log(server, CAME_BACK, 1)
    # Shared again: a new user, one budget across A and B.
    frank_a, frank_b = await users.on(a, "frank"), await users.on(b, "frank")
    for i in range(PER_USER):
        answer, _ = await command((frank_a, frank_b)[i % 2], f"f{i}")
        assert answer["type"] == "pong", answer
    assert_rate_limited((await command(frank_a, "f-over"))[0])
