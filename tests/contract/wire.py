"""The wire side of the contract tests: a spec-checking socket, counters, and gateway probes.

Every frame the server sends to a ``WireClient`` is checked against the spec itself
(``components.schemas.ServerMessage`` through ``jsonschema``, never the generated
models), against the list of messages its channel may carry, and for leaked Python
tracebacks. ``STATS`` counts what was sent and checked, for ``make fuzz``'s summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import websockets
from websockets.asyncio.client import ClientConnection

from contract.catalog import BUG_CODES, SPEC, channel_server_types, client_messages
from contract.oracle import RunView
from graphwire_codegen import schema_validator
from harness import Server

__all__ = [
    "STATS",
    "TRACEBACK_MARKERS",
    "GatewayProbe",
    "Stats",
    "WireClient",
    "check_server_frame",
    "connected",
    "rss_bytes",
]

# Two validators of the same spec schema: jsonschema-rs on every frame (microseconds, and it
# checks `format: date-time` too), the reference `jsonschema` one to explain a failure.
SERVER_MESSAGE = schema_validator(SPEC, "ServerMessage")
FAST_SERVER_MESSAGE = jsonschema_rs.Draft7Validator(
    {"$ref": "#/components/schemas/ServerMessage", "components": SPEC["components"]}, validate_formats=True
)
CHANNEL_TYPES = {m.channel: channel_server_types(SPEC, m.channel) for m in client_messages(SPEC)}
ADDRESSES = {m.channel: m.address for m in client_messages(SPEC)}
# Commands whose answer is a `workflow_started` (start_workflow, the chat `message`).
START_TYPES = frozenset(m.type for m in client_messages(SPEC) if "workflow_started" in m.replies)
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'File "/')
_ids = itertools.count(1)


@dataclass
class Stats:
    """What the contract tests put on the wire and how much of the answer they checked."""

    frames_sent: int = 0  # client frames written to a socket (text, binary, raw)
    frames_checked: int = 0  # server frames validated against the spec (a batch counts once)
    messages_checked: int = 0  # server messages validated, batches unpacked
    http_requests: int = 0  # HTTP requests sent (probes and schemathesis)
    cases: int = 0  # fuzz cases run end to end (one frame, its answer checked)
    state_steps: int = 0  # rules the state machine ran
    rss_growth_peak: int = 0  # bytes the gateway's RSS grew at most over its baseline

    def summary(self) -> str:
        return (
            f"contract: {self.frames_sent} frames sent, {self.frames_checked} frames checked against the spec "
            f"({self.messages_checked} messages, batches unpacked); {self.cases} fuzz cases, "
            f"{self.state_steps} state machine steps, {self.http_requests} HTTP requests; "
            f"gateway RSS growth at most {self.rss_growth_peak / 2**20:.1f} MiB"
        )


STATS = Stats()


def check_server_frame(raw: str | bytes, channel: str) -> list[dict[str, Any]]:
    """One server frame → its messages (a ``batch`` unpacked), or an ``AssertionError`` saying why not."""
    assert isinstance(raw, str), f"the server sent a binary frame: {raw[:80]!r}"
    for marker in TRACEBACK_MARKERS:
        assert marker not in raw, f"a traceback leaked to the client: {raw[:500]}"
    frame = json.loads(raw)
    if not FAST_SERVER_MESSAGE.is_valid(frame):
        reference = [e.message for e in SERVER_MESSAGE.iter_errors(frame)]
        fast = [e.message for e in FAST_SERVER_MESSAGE.iter_errors(frame)]
        raise AssertionError(f"frame breaks the spec's ServerMessage: {raw[:300]}: {(reference or fast)[0][:300]}")
    messages: list[dict[str, Any]] = frame["messages"] if frame["type"] == "batch" else [frame]
    allowed = CHANNEL_TYPES[channel]
    assert frame["type"] in allowed, f"{frame['type']!r} is not a message of channel {channel!r}"
    for message in messages:
        assert message["type"] in allowed, f"{message['type']!r} is not a message of channel {channel!r}"
        if message["type"] == "error":
            assert message["code"] not in BUG_CODES, f"the server reports a bug: {message}"
    STATS.frames_checked += 1
    STATS.messages_checked += len(messages)
    return messages


@dataclass
class WireClient:
    """One socket to the gateway; every frame it receives passes ``check_server_frame``.

    Every message also goes through ``view`` (a ``RunView``), which checks the delivery
    promises: only watched runs, gap-free ``seq``, one terminal event, one answer per request.
    """

    ws: ClientConnection
    channel: str
    view: RunView = field(default_factory=RunView)
    hello: dict[str, Any] = field(default_factory=dict)
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    received: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def connect(cls, server: Server, channel: str = "workflow", query: str = "") -> WireClient:
        url = server.ws(ADDRESSES[channel]) + query
        ws = await websockets.connect(url, max_size=None, proxy=None, open_timeout=10, ping_interval=None)
        client = cls(ws, channel)
        try:
            client.hello = await client.recv()
            assert client.hello["type"] == "connected", client.hello
        except BaseException:
            await ws.close()
            raise
        return client

    async def send_text(self, text: str) -> None:
        if '"type"' in text and any(kind in text for kind in START_TYPES):
            try:
                frame = json.loads(text)
            except (ValueError, RecursionError):
                frame = None
            if isinstance(frame, dict) and frame.get("type") in START_TYPES:
                self.view.starts_expected += 1
        STATS.frames_sent += 1
        await self.ws.send(text)

    async def send_raw_text(self, data: bytes) -> None:
        """A text frame with these exact bytes as its payload, UTF-8 or not."""
        STATS.frames_sent += 1
        await self.ws.send(data, text=True)

    async def send_binary(self, data: bytes) -> None:
        STATS.frames_sent += 1
        await self.ws.send(data, text=False)

    async def send_json(self, message: Any) -> None:
        await self.send_text(json.dumps(message))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        while not self.pending:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            self.pending.extend(check_server_frame(raw, self.channel))
        message = self.pending.popleft()
        self.received.append(message)
        self.view.observe(message)
        return message

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            message = await self.recv(timeout)
            seen.append(message)
            if predicate(message):
                return seen

    async def seen_or_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """The first message received so far that matches, or the next one that does."""
        found = next((m for m in self.received if predicate(m)), None)
        return found if found is not None else (await self.until(predicate, timeout))[-1]

    async def barrier(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Ping with a fresh id; return every message that came before its ``pong``.

        The gateway answers in order, so everything caused by earlier frames is in the list.
        """
        ping_id = f"barrier-{next(_ids)}"
        await self.send_json({"type": "ping", "id": ping_id})
        seen = await self.until(lambda m: m["type"] == "pong" and m.get("reply_to") == ping_id, timeout)
        self.view.starts_expected = 0  # every command before the ping has been answered
        return seen[:-1]

    async def request(self, message: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Send a command with an ``id``; return the message that answers it (by ``reply_to``)."""
        command_id = message.setdefault("id", f"cmd-{next(_ids)}")
        await self.send_json(message)
        return (await self.until(lambda m: m.get("reply_to") == command_id, timeout))[-1]

    async def close(self) -> None:
        await self.ws.close()


@contextlib.asynccontextmanager
async def connected(server: Server, channel: str = "workflow", query: str = "") -> AsyncIterator[WireClient]:
    """A ``WireClient`` that is closed however the block ends."""
    client = await WireClient.connect(server, channel, query)
    try:
        yield client
    finally:
        await client.close()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from ``/proc/<pid>/status``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class GatewayProbe:
    """Is the gateway still there? Process alive, ``/ws/health`` ok, RSS within a bound.

    Keeps one keep-alive HTTP connection, so a probe after every case stays cheap.
    """

    def __init__(self, server: Server, rss_growth_limit: int) -> None:
        self.server = server
        self.rss_growth_limit = rss_growth_limit
        self.rss_baseline = rss_bytes(server.process.pid)
        self.rss_peak = self.rss_baseline
        self._http: http.client.HTTPConnection | None = None

    def health(self) -> dict[str, Any]:
        for attempt in range(2):
            if self._http is None:
                self._http = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
            try:
                STATS.http_requests += 1
                self._http.request("GET", "/ws/health")
                response = self._http.getresponse()
                body = response.read()
                assert response.status == 200, (response.status, body[:200])
                result: dict[str, Any] = json.loads(body)
                return result
            except (OSError, http.client.HTTPException):
                self._http.close()
                self._http = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def rss_growth(self) -> int:
        rss = rss_bytes(self.server.process.pid)
        self.rss_peak = max(self.rss_peak, rss)
        STATS.rss_growth_peak = max(STATS.rss_growth_peak, rss - self.rss_baseline)
        return rss - self.rss_baseline

    def check(self) -> None:
        """The gateway survived: alive, healthy, and its memory stayed bounded."""
        code = self.server.process.poll()
        assert code is None, f"the gateway exited with {code}:\n{self.server.log()[-3000:]}"
        assert self.health()["status"] == "ok"
        growth = self.rss_growth()
        assert growth < self.rss_growth_limit, f"gateway RSS grew by {growth / 2**20:.1f} MiB"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
