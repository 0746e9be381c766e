"""The cluster tests' own parts: the session's ``redis-server`` with its faults, and the balancer."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from balancer import RoundRobinBalancer
from harness import connect, free_port, start_cluster, start_server, stop_cluster, stop_server
from redis_proc import RedisServer

# -- Redis ------------------------------------------------------------------------------


async def test_redis_answers_ping_and_set_get(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.ping() is True
        assert await client.set("greeting", "hello") is True
        assert await client.get("greeting") == "hello"
    finally:
        await client.aclose()


def test_flushall_empties_every_database(redis_url: str, redis_server: RedisServer) -> None:
    with redis_server.client() as db0, redis_server.client(db=1) as db1:
        db0.set("left-over", "1")
        db1.set("left-over", "1")
        redis_server.flushall()
        assert (db0.dbsize(), db1.dbsize()) == (0, 0)


def test_restart_keeps_the_port_and_empties_the_data(redis_url: str, redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    with redis.Redis.from_url(redis_url) as client:
        client.set("key", "value")
        redis_server.restart()
        assert (redis_server.port, redis_server.url) == (port, redis_url)
        assert redis_server.pid != pid
        # The same client reconnects to the new process, which has no data.
        assert client.get("key") is None
        assert client.dbsize() == 0


async def test_client_kill_all_drops_every_connection(redis_url: str, redis_server: RedisServer) -> None:
    sync_client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0))
    async_client = aioredis.from_url(redis_url)
    pubsub = async_client.pubsub()
    try:
        before = sync_client.client_id()
        await pubsub.subscribe("wake-up")
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"

        assert redis_server.client_kill_all() >= 2  # ours: one command connection, one pub/sub

        # A pub/sub reader sees the drop once; its next read reconnects and subscribes again.
        with pytest.raises(redis.ConnectionError):
            await pubsub.get_message(timeout=5)
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        # The sync pool notices the dead idle connection and opens a new one, even without retries.
        assert sync_client.client_id() != before
        # What was published while nobody listened is gone: pub/sub is only a wake-up.
        assert await async_client.publish("wake-up", "after") == 1
        message = await pubsub.get_message(timeout=5)
        assert message is not None
        assert message["data"] == b"after"
    finally:
        await pubsub.aclose()
        await async_client.aclose()
        sync_client.close()


def test_kill_then_restart(redis_url: str, redis_server: RedisServer) -> None:
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", redis_server.port), timeout=2).close()
    redis_server.restart()
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True


def test_stop_ends_the_process(redis_server: RedisServer) -> None:
    process = redis_server.process
    assert process is not None
    redis_server.stop()
    assert process.returncode == 0
    assert not redis_server.running
    redis_server.restart()  # the session's server, back for whoever comes next
    assert redis_server.running


# -- the balancer in front of plain TCP backends -----------------------------------------


class _Greeter(socketserver.BaseRequestHandler):
    """Says which backend it is, then echoes until the client half-closes, then closes."""

    def handle(self) -> None:
        try:
            self.request.sendall(self.server.name + b"\n")  # type: ignore[attr-defined]
            while data := self.request.recv(65536):
                self.request.sendall(data)
            self.request.sendall(b"bye")
        except ConnectionError:
            pass  # the balancer cut or reset this connection: what those tests do


class _Backend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Greeter)
        self.name = name
        self.port: int = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(5)


@pytest.fixture
def backends() -> Iterator[list[_Backend]]:
    running = [_Backend(name) for name in (b"A", b"B", b"C")]
    yield running
    for backend in running:
        backend.close()


def _dial(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _dial_and_read(port: int) -> bytes:
    """Connect and read; a reset may come as early as ``connect()`` returns, or before."""
    with _dial(port) as sock:
        return sock.recv(1)


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"closed after {line!r}"
        line += chunk
    return line[:-1]


def _read_to_end(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_balancer_sends_each_new_connection_to_the_next_backend(backends: list[_Backend]) -> None:
    with RoundRobinBalancer([b.port for b in backends]) as balancer:
        names = []
        for _ in range(6):
            with _dial(balancer.port) as sock:
                names.append(_read_line(sock))
        assert names == [b"A", b"B", b"C", b"A", b"B", b"C"]
        assert balancer.counts == [2, 2, 2]


def test_balancer_pipes_both_ways_and_passes_a_half_close_on(backends: list[_Backend]) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than one read, more than a socket buffer
    with RoundRobinBalancer([backends[0].port]) as balancer, _dial(balancer.port) as sock:
        assert _read_line(sock) == b"A"
        sock.sendall(b"ping\n")
        assert _read_line(sock) == b"ping"
        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(_read_to_end(sock)))
        reader.start()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # our half-close reaches the backend as one...
        reader.join(10)
        # ...which still answers on its open half, then closes, and its close reaches us.
        assert bytes(received) == payload + b"bye"
    assert balancer.active == 0


def test_balancer_cut_all_resets_live_connections(backends: list[_Backend]) -> None:
    with RoundRobinBalancer([b.port for b in backends]) as balancer:
        socks = [_dial(balancer.port) for _ in range(3)]
        try:
            assert [_read_line(s) for s in socks] == [b"A", b"B", b"C"]
            assert balancer.active == 3
            assert balancer.cut_all() == 3
            for sock in socks:
                with pytest.raises(ConnectionResetError):
                    sock.recv(1)  # a reset, as when the path drops, not an orderly end
            assert balancer.active == 0
            # It keeps balancing, in turn, after the cut.
            with _dial(balancer.port) as sock:
                assert _read_line(sock) == b"A"
            # While refusing, a connection is reset at once and reaches no backend.
            balancer.set_refusing(True)
            with pytest.raises(ConnectionResetError):
                _dial_and_read(balancer.port)  # a reset, not an orderly end
            balancer.set_refusing(False)
            assert balancer.counts == [2, 1, 1]
        finally:
            for sock in socks:
                sock.close()


def test_balancer_to_a_closed_port_resets_the_client() -> None:
    with RoundRobinBalancer([free_port()]) as balancer, pytest.raises(ConnectionResetError):
        _dial_and_read(balancer.port)


# -- the balancer in front of real gateways ------------------------------------------------


async def test_balancer_alternates_websockets_over_two_gateways(tmp_path: Path) -> None:
    servers = await asyncio.gather(asyncio.to_thread(start_server, tmp_path), asyncio.to_thread(start_server, tmp_path))
    try:
        with RoundRobinBalancer([s.port for s in servers]) as balancer:
            clients = [await connect(f"ws://127.0.0.1:{balancer.port}/ws/workflow") for _ in range(4)]
            try:
                assert all(c.hello["type"] == "connected" for c in clients)
                assert balancer.counts == [2, 2]
                for client in clients:
                    await client.ping()
                for server in servers:
                    metrics = await asyncio.to_thread(server.get_json, "/ws/metrics")
                    assert metrics["active_connections"] == 2
            finally:
                for client in clients:
                    await client.close()
    finally:
        for server in servers:
            stop_server(server)
            assert "Traceback" not in server.log(), server.log()


def _has_redis_setting() -> bool:
    from graphwire.settings import Settings

    return "redis_url" in Settings.model_fields


@pytest.mark.skipif(not _has_redis_setting(), reason="GRAPHWIRE_REDIS_URL is not a setting yet")
def test_start_cluster_starts_and_stops_every_gateway(tmp_path: Path, redis_url: str) -> None:
    servers = start_cluster(tmp_path, 3, redis_url)
    try:
        assert len({s.port for s in servers}) == 3
        assert all(s.get_json("/ws/health")["status"] == "ok" for s in servers)
    finally:
        stop_cluster(servers)
    assert all(s.process.returncode is not None for s in servers)
