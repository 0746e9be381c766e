"""Limits a hostile or unlucky client meets, over real sockets (issue 10)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from graphwire.settings import Settings
from harness import Client, Server, assert_gap_free, connect, start_server, stop_server
from hostile import StalledPeer, open_sockets, rss_bytes, wait_for


async def test_a_connection_over_the_limit_is_refused_before_the_upgrade(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_MAX_CONNECTIONS": "2"})
    try:
        first, second = await connect(server.ws()), await connect(server.ws())
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(server.ws(), open_timeout=5)
        response = refused.value.response
        assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
        assert server.get_json("/ws/health")["active_connections"] == 2
        await first.ping()
        await second.close()
        # The slot is free again once the gateway has seen the close.
        deadline = time.monotonic() + 10
        while server.get_json("/ws/health")["active_connections"] != 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        third = await connect(server.ws())
        await third.ping()
        await asyncio.gather(first.close(), third.close())
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


async def test_a_blocking_sync_node_leaves_other_clients_served(server: Server) -> None:
    starter = await connect(server.ws())
    other = await connect(server.ws())
    started = await starter.start("blocking_sleep", {"seconds": 3})
    await starter.until(lambda m: m["type"] == "node_update" and m["data"]["status"] == "running")
    # While the node sleeps in its thread, the loop answers everyone. On the loop itself,
    # each answer would wait for the node's 3 s; the bound is generous for a loaded machine.
    slowest = 0.0
    for i in range(10):
        sent = time.monotonic()
        await other.ping(f"p{i}")
        slowest = max(slowest, time.monotonic() - sent)
        await asyncio.sleep(0.1)
    assert slowest < 1.0, f"a ping waited {slowest:.2f} s behind a sleeping node"
    events = await starter.run_events(started["workflow_id"])
    assert events[-1]["data"] == {"slept": 3}
    await asyncio.gather(starter.close(), other.close())


# About 20 MB in 2 s or more: a reader keeps up, a peer that does not read fills its buffers.
BUSY_TICKER = {"count": 1000, "payload_bytes": 20_000, "interval_ms": 2, "wait_for_go": True}


async def start_busy_run(watcher: Client) -> tuple[str, dict[str, Any]]:
    started = await watcher.start("ticker", BUSY_TICKER)
    (request,) = [m for m in await watcher.until(lambda m: m["type"] == "input_request")][-1:]
    return started["workflow_id"], request


def stalled_watchers(server: Server, workflow_id: str, count: int) -> list[StalledPeer]:
    peers = []
    for i in range(count):
        peer = StalledPeer(server.port)
        peer.send({"type": "subscribe", "id": f"s{i}", "workflow_id": workflow_id})
        peer.read_until(b'"subscribed"')  # attached; from now on it never reads
        peers.append(peer)
    return peers


async def test_peers_that_never_read_are_closed_and_release_their_slots(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_WRITE_TIMEOUT": "1", "GRAPHWIRE_CLOSE_TIMEOUT": "1"})
    pid = server.process.pid
    try:
        watcher = await connect(server.ws())
        baseline_sockets = open_sockets(pid)
        workflow_id, go = await start_busy_run(watcher)
        peers = stalled_watchers(server, workflow_id, 5)
        assert server.get_json("/ws/health")["active_connections"] == 6
        await watcher.answer(go, "go")
        reading = asyncio.create_task(watcher.run_events(workflow_id))
        # Their sockets fill within a second or two; then write_timeout (1 s) closes them and
        # close_timeout (1 s) aborts them. The bound is generous for a loaded machine.
        await wait_for(lambda: server.get_json("/ws/health")["active_connections"] == 1, 60, "stalled peers gone")
        await wait_for(lambda: open_sockets(pid) <= baseline_sockets, 30, "their sockets released")
        events = await reading
        assert_gap_free(events, first=go["seq"] + 1)
        assert sum(e["type"] == "node_event" for e in events) == BUSY_TICKER["count"]
        assert events[-1]["type"] == "workflow_completed"
        # Seen from the stalled side: the gateway ended the connection (not left it open).
        assert {peer.read_until_closed(30) for peer in peers} <= {"eof", "reset"}
        for peer in peers:
            peer.close()
        await watcher.ping()
        await watcher.close()
    finally:
        stop_server(server)
    assert "closing with 1013" in server.log()
    assert "Traceback" not in server.log()


async def test_a_peer_that_keeps_sending_but_never_reads_is_closed(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_WRITE_TIMEOUT": "1", "GRAPHWIRE_CLOSE_TIMEOUT": "1"})
    try:
        watcher = await connect(server.ws())
        workflow_id, go = await start_busy_run(watcher)
        (peer,) = stalled_watchers(server, workflow_id, 1)
        await watcher.answer(go, "go")
        reading = asyncio.create_task(watcher.run_events(workflow_id))

        def flood() -> str:
            # Commands keep coming while nothing is read: each asks for an answer.
            deadline = time.monotonic() + 60
            try:
                while time.monotonic() < deadline:
                    peer.send({"type": "ping", "id": "p"})
                    time.sleep(0.002)
            except (BrokenPipeError, ConnectionResetError):
                return "closed"
            return "still open"

        assert await asyncio.to_thread(flood) == "closed"
        assert server.get_json("/ws/health")["active_connections"] == 1
        assert_gap_free(await reading, first=go["seq"] + 1)
        peer.close()
        await watcher.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("size", [1_100_000, 4_000_000, 17_000_000, 64_000_000])
async def test_an_oversized_frame_gets_a_clean_1009(server: Server, size: int) -> None:
    pid = server.process.pid
    before = rss_bytes(pid)
    ws = await websockets.connect(server.ws(), max_size=None)
    await ws.recv()  # connected

    async def send_then_read() -> None:
        await ws.send("x" * size)
        await asyncio.wait_for(ws.recv(), 30)

    with pytest.raises(ConnectionClosedError) as closed:
        await send_then_read()
    # A close frame with 1009 came back (a TCP reset would leave rcvd empty).
    assert closed.value.rcvd is not None, "the connection was reset, not closed"
    assert closed.value.rcvd.code == 1009
    # websockets reads the length from the frame header and drops the payload unread.
    assert rss_bytes(pid) - before < 32 * 1_048_576
    other = await connect(server.ws())
    await other.ping()
    await other.close()


async def frames_until_closed(client: Client, timeout: float = 30) -> tuple[list[dict[str, Any]], int | None]:
    seen: list[dict[str, Any]] = []
    try:
        while True:
            seen.append(await client.recv(timeout))
    except ConnectionClosed as closed:
        return seen, closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.parametrize(
    ("sig", "stuck_node"),
    [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGINT, True)],
    ids=["sigterm", "sigterm-stuck-sync-node", "sigint-stuck-sync-node"],
)
async def test_a_stop_signal_ends_every_run_honestly_then_the_process_within_its_grace(
    tmp_path: Path, sig: signal.Signals, stuck_node: bool
) -> None:
    grace = 3.0
    server = start_server(tmp_path, env={"GRAPHWIRE_SHUTDOWN_GRACE": str(grace), "GRAPHWIRE_WRITE_TIMEOUT": "60"})
    try:
        watcher = await connect(server.ws())
        runs = [(await watcher.start("tick", {"count": 10_000, "delay_ms": 10}, "slow"))["workflow_id"]]
        busy, go = await start_busy_run(watcher)
        runs.append(busy)
        peers = stalled_watchers(server, busy, 1)  # never reads again: its socket fills
        if stuck_node:
            # A sync node asleep in its worker thread: no one can interrupt it.
            runs.append((await watcher.start("blocking_sleep", {"seconds": 30}, "stuck"))["workflow_id"])
            await watcher.until(lambda m: m["type"] == "node_update" and m["data"]["status"] == "running")
        await watcher.answer(go, "go")
        await watcher.until(lambda m: m.get("workflow_id") == busy and m["type"] == "node_event")
        signalled = time.monotonic()
        server.process.send_signal(sig)
        frames, code = await frames_until_closed(watcher)
        await asyncio.to_thread(server.process.wait, grace + 20)
        took = time.monotonic() - signalled
    finally:
        stop_server(server)
    # Every run in flight ended, in its own log, before the socket closed with 1012.
    failed = {m["workflow_id"]: m["error"]["code"] for m in frames if m["type"] == "workflow_failed"}
    assert failed == {wid: "gateway_shutdown" for wid in runs}
    assert code == 1012
    assert took < grace + 3, f"the process took {took:.1f} s to end, its grace is {grace:g} s"
    for peer in peers:
        peer.close()


async def refusal(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    await client.send(frame)
    answer = (await client.until(lambda m: m.get("reply_to") == frame["id"]))[-1]
    assert answer["type"] == "error", answer
    return answer


async def test_runs_in_flight_are_limited_per_connection_and_per_gateway(tmp_path: Path) -> None:
    env = {"GRAPHWIRE_MAX_RUNS_PER_CONNECTION": "2", "GRAPHWIRE_MAX_RUNS_IN_FLIGHT": "3"}
    server = start_server(tmp_path, env=env)
    try:
        first, second = await connect(server.ws()), await connect(server.ws())
        ask = {"message": "ok?", "timeout": 60}
        a = await first.start("approval", ask, "a")
        await first.start("approval", ask, "b")
        over = await refusal(first, {"type": "start_workflow", "id": "c", "workflow": "approval", "params": ask})
        assert over["code"] == "too_many_runs"
        assert "max_runs_per_connection" in over["message"]
        assert server.get_json("/ws/health")["active_runs"] == 2  # nothing was started
        await second.start("approval", ask, "d")
        full = await refusal(second, {"type": "start_workflow", "id": "e", "workflow": "approval", "params": ask})
        assert full["code"] == "too_many_runs"
        assert "max_runs_in_flight" in full["message"]
        # A run that ends gives its place back.
        await first.send({"type": "cancel_workflow", "id": "x", "workflow_id": a["workflow_id"]})
        await first.until(lambda m: m["type"] == "workflow_cancelled")
        await first.start("approval", ask, "f")
        await asyncio.gather(first.close(), second.close())
    finally:
        stop_server(server)


async def test_a_thousand_starts_sent_without_reading_are_all_answered(server: Server) -> None:
    client = await connect(server.ws())
    frames = [
        json.dumps({"type": "start_workflow", "id": f"s{i}", "workflow": "approval", "params": {"message": "?"}})
        for i in range(1000)
    ]
    for frame in frames:
        await client.ws.send(frame)
    answers: dict[str, str] = {}
    while len(answers) < 1000:
        message = await client.recv(30)
        if message.get("reply_to", "").startswith("s"):
            answers[message["reply_to"]] = message.get("code", message["type"])
    counts = {kind: list(answers.values()).count(kind) for kind in set(answers.values())}
    assert counts == {"workflow_started": 100, "too_many_runs": 900}
    await client.ping()  # still open, nothing dropped
    await client.close()


async def test_subscriptions_are_limited_per_connection(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_MAX_SUBSCRIPTIONS_PER_CONNECTION": "3"})
    try:
        client, other = await connect(server.ws()), await connect(server.ws())
        run = await other.start("approval", {"message": "?"})
        await client.send({"type": "join_group", "id": "g", "group": "ops"})
        await client.until(lambda m: m.get("reply_to") == "g")
        await client.send({"type": "subscribe", "id": "t", "topics": ["a"]})
        await client.until(lambda m: m.get("reply_to") == "t")
        two = {"type": "subscribe", "id": "t2", "topics": ["b", "c"], "workflow_id": run["workflow_id"]}
        refused = await refusal(client, two)
        assert refused["code"] == "too_many_subscriptions"
        # Nothing changed: the topics of the refused subscribe were not added.
        await client.send({"type": "subscribe", "id": "now"})
        (now,) = (await client.until(lambda m: m.get("reply_to") == "now"))[-1:]
        assert now["topics"] == ["a"]
        # One more fits exactly; then nothing new does, but a repeat of what it has is free.
        await client.send({"type": "join_group", "id": "g2", "group": "dev"})
        assert (await client.until(lambda m: m.get("reply_to") == "g2"))[-1]["type"] == "ack"
        watch = await refusal(client, {"type": "subscribe", "id": "r", "workflow_id": run["workflow_id"]})
        assert watch["code"] == "too_many_subscriptions"
        await client.send({"type": "join_group", "id": "g3", "group": "ops"})
        assert (await client.until(lambda m: m.get("reply_to") == "g3"))[-1]["type"] == "ack"
        starts = await refusal(
            client, {"type": "start_workflow", "id": "s", "workflow": "chat", "params": {"message": "hi"}}
        )
        assert starts["code"] == "too_many_subscriptions"
        await asyncio.gather(client.close(), other.close())
    finally:
        stop_server(server)


async def test_an_event_over_the_limit_fails_its_run_and_nothing_else(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_MAX_EVENT_BYTES": "4096"})
    try:
        client = await connect(server.ws())
        big = await client.start("ticker", {"count": 3, "payload_bytes": 5000})
        events = await client.run_events(big["workflow_id"])
        # No tick was logged or sent; the run failed with the typed code.
        assert [e for e in events if e["type"] == "node_event"] == []
        assert events[-1]["type"] == "workflow_failed"
        assert events[-1]["error"]["code"] == "event_too_large"
        small = await client.start("ticker", {"count": 3, "payload_bytes": 100}, "small")
        assert (await client.run_events(small["workflow_id"]))[-1]["type"] == "workflow_completed"
        await client.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


async def test_a_runs_log_keeps_at_most_its_bytes(tmp_path: Path) -> None:
    limit = 65_536
    server = start_server(tmp_path, env={"GRAPHWIRE_RUN_LOG_MAX_BYTES": str(limit)})
    try:
        client = await connect(server.ws())
        run = await client.start("ticker", {"count": 100, "payload_bytes": 5000})
        await client.run_events(run["workflow_id"])
        late = await connect(server.ws())
        await late.send({"type": "subscribe", "id": "late", "workflow_id": run["workflow_id"], "since_seq": 0})
        subscribed = (await late.until(lambda m: m.get("reply_to") == "late"))[-1]
        assert subscribed["log_truncated"] is True
        assert subscribed["first_seq"] > 1
        replay = await late.until(lambda m: m["type"] == "workflow_completed")
        kept = [m for m in replay if "seq" in m]
        assert [m["seq"] for m in kept] == list(range(subscribed["first_seq"], subscribed["snapshot"]["last_seq"] + 1))
        assert sum(len(json.dumps(m, separators=(",", ":"))) for m in kept) <= limit
        await asyncio.gather(client.close(), late.close())
    finally:
        stop_server(server)


async def test_one_request_cannot_grow_the_process_past_its_limits(server: Server) -> None:
    client = await connect(server.ws())
    over = await refusal(
        client, {"type": "start_workflow", "id": "gb", "workflow": "ticker", "params": {"payload_bytes": 1_000_000}}
    )
    assert over["code"] == "invalid_params"
    assert over["path"] == "params.payload_bytes"
    before = rss_bytes(server.process.pid)
    # The spec's largest ticks, 400 of them (105 MB produced), watched by no one.
    run = await client.start("ticker", {"count": 400, "payload_bytes": 262_144}, "max")
    await client.send({"type": "unsubscribe", "id": "u", "workflow_id": run["workflow_id"]})
    await wait_for(lambda: server.get_json("/ws/health")["active_runs"] == 0, 120, "the ticker ended")
    grown = rss_bytes(server.process.pid) - before
    # What stays is one run's log (run_log_max_bytes, 8 MiB) plus allocator slack.
    assert grown < 64 * 1_048_576, f"the process grew by {grown / 1_048_576:.0f} MiB"
    await client.close()


async def test_a_thousand_starts_at_the_default_rate_limits_end_with_a_close_frame(tmp_path: Path) -> None:
    # The harness gives its gateways roomy rate limits; this one has the defaults.
    env = {
        "GRAPHWIRE_RATE_LIMIT_PER_CONNECTION": Settings().rate_limit_per_connection,
        "GRAPHWIRE_RATE_LIMIT_PER_USER": Settings().rate_limit_per_user,
        "GRAPHWIRE_RATE_LIMIT_PER_COMMAND": json.dumps(Settings().rate_limit_per_command),
    }
    server = start_server(tmp_path, env=env)
    try:
        client = await connect(server.ws())
        start = {"type": "start_workflow", "workflow": "approval", "params": {"message": "?"}}
        for i in range(1000):
            await client.send({**start, "id": f"s{i}"})
        answers: list[str] = []

        async def read_all() -> None:
            while True:
                message = await client.recv(30)
                if str(message.get("reply_to", "")).startswith("s"):
                    answers.append(message.get("code", message["type"]))

        with pytest.raises(ConnectionClosed) as closed:
            await read_all()
        # A flood far past the limit is closed, with a close frame that says why; what was
        # answered before it was answered in order: starts first, then refusals.
        assert closed.value.rcvd is not None, "dropped without a close frame"
        assert closed.value.rcvd.code == 1008
        assert set(answers) == {"workflow_started", "rate_limited"}
        assert answers.count("workflow_started") == 20
    finally:
        stop_server(server)
