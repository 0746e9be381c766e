"""Operations (issue 15): Prometheus metrics, readiness, against real `graphwire serve` processes.

A live gateway is scraped before and after a known sequence of runs, errors and
disconnects, and the counters must have moved by exactly what the sequence did. Readiness
is watched through SIGTERM's drain (and, in `test_cluster_runs.py`'s gateway cut from Redis,
through an outage). Plain `websockets` clients; every frame checked against the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import websockets

import harness
from cluster import CLUSTER_ENV, request
from cluster import wait_for as wait_until
from harness import (
    Client,
    Samples,
    Server,
    free_port,
    metrics_text,
    moved,
    ready,
    scrape,
    start_cluster,
    start_server,
    start_workers,
    stop_cluster,
    stop_server,
    value,
)
from hostile import StalledPeer, wait_for
from redis_proc import start_redis

# Every client a test opens, closed after it (its gateway may be gone by then): a socket
# left to the garbage collector would warn in whichever test runs next.
_opened: list[Client] = []


async def connect(url: str, **kwargs: Any) -> Client:
    client = await harness.connect(url, **kwargs)
    _opened.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _opened:
        client = _opened.pop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.ws.close(), 5)


SECRET = "a-test-secret-of-at-least-32-bytes!"


async def test_counters_move_by_what_a_known_sequence_did(tmp_path: Path) -> None:
    # Pings are limited to 5 a minute here, so the 6th and 7th are rate_limited.
    server = start_server(tmp_path, env={"GRAPHWIRE_RATE_LIMIT_PER_COMMAND": '{"ping": "5/minute"}'})
    try:
        before = scrape(server)
        starter = await connect(server.ws() + "?batch=1")  # an SDK-like client: may get batches
        other = await connect(server.ws())
        _chat = await connect(server.ws("/ws/chat"))  # open until the end

        done = []
        for i in range(2):
            done.append(await starter.start("tick", {"count": 3, "delay_ms": 0}, f"t{i}"))
            await starter.run_events(done[-1]["workflow_id"])
        boom = await starter.start("boom", {}, "b")
        assert (await starter.run_events(boom["workflow_id"]))[-1]["type"] == "workflow_failed"
        long = await starter.start("tick", {"count": 10_000, "delay_ms": 50}, "l")
        await starter.send({"type": "cancel_workflow", "id": "x", "workflow_id": long["workflow_id"]})
        assert (await starter.run_events(long["workflow_id"]))[-1]["type"] == "workflow_cancelled"
        asked = await starter.start("ticker", {"count": 2000, "payload_bytes": 10, "wait_for_go": True}, "a")
        go = (await starter.until(lambda m: m["type"] == "input_request"))[-1]
        await asyncio.sleep(0.3)  # a person takes a moment
        await starter.answer(go, "go")
        # 2000 events back to back: they leave in batch frames (the client asked for them).
        assert (await starter.run_events(asked["workflow_id"]))[-1]["type"] == "workflow_completed"

        for _ in range(3):
            await other.ws.send("not json")
        await other.send({"type": "subscribe", "id": "nope", "workflow_id": "run_nope"})
        await other.send({"type": "subscribe", "id": "again", "workflow_id": done[0]["workflow_id"], "since_seq": 2})
        await other.until(lambda m: m["type"] == "workflow_completed")
        for i in range(7):
            await other.send({"type": "ping", "id": f"p{i}"})
        answers = await other.until(lambda m: m.get("reply_to") == "p6")
        errors = [m for m in other.frames if m["type"] == "error"]
        assert Counter(m["code"] for m in errors) == {"invalid_json": 3, "unknown_run": 1, "rate_limited": 2}
        assert sum(m["type"] == "pong" for m in answers) == 5

        await other.close()  # 1000
        cut = await connect(server.ws())
        cut.ws.transport.abort()  # no close frame: 1006
        big = await connect(server.ws())
        await big.ws.send("x" * (1_048_576 + 1))  # over max_message_size: 1009
        with pytest.raises(websockets.ConnectionClosed):
            await big.recv()

        def ended(code: str) -> bool:
            return moved(before, scrape(server), "graphwire_disconnects_total", code=code) == 1

        for code in ("1000", "1006", "1009"):  # each counted once the gateway let its socket go
            await wait_until(functools.partial(ended, code), code)
        after = scrape(server)
    finally:
        stop_server(server)

    def delta(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    assert value(after, "graphwire_connections", endpoint="workflow") == 1  # the starter
    assert value(after, "graphwire_connections", endpoint="chat") == 1
    assert delta("graphwire_connections_total", endpoint="workflow") == 4
    assert delta("graphwire_connections_total", endpoint="chat") == 1
    assert delta("graphwire_disconnects_total", code="1000") == 1

    assert delta("graphwire_runs_started_total", workflow="tick") == 3
    assert delta("graphwire_runs_started_total", workflow="boom") == 1
    assert delta("graphwire_runs_started_total", workflow="ticker") == 1
    assert delta("graphwire_runs_finished_total", workflow="tick", status="completed") == 2
    assert delta("graphwire_runs_finished_total", workflow="tick", status="cancelled") == 1
    assert delta("graphwire_runs_finished_total", workflow="boom", status="failed") == 1
    assert delta("graphwire_runs_finished_total", workflow="ticker", status="completed") == 1
    assert delta("graphwire_run_duration_seconds_count", workflow="tick") == 3
    assert delta("graphwire_input_wait_seconds_count", workflow="ticker") == 1
    assert delta("graphwire_input_wait_seconds_sum", workflow="ticker") >= 0.3

    assert delta("graphwire_errors_total", code="invalid_json") == 3
    assert delta("graphwire_errors_total", code="unknown_run") == 1
    assert delta("graphwire_errors_total", code="rate_limited") == 2
    assert delta("graphwire_rate_limited_total") == 2
    assert delta("graphwire_resumes_total", outcome="recovered") == 1

    assert delta("graphwire_messages_received_total", type="invalid") == 3
    assert delta("graphwire_messages_received_total", type="ping") == 7
    assert delta("graphwire_messages_received_total", type="subscribe") == 2
    assert delta("graphwire_messages_received_total", type="start_workflow") == 5
    assert delta("graphwire_messages_received_total", type="cancel_workflow") == 1
    assert delta("graphwire_messages_received_total", type="node_input") == 1
    assert delta("graphwire_messages_sent_total", type="pong") == 5
    assert delta("graphwire_messages_sent_total", type="error") == 6
    assert delta("graphwire_messages_sent_total", type="connected") == 5
    assert delta("graphwire_messages_sent_total", type="workflow_started") == 5
    # Four runs completed for the starter, and the resume replayed one more ending.
    assert delta("graphwire_messages_sent_total", type="workflow_completed") == 4
    # Every event of the ticker reached the starter, in batches or not.
    assert delta("graphwire_messages_sent_total", type="node_event") >= 2000
    batches = sum(frame["type"] == "batch" for frame in starter.frames)
    assert batches > 0
    assert delta("graphwire_batches_sent_total") == batches
    assert delta("graphwire_send_queue_bytes_count") >= batches
    for name in list(after):
        for _label, text in name[1]:
            # Bounded labels only: never a run id, a client id or a user.
            assert not text.startswith(("run_", "cl_")), name


async def test_slow_consumers_are_counted_by_reason(tmp_path: Path) -> None:
    # 200 frames of 20 KB: far more than the reading watcher ever has waiting, far less than
    # the run's 1,000 minus what the stalled peer's kernel buffers hold.
    small_queue = start_server(tmp_path, env={"GRAPHWIRE_SEND_QUEUE_MAX_MESSAGES": "200"})
    stall = start_server(tmp_path, env={"GRAPHWIRE_WRITE_TIMEOUT": "1", "GRAPHWIRE_CLOSE_TIMEOUT": "1"})
    try:
        for server, reason in ((small_queue, "queue"), (stall, "write_timeout")):
            before = scrape(server)
            watcher = await connect(server.ws())
            busy = {"count": 1000, "payload_bytes": 20_000, "interval_ms": 2, "wait_for_go": True}
            run = await watcher.start("ticker", busy)
            go = (await watcher.until(lambda m: m["type"] == "input_request"))[-1]
            peer = StalledPeer(server.port)
            peer.send({"type": "subscribe", "id": "s", "workflow_id": run["workflow_id"]})
            peer.read_until(b'"subscribed"')  # from now on it never reads
            await watcher.answer(go, "go")
            await watcher.run_events(run["workflow_id"])

            def closes(server: Server = server, before: Samples = before, reason: str = reason) -> tuple[float, float]:
                after = scrape(server)
                return (
                    moved(before, after, "graphwire_slow_consumer_closes_total", reason=reason),
                    moved(before, after, "graphwire_disconnects_total", code="1013"),
                )

            await wait_for(lambda: closes() == (1, 1), 60, f"the stalled peer closed ({reason}), and counted")
            peer.close()
            await watcher.close()
    finally:
        stop_server(small_queue)
        stop_server(stall)


def _token(key: str, ttl: float = 600, scope: str = "workflows:start runs:read") -> str:
    return jwt.encode({"sub": "alice", "scope": scope, "exp": int(time.time() + ttl)}, key, algorithm="HS256")


async def _closed_with(url: str) -> int | None:
    """Connect, read until the gateway closes; the close code it sent."""
    async with websockets.connect(url, open_timeout=10) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None


async def test_auth_failures_are_counted_by_reason(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_AUTH_JWT_SECRET": SECRET})
    try:
        before = scrape(server)
        assert await _closed_with(server.ws()) == 4001  # no token
        assert await _closed_with(server.ws() + "?token=" + _token("another-secret-of-at-least-32-bytes")) == 4001
        assert await _closed_with(server.ws() + "?token=" + _token(SECRET, ttl=-60)) == 4002
        assert await _closed_with(server.ws("/ws/chat") + "?token=" + _token(SECRET, scope="runs:read")) == 4003
        alice = await connect(server.ws() + "?token=" + _token(SECRET))
        await alice.send({"type": "refresh_token", "id": "r", "token": "junk"})
        refused = (await alice.until(lambda m: m.get("reply_to") == "r"))[-1]
        assert refused["code"] == "unauthorized"
        broadcast = urllib.request.Request(
            server.http + "/api/broadcast",
            data=b'{"group": "g", "message": "m"}',
            headers={"content-type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(broadcast, timeout=5)
        assert no_token.value.code == 401
        no_token.value.close()
        await alice.close()
        after = scrape(server)
    finally:
        stop_server(server)
    assert moved(before, after, "graphwire_auth_failures_total", reason="missing") == 2  # socket, HTTP
    assert moved(before, after, "graphwire_auth_failures_total", reason="invalid") == 2  # forged, refresh
    assert moved(before, after, "graphwire_auth_failures_total", reason="expired") == 1
    assert moved(before, after, "graphwire_auth_failures_total", reason="forbidden") == 1
    assert moved(before, after, "graphwire_disconnects_total", code="4001") == 2
    assert moved(before, after, "graphwire_errors_total", code="unauthorized") == 1


async def test_metrics_off_answers_404(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_METRICS": "false"})
    try:
        with pytest.raises(urllib.error.HTTPError) as off:
            scrape(server)
        assert off.value.code == 404
        off.value.close()
        assert ready(server)[0] == 200
    finally:
        stop_server(server)


async def test_a_run_taken_over_counts_as_reclaimed_not_started(tmp_path: Path) -> None:
    # A Redis of its own: the module's cluster (on the session's Redis) would take the run over too.
    redis = start_redis(tmp_path)
    env = {**CLUSTER_ENV, "GRAPHWIRE_RUN_LEASE_SECONDS": "1"}
    a, b = start_cluster(tmp_path, 2, redis.url, env=env)
    try:
        starter = await connect(a.ws())
        run = await starter.start("ticker", {"count": 3, "payload_bytes": 10, "wait_for_go": True})
        go = (await starter.until(lambda m: m["type"] == "input_request"))[-1]
        before_b = scrape(b)
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        await wait_until(lambda: moved(before_b, scrape(b), "graphwire_runs_reclaimed_total") == 1, "B took it over")
        answerer = await connect(b.ws())
        await request(answerer, {"type": "subscribe", "id": "w", "workflow_id": run["workflow_id"], "since_seq": 0})
        await answerer.answer(go, "go")
        assert (await answerer.run_events(run["workflow_id"]))[-1]["type"] == "workflow_completed"
        await answerer.close()
        after_b = scrape(b)
    finally:
        stop_cluster([a, b])
        redis.stop()
    assert moved(before_b, after_b, "graphwire_runs_started_total", workflow="ticker") == 0
    assert moved(before_b, after_b, "graphwire_runs_finished_total", workflow="ticker", status="completed") == 1
    assert moved(before_b, after_b, "graphwire_input_wait_seconds_count", workflow="ticker") == 1


async def test_ready_reports_draining_during_the_grace(tmp_path: Path) -> None:
    # The checks below take well under a second; the drain lasts 6 s, so a loaded machine has room.
    server = start_server(tmp_path, env={"GRAPHWIRE_SHUTDOWN_DELAY": "6", "GRAPHWIRE_SHUTDOWN_GRACE": "15"})
    try:
        assert ready(server)[0] == 200
        watcher = await connect(server.ws())
        run = await watcher.start("tick", {"count": 10_000, "delay_ms": 20})
        server.process.send_signal(signal.SIGTERM)
        status, body = await wait_until(
            lambda: answer if (answer := ready(server))[0] == 503 else None, "not ready after SIGTERM", 10
        )
        assert (status, body["reason"]) == (503, "draining")
        assert server.get_json("/ws/health")["status"] == "ok"  # still alive: liveness is not readiness
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(server.ws(), open_timeout=5)
        assert refused.value.response.status_code == 503
        await watcher.ping()  # open sockets and their runs go on meanwhile
        ending = await watcher.run_events(run["workflow_id"])
        assert ending[-1]["type"] == "workflow_failed"
        assert ending[-1]["error"]["code"] == "gateway_shutdown"
        server.process.wait(timeout=20)  # ended within the grace (and a margin)
    finally:
        stop_server(server)


def exposed_metrics(server: Server) -> set[str]:
    """The metric names a live gateway exposes, as the text format writes them (`# TYPE` lines)."""
    return {line.split()[2] for line in metrics_text(server).splitlines() if line.startswith("# TYPE ")}


def test_every_metric_is_in_the_readme_and_every_readme_metric_is_exposed(server: Server) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Operations\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(graphwire_[a-z_]+)", section, re.M))
    assert documented == exposed_metrics(server)


DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana-dashboard.json"
# Histograms are queried through their series; the text format's `# TYPE` line names the histogram.
_SERIES = re.compile(r"_(bucket|sum|count)$")


def test_the_dashboard_queries_only_metrics_a_live_gateway_exposes(server: Server) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    queries = [t["expr"] for p in panels for t in p["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
        assert all('instance=~"$instance"' in t["expr"] for t in panel["targets"]), panel["title"]
    # No two panels on the same cells of the grid.
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine
    exposed = exposed_metrics(server)
    queried = {name for query in queries for name in re.findall(r"\bgraphwire_[a-z_]+", query)}
    missing = {n for n in queried if n not in exposed and _SERIES.sub("", n) not in exposed}
    assert not missing, f"the dashboard queries metrics no gateway exposes: {sorted(missing)}"
    # What the issue asks the dashboard to show.
    for needed in (
        "graphwire_connections",
        "graphwire_messages_sent_total",
        "graphwire_send_queue_bytes_bucket",
        "graphwire_runs_finished_total",
        "graphwire_input_wait_seconds_bucket",
        "graphwire_slow_consumer_closes_total",
        "graphwire_broker_errors_total",
        "graphwire_broker_publish_lag_seconds_bucket",
    ):
        assert needed in queried, needed


def two_free_ports() -> int:
    """A port p such that p and p + 1 are both free now."""
    for _ in range(200):
        base = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in (base, base + 1):
                    sock = held.enter_context(socket.socket())
                    # As the metrics server binds (and uvicorn): a port in TIME_WAIT, left by
                    # an earlier test's connections, is free for it.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return base
    raise RuntimeError("no two free ports in a row")


async def test_each_worker_is_its_own_scrape_target(redis_url: str, tmp_path: Path) -> None:
    base = two_free_ports()
    server = start_workers(tmp_path, 2, redis_url, env={"GRAPHWIRE_METRICS_PORT": str(base)})
    clients = []
    try:
        targets = [Server(server.process, base + i, server.log_path) for i in range(2)]

        def scraped() -> list[Samples] | None:
            try:
                return [scrape(target) for target in targets]
            except OSError:
                return None  # a worker still starting

        await wait_until(lambda: scraped() is not None, "both workers answer on their metrics ports")
        ids = [
            {dict(labels)["gateway_id"] for name, labels in s if name == "graphwire_gateway_info"}
            for s in scraped() or []
        ]
        assert [len(i) for i in ids] == [1, 1], ids  # each worker names itself, once
        assert ids[0] != ids[1], "two workers, two gateway ids"
        clients = [await connect(server.ws()) for _ in range(6)]

        def open_on_each() -> list[float]:
            return [value(s, "graphwire_connections", endpoint="workflow") for s in scraped() or []]

        # The kernel spreads the 6 over the workers; each worker counts only its own.
        await wait_until(lambda: sum(open_on_each()) == 6, "the workers' gauges add up to the 6 open sockets")
    finally:
        for client in clients:
            await client.close()
        stop_server(server)
