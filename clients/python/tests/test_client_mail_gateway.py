"""The offline mailbox against a real ``graphwire serve``: auth off (the client id's mailbox) and on (the user's).

The client joins ``ops`` and goes away (its transport refuses to reconnect while
``offline``); three ``POST /api/broadcast`` alerts and a ``POST /api/send`` wait for it;
when it comes back, asking for its client id (``?client_id=``), it gets the four as
typed ``mail`` in ``mail_seq`` order and acknowledges them; the next connection gets none.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from graphwire_client import GraphwireClient, Mailbox, ReconnectPolicy, Socket, WebSocketTransport
from graphwire_client.messages import DirectMessage, Mail, SystemAlert

ROOT = Path(__file__).resolve().parents[3]
SECRET = "graphwire-python-sdk-mail-test-secret-0123456789"
PATIENT = ReconnectPolicy(max_attempts=10_000, base_delay=0.02, max_delay=0.1)
QUIET = 0.5
"""Seconds a connection is watched to show that no mail comes."""


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workflow"

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> Any:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


def start_gateway(tmp: Path, env: Mapping[str, str] = {}) -> Gateway:
    """``graphwire serve`` on a free port, as the repository's test harness starts it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    log = tmp / f"graphwire-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "server" / "tests"), **env}
    command = [sys.executable, "-m", "graphwire", "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--workflows", "sample_workflows:register"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    gateway = Gateway(process, port, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if gateway.get("/ws/health")["status"] == "ok":
                return gateway
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"graphwire serve did not become healthy:\n{log.read_text(errors='replace')}")


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    served = start_gateway(tmp_path_factory.mktemp("mail"))
    yield served
    stop_gateway(served)


@pytest.fixture(scope="module")
def auth_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    served = start_gateway(tmp_path_factory.mktemp("mail-auth"), {"GRAPHWIRE_AUTH_JWT_SECRET": SECRET})
    yield served
    stop_gateway(served)


def mint(sub: str, scope: str = "") -> str:
    """An HS256 JWT for ``sub`` signed with ``SECRET`` (RFC 7519), valid for an hour."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": sub, "exp": int(time.time()) + 3600, **({"scope": scope} if scope else {})}
    signing = f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{part(json.dumps(claims).encode())}"
    signature = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{part(signature)}"


class Switch:
    """The real transport, refusing to connect while ``offline``; ``drop()`` closes the open socket."""

    def __init__(self) -> None:
        self.real = WebSocketTransport()
        self.offline = False
        self.urls: list[str] = []
        self.socket: Socket | None = None

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket:
        self.urls.append(url)
        if self.offline:
            raise OSError("offline (the test)")
        self.socket = await self.real.connect(url, headers=headers, open_timeout=open_timeout)
        return self.socket

    async def drop(self) -> None:
        assert self.socket is not None
        await self.socket.close()


async def until(condition: Any, what: str, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


async def gone(gateway: Gateway, client_id: str, admin: str | None = None) -> None:
    """Wait until the gateway no longer counts ``client_id`` as connected (it is away: mail is kept)."""

    def away() -> bool:
        return client_id not in json.dumps(gateway.get("/ws/metrics", admin))

    await until(away, f"{client_id} left the gateway")


async def take(mailbox: Mailbox, n: int) -> list[Mail]:
    return [await asyncio.wait_for(anext(mailbox), 10) for _ in range(n)]


async def nothing_more(mailbox: Mailbox) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(mailbox), QUIET)


async def reconnect(client: GraphwireClient, switch: Switch) -> None:
    """Drop the connection and let the client come back at once."""
    attempts = len(switch.urls)
    await switch.drop()
    await until(lambda: len(switch.urls) > attempts and client.state.value == "connected", "the client reconnected")


async def leave(client: GraphwireClient, switch: Switch) -> None:
    """Drop the connection and keep the client away until ``switch.offline`` is cleared."""
    switch.offline = True
    await switch.drop()
    await until(lambda: client.state.value != "connected", "the client noticed the drop")


def assert_the_four(mails: list[Mail], sender: str | None) -> None:
    assert [m.mail_seq for m in mails] == sorted(m.mail_seq for m in mails)
    assert [m.mail_seq - mails[0].mail_seq for m in mails] == [0, 1, 2, 3], "one mail_seq per message"
    alerts = [m.message for m in mails[:3]]
    assert all(isinstance(a, SystemAlert) for a in alerts)
    assert [a.message for a in alerts if isinstance(a, SystemAlert)] == ["one", "two", "three"]
    assert {a.group for a in alerts if isinstance(a, SystemAlert)} == {"ops"}
    last = mails[3].message
    assert isinstance(last, DirectMessage)
    assert last.data == {"text": "hi"}
    assert last.sender == sender


async def test_mail_kept_while_away_comes_once_when_the_client_id_comes_back(gateway: Gateway) -> None:
    switch = Switch()
    async with GraphwireClient(gateway.ws, reconnect=PATIENT, transport=switch) as client:
        first_id = client.client_id
        assert first_id is not None
        await client.join_group("ops")
        mailbox = client.mail()
        await leave(client, switch)
        await gone(gateway, first_id)
        for text in ("one", "two", "three"):
            gateway.post("/api/broadcast", {"group": "ops", "message": text})
        sent = gateway.post("/api/send", {"user": first_id, "message": {"text": "hi"}})
        switch.offline = False

        mails = await take(mailbox, 4)
        assert client.client_id == first_id, "the client id was handed over"
        assert client.server_info is not None
        assert client.server_info.resumed is True
        assert switch.urls[-1].endswith(f"client_id={first_id}")
        assert_the_four(mails, sender=None)
        assert mails[3].mail_seq == sent["mail_seq"]
        await nothing_more(mailbox)  # the ack went meanwhile

        await reconnect(client, switch)
        await nothing_more(mailbox)  # acknowledged: not delivered again

        # A direct message to a connected client comes at once, as mail, with the next mail_seq.
        live = gateway.post("/api/send", {"user": first_id, "message": {"text": "now"}})
        (now,) = await take(mailbox, 1)
        assert now.mail_seq == live["mail_seq"] == sent["mail_seq"] + 1
        assert isinstance(now.message, DirectMessage)


async def test_a_restarted_program_reclaims_its_mailbox_with_the_client_id_option(gateway: Gateway) -> None:
    async with GraphwireClient(gateway.ws) as before:
        client_id = before.client_id
        assert client_id is not None
        await before.join_group("ops")
    await gone(gateway, client_id)
    gateway.post("/api/send", {"user": client_id, "message": {"text": "while you were out"}})
    async with GraphwireClient(gateway.ws, client_id=client_id) as after:
        assert after.client_id == client_id
        mailbox = after.mail()
        (mail,) = await take(mailbox, 1)
        assert isinstance(mail.message, DirectMessage)
        assert mail.message.data == {"text": "while you were out"}
    await gone(gateway, client_id)
    async with GraphwireClient(gateway.ws, client_id=client_id) as again:
        await nothing_more(again.mail())


async def test_with_auth_the_mailbox_is_the_users(auth_gateway: Gateway) -> None:
    admin = mint("ops-admin", "admin")
    switch = Switch()
    client = GraphwireClient(auth_gateway.ws, mint("alice", "groups:join:ops"), reconnect=PATIENT, transport=switch)
    async with client:
        assert client.user == "alice"
        first_id = client.client_id
        assert first_id is not None
        await client.join_group("ops")
        mailbox = client.mail()
        await leave(client, switch)
        await gone(auth_gateway, first_id, admin)
        for text in ("one", "two", "three"):
            auth_gateway.post("/api/broadcast", {"group": "ops", "message": text}, admin)
        auth_gateway.post("/api/send", {"user": "alice", "message": {"text": "hi"}}, admin)
        switch.offline = False
        assert_the_four(await take(mailbox, 4), sender="ops-admin")
        await nothing_more(mailbox)
        await reconnect(client, switch)
        await nothing_more(mailbox)
    # Another program of the same user, with another client id: the mail was acknowledged for the user.
    async with GraphwireClient(auth_gateway.ws, mint("alice", "groups:join:ops")) as other:
        await nothing_more(other.mail())
