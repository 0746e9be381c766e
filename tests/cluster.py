"""What the cluster tests share: clients through the balancer, commands and their answers.

The fixtures (``cluster``: 3 real gateways on the session's Redis, ``balancer``,
``clients``, ``redis_up``) are in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from balancer import RoundRobinBalancer
from harness import Client, Server, connect, start_cluster, stop_cluster
from redis_proc import RedisServer

# Faults are noticed within a second or two; the tests poll with deadlines, never sleep.
CLUSTER_ENV = {"GRAPHWIRE_REDIS_TIMEOUT": "1"}
DEADLINE = 20.0


class Clients:
    """Clients through the balancer, closed at the end of the test."""

    def __init__(self, balancer: RoundRobinBalancer) -> None:
        self.balancer = balancer
        self.open: list[Client] = []

    async def one_per_gateway(self) -> list[Client]:
        """Three clients, on A, B and C (in the balancer's backend order)."""
        before = self.balancer.counts
        out: dict[int, Client] = {}
        for _ in range(3):
            client = await connect(f"ws://127.0.0.1:{self.balancer.port}/ws/workflow")
            self.open.append(client)
            after = self.balancer.counts
            (landed,) = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if b > a]
            out[landed] = client
            before = after
        assert sorted(out) == [0, 1, 2], "round robin sends three clients in a row to three gateways"
        return [out[i] for i in range(3)]


def post(server: Server, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.http + path, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def apost(server: Server, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(post, server, path, body)


async def request(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a command and return its answer (``ack`` or ``subscribed``)."""
    await client.send(frame)
    answer = (await client.until(lambda m: m.get("reply_to") == frame["id"]))[-1]
    assert answer["type"] in ("ack", "subscribed"), answer
    return answer


async def nothing_more(client: Client, kind: str) -> None:
    """No further ``kind`` frame reaches ``client`` before the answer to a ping."""
    await client.send({"type": "ping", "id": "quiet"})
    seen = await client.until(lambda m: m["type"] == "pong" and m["reply_to"] == "quiet")
    assert [m for m in seen if m["type"] == kind] == []


async def wait_for(check: Any, what: str, timeout: float = DEADLINE) -> Any:
    """Poll the sync or async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def fresh_cluster(redis_server: RedisServer, tmp: Path, n: int, env: dict[str, str]) -> Iterator[list[Server]]:
    """``n`` gateways on the session's Redis, brought back and emptied first; no traceback in their logs after."""
    if not redis_server.running:
        redis_server.restart()
    redis_server.flushall()
    servers = start_cluster(tmp, n, redis_server.url, env=env)
    try:
        yield servers
    finally:
        stop_cluster(servers)
    for server in servers:
        assert "Traceback" not in server.log(), server.log()
