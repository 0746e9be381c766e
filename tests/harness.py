"""Test harness: a real ``graphwire serve`` on a free port, and a spec-checking client.

Frames are validated with ``jsonschema`` against ``spec/asyncapi.yaml`` itself, never
against the generated models, so a generator bug cannot hide a protocol bug.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection

from graphwire_codegen import FrameChecker, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec(ROOT / "spec" / "asyncapi.yaml")
SERVER_MESSAGE = FrameChecker(SPEC, "ServerMessage")
TERMINAL = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running ``graphwire serve`` process."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, path: str = "/ws/workflow") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=5) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.http + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# Suites send commands far faster than a person or an SDK does (bursts of thousands, fuzzers):
# their gateways get room, and the tests of rate limits set the limits they test.
ROOMY_RATE_LIMITS = {
    "GRAPHWIRE_RATE_LIMIT_PER_CONNECTION": "1000000/second",
    "GRAPHWIRE_RATE_LIMIT_PER_USER": "1000000/second",
    "GRAPHWIRE_RATE_LIMIT_PER_COMMAND": "{}",
}


def start_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    return _wait_healthy(_spawn_server(tmp, *extra, env=env))


def _spawn_server(tmp: Path, *extra: str, env: dict[str, str] | None = None, port: int | None = None) -> Server:
    port = port or free_port()
    log_path = tmp / f"graphwire-{port}.log"
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "server" / "tests"), **ROOMY_RATE_LIMITS, **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "graphwire",
                "serve",
                "--port",
                str(port),
                "--workflows",
                "sample_workflows:register",
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    return Server(process, port, log_path)


def _wait_healthy(server: Server) -> Server:
    process = server.process
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"graphwire serve exited early:\n{server.log()}")
        try:
            if server.get_json("/ws/health")["status"] == "ok":
                return server
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"graphwire serve did not become healthy:\n{server.log()}")


def start_cluster(tmp: Path, n: int, redis_url: str, *extra: str, env: dict[str, str] | None = None) -> list[Server]:
    """``n`` gateways sharing the Redis at ``redis_url`` (``GRAPHWIRE_REDIS_URL``), each on its own port.

    They start side by side; if one fails, all are stopped and the error names its log.
    """
    environment = {"GRAPHWIRE_REDIS_URL": redis_url, **(env or {})}
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    servers = [_spawn_server(tmp, *extra, env=environment, port=port) for port in sorted(ports)]
    try:
        for server in servers:
            _wait_healthy(server)
    except BaseException:
        stop_cluster(servers)
        raise
    return servers


def start_workers(tmp: Path, n: int, redis_url: str, *extra: str, env: dict[str, str] | None = None) -> Server:
    """``graphwire serve --workers n`` on one port with the Redis at ``redis_url``.

    Returned once one worker answers ``/ws/health``; ``process`` is the supervisor.
    """
    environment = {"GRAPHWIRE_REDIS_URL": redis_url, **(env or {})}
    return _wait_healthy(_spawn_server(tmp, "--workers", str(n), *extra, env=environment))


def stop_cluster(servers: list[Server]) -> None:
    """Stop every gateway: all are asked at once (SIGTERM), then each is waited for."""
    for server in servers:
        if server.process.poll() is None:
            server.process.terminate()
    deadline = time.monotonic() + 10
    for server in servers:
        try:
            server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# A gateway's operator endpoints, read from outside: /metrics (parsed) and /ready.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_text(server: Server) -> str:
    with urllib.request.urlopen(server.http + "/metrics", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain")
        return str(response.read().decode())


def scrape(server: Server) -> Samples:
    """Every sample of ``GET /metrics``, by name and labels."""
    text = metrics_text(server)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def ready(server: Server) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(server.http + "/ready", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:  # its socket, closed now rather than when collected
            return error.code, json.loads(error.read())


@dataclass
class Client:
    """A plain ``websockets`` client that checks every frame against the spec."""

    ws: ClientConnection
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    frames: list[dict[str, Any]] = field(default_factory=list)
    hello: dict[str, Any] = field(default_factory=dict)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        while not self.pending:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            assert isinstance(raw, str), "the server sends text frames only"
            frame = json.loads(raw)
            errors = SERVER_MESSAGE.errors(frame)
            assert not errors, f"frame breaks the spec: {frame}: {errors}"
            self.frames.append(frame)
            self.pending.extend(frame["messages"] if frame["type"] == "batch" else [frame])
        return self.pending.popleft()

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        while True:
            message = await self.recv(timeout)
            seen.append(message)
            if predicate(message):
                return seen

    async def run_events(self, workflow_id: str) -> list[dict[str, Any]]:
        seen = await self.until(lambda m: m.get("workflow_id") == workflow_id and m["type"] in TERMINAL)
        return [m for m in seen if m.get("workflow_id") == workflow_id and "seq" in m]

    async def start(self, workflow: str, params: dict[str, Any], id_: str = "start") -> dict[str, Any]:
        await self.send({"type": "start_workflow", "id": id_, "workflow": workflow, "params": params})
        started = await self.until(lambda m: m["type"] in ("workflow_started", "error") and m.get("reply_to") == id_)
        assert started[-1]["type"] == "workflow_started", started[-1]
        return started[-1]

    async def answer(self, request: dict[str, Any], value: str) -> None:
        """Answer an ``input_request`` with ``{"value": value}``."""
        await self.send(
            {
                "type": "node_input",
                "workflow_id": request["workflow_id"],
                "node_id": request["node_id"],
                "request_id": request["request_id"],
                "data": {"value": value},
            }
        )

    async def ping(self, id_: str = "alive") -> None:
        await self.send({"type": "ping", "id": id_})
        pong = await self.until(lambda m: m["type"] == "pong")
        assert pong[-1]["reply_to"] == id_

    async def close(self) -> None:
        await self.ws.close()


async def connect(url: str, **kwargs: Any) -> Client:
    client = Client(await websockets.connect(url, max_size=None, **kwargs))
    client.hello = await client.recv()
    assert client.hello["type"] == "connected"
    return client


def assert_gap_free(events: list[dict[str, Any]], first: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), seqs
    assert sum(e["type"] in TERMINAL for e in events) == 1
    assert events[-1]["type"] in TERMINAL
