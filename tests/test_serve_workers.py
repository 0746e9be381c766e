"""``graphwire serve --workers N`` (issue 13, step 4): N real gateway processes on one port.

Each test starts one supervisor on the session's Redis and finds its workers as the
supervisor's children in ``/proc``, and which worker answered by ``/ws/health``'s
``gateway_id``, which is also in the name of each worker's Redis connections
(``graphwire-<id>-sub``). Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from harness import Client, Server, connect, start_server, start_workers, stop_server

GRACE = 3.0
WORKERS_ENV = {"GRAPHWIRE_SHUTDOWN_GRACE": str(GRACE), "GRAPHWIRE_REDIS_TIMEOUT": "1"}
DEADLINE = 20.0


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, from ``/proc/<pid>/stat``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if int(ppid) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gateway_ids(redis_url: str) -> set[str]:
    """The gateways connected to Redis now, by their pub/sub connection's name."""
    with redis.Redis.from_url(redis_url) as admin:
        names = [c.get("name", "") for c in admin.client_list()]
    return {
        n.removeprefix("graphwire-").removesuffix("-sub")
        for n in names
        if n.startswith("graphwire-") and n.endswith("-sub")
    }


def numsub(redis_url: str, channel: str) -> int:
    with redis.Redis.from_url(redis_url) as admin:
        return int(dict(admin.pubsub_numsub(channel))[channel.encode()])


def wait_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return result


def health_id(server: Server) -> str:
    """``gateway_id`` of the worker that took this fresh connection (urllib sends ``Connection: close``)."""
    answer: str = server.get_json("/ws/health")["gateway_id"]
    return answer


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Server]:
    """A supervisor with 3 workers, each connected to Redis; stopped, with nothing left, after."""
    server = start_workers(tmp_path, 3, redis_url, env=WORKERS_ENV)
    pids: set[int] = set()
    try:
        wait_until(lambda: len(children(server.process.pid)) == 3 and len(gateway_ids(redis_url)) == 3, "3 workers up")
        pids = children(server.process.pid)
        yield server
    finally:
        pids |= children(server.process.pid)
        stop_server(server)
        for pid in pids:  # only if the supervisor failed to end them: the test fails below
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in server.log(), server.log()
    assert not [pid for pid in pids if alive(pid)], server.log()


def test_fresh_connections_are_spread_over_the_workers(workers: Server, redis_url: str) -> None:
    seen: set[str] = set()
    with ThreadPoolExecutor(8) as pool:
        deadline = time.monotonic() + DEADLINE
        while len(seen) < 2 and time.monotonic() < deadline:
            seen |= set(pool.map(lambda _: health_id(workers), range(24)))
    assert len(seen) >= 2, f"every connection went to {seen}"
    assert seen <= gateway_ids(redis_url)  # the workers' own ids, nothing else answers


async def test_a_broadcast_reaches_members_on_every_worker_once(workers: Server, redis_url: str) -> None:
    members: list[Client] = []
    try:
        # Clients connect in bursts until their group is held by at least two workers.
        while numsub(redis_url, "graphwire:group:night-shift") < 2:
            assert len(members) < 30, "30 clients, all on one worker"
            burst = await asyncio.gather(*(connect(workers.ws()) for _ in range(3)))
            members += burst
            for member in burst:
                await member.send({"type": "join_group", "id": "join", "group": "night-shift"})
                ack = await member.until(lambda m: m.get("reply_to") == "join")
                assert ack[-1]["type"] == "ack", ack[-1]
        holders = numsub(redis_url, "graphwire:group:night-shift")
        for message in ("db failover", "done"):
            body = await asyncio.to_thread(
                workers.post_json, "/api/broadcast", {"group": "night-shift", "message": message}
            )
            # The worker that took the POST served its own members (delivered) and published
            # once to every other worker holding the group (gateways).
            assert body["gateways"] == holders - (1 if body["delivered"] else 0), body
        for member in members:
            seen = await member.until(lambda m: m["type"] == "system_alert" and m["message"] == "done")
            assert [m["message"] for m in seen if m["type"] == "system_alert"] == ["db failover", "done"]
            await member.send({"type": "ping", "id": "quiet"})
            after = await member.until(lambda m: m["type"] == "pong")
            assert [m["type"] for m in after] == ["pong"], "a broadcast arrived twice"
    finally:
        for member in members:
            await member.close()


def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(workers: Server, redis_url: str) -> None:
    supervisor = workers.process.pid
    before, ids_before = children(supervisor), gateway_ids(redis_url)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int]:
        now = children(supervisor)
        return now if len(now) == 3 and victim not in now else set()

    def new_id() -> set[str]:
        ids = gateway_ids(redis_url)
        return ids if len(ids) == 3 and ids != ids_before else set()

    assert len(wait_until(replaced, "a new worker") & before) == 2
    # The new worker is a gateway of its own: a fresh id on Redis, the victim's gone.
    assert len(wait_until(new_id, "the new worker on Redis") & ids_before) == 2
    assert f"worker [{victim}] ended (killed by SIGKILL); starting a new one" in workers.log()
    for _ in range(10):
        assert workers.get_json("/ws/health")["status"] == "ok"


async def test_sigterm_ends_every_worker_gracefully_and_the_supervisor_with_0(redis_url: str, tmp_path: Path) -> None:
    server = start_workers(tmp_path, 2, redis_url, env=WORKERS_ENV)
    try:
        wait_until(lambda: len(children(server.process.pid)) == 2 and len(gateway_ids(redis_url)) == 2, "2 workers up")
        pids = children(server.process.pid)
        client = await connect(server.ws())
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.process.wait, GRACE + 5)
        took = time.monotonic() - started
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert code == 0, server.log()
    assert took < GRACE, f"{took:.1f} s"
    assert not [pid for pid in pids if alive(pid)], "a worker outlived its supervisor"
    wait_until(lambda: not gateway_ids(redis_url), "the workers' Redis connections closed")
    await client.ws.wait_closed()
    assert client.ws.close_code == 1012  # GatewayServer's shutdown ran in its worker
    log = server.log()
    assert "SIGTERM, stopping the workers" in log
    assert log.count("Finished server process") == 2
    assert "Traceback" not in log, log


def test_more_than_one_worker_without_redis_exits_2_naming_the_variable() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHWIRE_")}
    done = subprocess.run(
        [sys.executable, "-m", "graphwire", "serve", "--port", "1", "--workers", "2"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1
    assert "GRAPHWIRE_REDIS_URL" in done.stderr
    assert done.stdout == ""


def test_one_worker_is_the_gateway_itself(tmp_path: Path) -> None:
    """``--workers 1`` (the default) is today's gateway: no Redis, no supervisor, no child process."""
    server = start_server(tmp_path, "--workers", "1")
    try:
        assert server.get_json("/ws/health")["gateway_id"] == "local"
        assert children(server.process.pid) == set()
        assert "supervisor" not in server.log()
    finally:
        stop_server(server)
