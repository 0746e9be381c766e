"""The Python SDK against a real ``graphwire serve`` with auth on (issue 11): tokens that expire
mid-run (refreshed in band, or renewed by a reconnect after 4002) lose no event; a refused
token ends the client at once; another user's run is forbidden; rate-limited commands go again.

Handshakes are counted by a ``DropProxy`` (``test_sdk_resume``) between the SDK and the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from graphwire_client import (
    ConnectionState,
    ConnectionUnauthorized,
    Forbidden,
    GraphwireClient,
    ReconnectPolicy,
    StateChange,
    TokenExpired,
    TransportClosed,
    Unauthorized,
)
from harness import ROOT, Server, start_server, stop_server
from test_sdk_resume import DropProxy, assert_gap_free, collect, wire

SECRET = "sdk-auth-test-secret-of-32-bytes!!"
SCOPES = "workflows:start"
FAST = ReconnectPolicy(max_attempts=6, base_delay=0.02, max_delay=0.1)


def mint(sub: str = "alice", ttl: float = 600.0, scope: str = SCOPES, key: str = SECRET) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), "scope": scope}, key, algorithm="HS256")


class Provider:
    """``get_token`` minting tokens of ``ttl`` seconds; raises while ``refuse_in_band`` and the client is connected."""

    def __init__(self, ttl: float, sub: str = "alice") -> None:
        self.ttl = ttl
        self.sub = sub
        self.calls = 0
        self.client: GraphwireClient | None = None
        self.refuse_in_band = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.refuse_in_band and self.client is not None and self.client.state is ConnectionState.connected:
            raise RuntimeError("the identity provider is down")
        return mint(self.sub, self.ttl)


def server_with(tmp: Path, **env: str) -> Server:
    return start_server(tmp, env={"GRAPHWIRE_AUTH_JWT_SECRET": SECRET, **env})


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = server_with(tmp_path_factory.mktemp("sdk-auth"))
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()
    assert "eyJ" not in running.log(), "no token is logged (a JWT starts with eyJ)"


@pytest.fixture
async def proxy(auth_server: Server) -> AsyncIterator[DropProxy]:
    running = DropProxy(auth_server.port)
    await running.start()
    yield running
    await running.close()


def connections(changes: list[StateChange]) -> list[StateChange]:
    return [c for c in changes if c.new_state is ConnectionState.connected]


async def test_a_token_expiring_mid_run_is_refreshed_in_band_and_nothing_is_lost(
    auth_server: Server, proxy: DropProxy
) -> None:
    provider = Provider(ttl=3)  # exp is whole seconds: each token has 2 to 3 s left when minted
    client = GraphwireClient(proxy.url, get_token=provider, reconnect=FAST)
    changes: list[StateChange] = []
    client.on("state", changes.append)
    async with GraphwireClient(auth_server.ws(), token=mint()) as watcher, client:
        assert client.user == "alice"
        started = time.monotonic()
        run = await client.workflows["tick"].start({"count": 30, "delay_ms": 200})
        watched = await watcher.attach(run.workflow_id)
        events = await collect(run)
        assert time.monotonic() - started > 4, "the run outlived its first token"
        assert_gap_free(events)
        assert wire(events) == wire(await collect(watched))
        assert await run.result() == {"ticks": 30}
    refreshes = [json.loads(f) for f in proxy.client_frames if '"refresh_token"' in f]
    assert len(refreshes) >= 2, "renewed in band, more than once"
    assert len({r["token"] for r in refreshes}) == len(refreshes), "a fresh token each time"
    assert provider.calls == 1 + len(refreshes)
    assert proxy.accepted == 1, "one connection: never closed with 4002"
    assert len(connections(changes)) == 1


async def test_a_token_that_expires_anyway_is_renewed_by_reconnecting_and_nothing_is_lost(
    auth_server: Server, proxy: DropProxy
) -> None:
    provider = Provider(ttl=2)
    provider.refuse_in_band = True  # every in-band refresh fails: the gateway closes with 4002
    client = GraphwireClient(proxy.url, get_token=provider, reconnect=FAST)
    provider.client = client
    changes: list[StateChange] = []
    client.on("state", changes.append)
    async with GraphwireClient(auth_server.ws(), token=mint()) as watcher, client:
        run = await client.workflows["tick"].start({"count": 30, "delay_ms": 200})
        watched = await watcher.attach(run.workflow_id)
        events = await collect(run)
        assert_gap_free(events)
        assert wire(events) == wire(await collect(watched))
        assert await run.result() == {"ticks": 30}
    expired = [c for c in changes if isinstance(c.error, TransportClosed) and c.error.code == 4002]
    assert len(expired) >= 2, [(c.new_state.value, c.error) for c in changes]
    assert len(connections(changes)) == proxy.accepted == len(expired) + 1
    handshakes = proxy.accepted
    assert provider.calls > handshakes, "asked at every connect, and in band (where it failed)"
    assert not [f for f in proxy.client_frames if '"refresh_token"' in f], "no refresh went out"


async def test_a_static_token_that_expires_ends_the_client_with_token_expired(
    auth_server: Server, proxy: DropProxy
) -> None:
    async with GraphwireClient(proxy.url, token=mint(ttl=2), reconnect=FAST) as client:
        run = await client.workflows["tick"].start({"count": 100, "delay_ms": 100})
        with pytest.raises(TokenExpired) as expired:
            await asyncio.wait_for(run.result(), 10)
        assert expired.value.close_code == 4002
        assert isinstance(expired.value, Unauthorized)
        assert run.last_seq > 1, "the run was followed until the token ran out"
        await asyncio.sleep(0.3)
        assert client.state is ConnectionState.disconnected
    assert proxy.accepted == 1, "not retried"


FORGED = mint(key="a-different-secret-of-32-bytes!!!!")


@pytest.mark.parametrize(
    ("how", "bad"),
    [("token", "not-a-jwt"), ("token", FORGED), ("token", None), ("get_token", "not-a-jwt"), ("get_token", FORGED)],
    ids=["junk", "forged", "missing", "junk-from-get_token", "forged-from-get_token"],
)
async def test_a_refused_token_raises_unauthorized_and_is_never_retried(
    proxy: DropProxy, how: str, bad: str | None
) -> None:
    asked: list[str] = []

    def provider() -> str:
        asked.append("asked")
        assert bad is not None
        return bad

    patient = ReconnectPolicy(max_attempts=50, base_delay=0.01, max_delay=0.02)
    kwargs: dict[str, Any] = {"token": bad} if how == "token" else {"get_token": provider}
    client = GraphwireClient(proxy.url, reconnect=patient, **kwargs)
    with pytest.raises(Unauthorized) as refused:
        await client.connect()
    assert isinstance(refused.value, ConnectionUnauthorized)
    assert refused.value.close_code == 4001
    await asyncio.sleep(0.3)  # a retry would have come by now
    assert proxy.accepted == 1
    assert len(asked) == (1 if how == "get_token" else 0)
    with pytest.raises(Unauthorized):
        await client.ping()


async def test_refresh_token_answers_ack_unauthorized_or_forbidden_and_the_old_token_stays(
    auth_server: Server, server: Server
) -> None:
    async with GraphwireClient(auth_server.ws(), token=mint(ttl=600)) as client:
        with pytest.raises(Unauthorized) as bad:
            await client.commands.refresh_token("not-a-jwt")
        assert not isinstance(bad.value, ConnectionUnauthorized), "an error frame, not a close"
        with pytest.raises(Forbidden):
            await client.commands.refresh_token(mint("mallory"))
        assert await client.ping() >= 0, "the old token stays in force"
        assert (await client.commands.refresh_token(mint(ttl=900))).command.value == "refresh_token"
        assert client.state is ConnectionState.connected
    async with GraphwireClient(server.ws(), get_token=lambda: "anything") as open_gateway:
        assert open_gateway.user is None
        assert open_gateway.server_info is not None
        assert open_gateway.server_info.expires_at is None, "auth off: nothing expires, nothing is refreshed"
        assert (await open_gateway.commands.refresh_token("anything")).command.value == "refresh_token"


async def test_another_users_run_is_forbidden_and_the_connection_stays(auth_server: Server) -> None:
    async with (
        GraphwireClient(auth_server.ws(), token=mint("alice")) as alice,
        GraphwireClient(auth_server.ws(), token=mint("bob")) as bob,
    ):
        run = await alice.start_workflow("approval", {"message": "Alice's?", "timeout": 20})
        request = await anext(e async for e in run if e.type == "input_request")
        for _ in range(2):  # the second attach asks the server again
            with pytest.raises(Forbidden) as refused:
                await bob.attach(run.workflow_id)
            assert refused.value.code.value == "forbidden"
        with pytest.raises(Forbidden):
            await bob.commands.node_input(
                run.workflow_id, request.node_id, {"value": "yes"}, request_id=request.request_id
            )
        with pytest.raises(Forbidden):
            await bob.commands.cancel_workflow(run.workflow_id)
        assert await bob.ping() >= 0, "the connection stays"
        assert bob.state is ConnectionState.connected
        await run.respond(request.request_id, "yes")
        assert (await run.result()).answer == "yes", "the owner may"


async def test_rate_limited_starts_go_again_and_each_starts_one_run(tmp_path: Path) -> None:
    server = server_with(tmp_path, GRAPHWIRE_RATE_LIMIT_PER_COMMAND='{"start_workflow": "2/second"}')
    proxy = DropProxy(server.port)
    await proxy.start()
    try:
        async with GraphwireClient(proxy.url, token=mint()) as client:
            runs = await asyncio.gather(
                *(client.workflows["tick"].start({"count": 2, "delay_ms": 1}) for _ in range(6))
            )
            assert len({run.workflow_id for run in runs}) == 6
            for run in runs:
                assert await asyncio.wait_for(run.result(), 10) == {"ticks": 2}
                assert_gap_free(run.events)
        starts = [json.loads(f) for f in proxy.client_frames if '"start_workflow"' in f]
        assert len(starts) > 6, "some were refused and went again"
        by_id: dict[str, list[dict[str, Any]]] = {}
        for start in starts:
            by_id.setdefault(start["id"], []).append(start)
        assert len(by_id) == 6
        assert all(copy == copies[0] for copies in by_id.values() for copy in copies), "identical copies"
        assert proxy.accepted == 1
    finally:
        await proxy.close()
        stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def cli(*args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRAPHWIRE_TOKEN"}
    if token is not None:
        env["GRAPHWIRE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "graphwire_client", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def test_the_cli_takes_its_token_from_graphwire_token_or_token(auth_server: Server) -> None:
    run = ["--url", auth_server.ws(), "--json", "run", "tick", "--params", '{"count": 3, "delay_ms": 1}']
    done = cli(*run, token=mint())
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["data"] == {"ticks": 3}
    refused = cli(*run, "--token", "not-a-jwt", token=mint())  # --token wins over $GRAPHWIRE_TOKEN
    assert refused.returncode == 4, refused.stderr
    assert "4001" in refused.stderr
    assert "not-a-jwt" not in refused.stderr
    missing = cli(*run, token=None)
    assert missing.returncode == 4
    assert "4001" in missing.stderr
