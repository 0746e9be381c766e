"""``CommandLimits`` without sockets: the order of the windows, and failing open when Redis fails.

The per-user limit shared by gateways through a real ``redis-server`` is tested in
``tests/test_limits_redis.py``; here Redis is a closed port or a peer that never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from graphwire.rate_limits import ABUSE, CommandLimits
from graphwire.settings import Settings


def limits_settings(**overrides: Any) -> Settings:
    roomy: dict[str, Any] = {
        "rate_limit_per_connection": "1000/second",
        "rate_limit_per_user": "3/minute",
        "rate_limit_per_command": {},
    }
    return Settings(**{**roomy, **overrides})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port  # nothing listens on it once the socket is closed


def refused(answer: float | None) -> bool:
    """A refusal: seconds to wait, within the minute windows of these tests."""
    return answer is not None and 0 < answer <= 60


async def checks(limits: CommandLimits, client_id: str, user: str | None, command: str, n: int) -> list[float | None]:
    return [await limits.check(client_id, user, command) for _ in range(n)]


async def test_a_user_is_limited_across_its_connections_and_refusals_are_not_counted() -> None:
    limits = CommandLimits(limits_settings(rate_limit_per_command={"start_workflow": "1/minute"}))
    assert limits.shared is None  # no redis_url: everything in memory
    assert await limits.check("cl_a", "alice", "start_workflow") is None
    assert refused(await limits.check("cl_a", "alice", "start_workflow"))  # over its kind's limit
    # The refused start did not use up alice's window: two more commands fit, on any connection.
    assert await checks(limits, "cl_b", "alice", "ping", 2) == [None, None]
    assert refused(await limits.check("cl_c", "alice", "ping"))
    assert await limits.check("cl_c", "bob", "ping") is None  # another user has their own
    assert await checks(limits, "cl_d", None, "ping", 5) == [None] * 5  # auth off: no per-user limit


async def test_the_abuse_bound_is_counted_first_refused_or_not() -> None:
    limits = CommandLimits(limits_settings(rate_limit_per_connection="2/minute", rate_limit_close_after=2))
    answers = await checks(limits, "cl_a", None, "ping", 5)
    assert answers[:2] == [None, None]
    assert all(refused(a) for a in answers[2:4])
    assert answers[4] == ABUSE


async def test_redis_out_of_reach_falls_back_to_this_gateways_window_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "graphwire.rate_limits")
    port = closed_port()
    limits = CommandLimits(limits_settings(redis_url=f"redis://user:hunter2@127.0.0.1:{port}/0", redis_timeout=1))
    shared = limits.shared
    assert shared is not None
    try:
        answers = await checks(limits, "cl_a", "alice", "ping", 4)
        assert answers[:3] == [None, None, None]  # answered, and still limited: per gateway
        assert refused(answers[3])
        # Redis was asked once; the next commands went straight to the fallback.
        assert (shared.failures, shared.outages, shared.available) == (1, 1, False)
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert f"redis://127.0.0.1:{port}/0" in warning
        assert "hunter2" not in warning
    finally:
        await limits.close()


@contextlib.asynccontextmanager
async def silent_peer() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP server that accepts and never answers: Redis frozen, or a black-holed route."""
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(ConnectionError):
            await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_redis_that_never_answers_holds_one_command_for_the_timeout_at_most() -> None:
    async with silent_peer() as (port, accepted):
        limits = CommandLimits(limits_settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout=0.3))
        shared = limits.shared
        assert shared is not None
        try:
            # No user (auth off): nothing to share, Redis is never asked.
            assert await checks(limits, "cl_x", None, "ping", 3) == [None] * 3
            assert (accepted, shared.failures) == ([], 0)
            started = time.monotonic()
            assert await limits.check("cl_a", "alice", "ping") is None  # decided here after the timeout
            assert 0.25 <= time.monotonic() - started < 1.5
            started = time.monotonic()
            answers = await checks(limits, "cl_a", "alice", "ping", 3)
            assert time.monotonic() - started < 0.25  # no further waits on Redis
            assert answers[:2] == [None, None]
            assert refused(answers[2])
            assert (shared.failures, shared.available) == (1, False)
        finally:
            await limits.close()
