"""Runs across gateways (issue 13): 3 real ``graphwire serve`` on one real Redis, no stickiness.

A run lives on the gateway that started it (A); clients on B and C watch it with gap-free
``seq``, resume it after a drop, answer its input requests and cancel it, through a
round-robin balancer. Every frame is checked against the spec (``harness.Client``), and
every run's events are compared with its log in Redis (``graphwire:run:<id>:log``).
"""

from __future__ import annotations

import asyncio
import json
import resource
from pathlib import Path
from typing import Any

from balancer import RoundRobinBalancer
from cluster import CLUSTER_ENV, DEADLINE, Clients, request, wait_for
from harness import (
    TERMINAL,
    Client,
    Server,
    assert_gap_free,
    connect,
    moved,
    ready,
    scrape,
    start_cluster,
    stop_cluster,
    value,
)
from redis_proc import RedisServer
from test_auth import SECRET, token


def events_of(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """Every run event ``client`` received for the run, in order (``reply_to`` of seq 1 left out)."""
    events = [dict(m) for m in _messages(client) if m.get("workflow_id") == workflow_id and "seq" in m]
    for event in events:
        event.pop("reply_to", None)
    return events


def _messages(client: Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in client.frames:
        out.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    return out


def redis_log(redis_server: RedisServer, workflow_id: str) -> list[dict[str, Any]]:
    with redis_server.client() as admin:
        entries = admin.xrange(f"graphwire:run:{workflow_id}:log")
    return [json.loads(fields[b"f"]) for _id, fields in entries]


async def finished(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    """Wait for the run's terminal event (unless already received); all its events."""
    if not any(m.get("workflow_id") == workflow_id and m["type"] in TERMINAL for m in _messages(client)):
        await client.until(lambda m: m.get("workflow_id") == workflow_id and m["type"] in TERMINAL, timeout=DEADLINE)
    return events_of(client, workflow_id)


async def same_as_redis(redis_server: RedisServer, workflow_id: str, events: list[dict[str, Any]]) -> None:
    """The run's log in Redis holds exactly ``events`` (the owner writes it a moment after sending)."""
    await wait_for(lambda: redis_log(redis_server, workflow_id) == events, f"the Redis log of {workflow_id}")


async def answer(client: Client, request_frame: dict[str, Any], value: str, id_: str) -> dict[str, Any]:
    """``node_input`` for ``request_frame``; the answer (``ack`` or ``error``)."""
    await client.send(
        {
            "type": "node_input",
            "id": id_,
            "workflow_id": request_frame["workflow_id"],
            "node_id": request_frame["node_id"],
            "request_id": request_frame["request_id"],
            "data": {"value": value},
        }
    )
    return (await client.until(lambda m: m.get("reply_to") == id_, timeout=DEADLINE))[-1]


async def test_a_run_on_a_is_watched_and_answered_from_b_and_c(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    a, b, c = await clients.one_per_gateway()
    started = await a.start("ticker", {"count": 30, "payload_bytes": 10, "wait_for_go": True})
    wid = started["workflow_id"]
    asked = (await a.until(lambda m: m["type"] == "input_request"))[-1]
    on_b = await request(b, {"type": "subscribe", "id": "s", "workflow_id": wid, "since_seq": 0})
    assert on_b["snapshot"]["status"] == "waiting"
    assert [p["request_id"] for p in on_b["snapshot"]["pending_inputs"]] == [asked["request_id"]]
    assert on_b["recovered"] is True
    assert on_b["epoch"]
    on_c = await request(c, {"type": "subscribe", "id": "s", "workflow_id": wid, "since_seq": 2})
    assert on_c["epoch"] == on_b["epoch"]

    # Answered from B: the node on A gets it once; a second answer from C is refused.
    assert (await answer(b, asked, "go", "go"))["type"] == "ack"
    again = await answer(c, asked, "go", "again")
    assert again["type"] == "error", again
    assert again["code"] == "input_already_answered", again

    on_a, seen_b, seen_c = [await finished(x, wid) for x in (a, b, c)]
    assert_gap_free(on_a)
    assert_gap_free(seen_b)
    assert_gap_free(seen_c, first=3)
    assert seen_b == on_a
    assert seen_c == on_a[2:]
    assert sum(e["type"] == "input_answered" for e in on_a) == 1
    assert on_a[-1]["type"] == "workflow_completed"
    assert on_a[-1]["data"] == {"count": 30}
    await same_as_redis(redis_up, wid, on_a)


async def test_resume_on_c_after_a_drop_from_a(cluster: list[Server], clients: Clients, redis_up: RedisServer) -> None:
    a, _b, c = await clients.one_per_gateway()
    wid = (await a.start("ticker", {"count": 150, "payload_bytes": 10, "interval_ms": 5}))["workflow_id"]
    await a.until(lambda m: m.get("seq", 0) >= 10)
    await a.close()  # dropped: the run goes on on A, nobody watches it there
    had = events_of(a, wid)
    last = had[-1]["seq"]
    resumed = await request(c, {"type": "subscribe", "id": "r", "workflow_id": wid, "since_seq": last})
    assert resumed["recovered"] is True
    assert resumed["log_truncated"] is False
    rest = await finished(c, wid)
    assert_gap_free(had + rest)
    await same_as_redis(redis_up, wid, had + rest)


async def test_cancel_from_c_ends_the_run_on_a_for_every_watcher(cluster: list[Server], clients: Clients) -> None:
    a, b, c = await clients.one_per_gateway()
    wid = (await a.start("ticker", {"count": 100_000, "payload_bytes": 10, "interval_ms": 10}))["workflow_id"]
    await request(b, {"type": "subscribe", "id": "s", "workflow_id": wid, "since_seq": 0})
    await c.send({"type": "cancel_workflow", "id": "stop", "workflow_id": wid})
    acked = (await c.until(lambda m: m.get("reply_to") == "stop", timeout=DEADLINE))[-1]
    assert acked["type"] == "ack"
    assert acked["command"] == "cancel_workflow"
    for watcher in (a, b):
        events = await finished(watcher, wid)
        assert events[-1]["type"] == "workflow_cancelled"
        assert events[-1]["reason"].startswith("cancelled by client ")
    assert_gap_free(events_of(b, wid))
    # The run has ended: another cancel from C is refused by A, as it would be on A.
    await c.send({"type": "cancel_workflow", "id": "stop2", "workflow_id": wid})
    refused = (await c.until(lambda m: m.get("reply_to") == "stop2", timeout=DEADLINE))[-1]
    assert refused["type"] == "error"
    assert refused["code"] == "run_finished"


async def test_refusals_from_another_gateway_are_the_owners(cluster: list[Server], clients: Clients) -> None:
    a, b, c = await clients.one_per_gateway()
    for client in (b, c):
        await client.send({"type": "subscribe", "id": "u", "workflow_id": "run_nope", "since_seq": 0})
        unknown = (await client.until(lambda m: m.get("reply_to") == "u"))[-1]
        assert unknown["type"] == "error"
        assert unknown["code"] == "unknown_run"
    wid = (await a.start("approval", {"message": "Ship it?", "timeout": 60}))["workflow_id"]
    asked = (await a.until(lambda m: m["type"] == "input_request"))[-1]
    bad = await answer(b, asked, "maybe", "bad")
    assert bad["type"] == "error"
    assert bad["code"] == "invalid_input"
    assert bad["workflow_id"] == wid
    ahead = {"type": "subscribe", "id": "ahead", "workflow_id": wid, "since_seq": 99}
    await c.send(ahead)
    refused = (await c.until(lambda m: m.get("reply_to") == "ahead"))[-1]
    assert refused["code"] == "since_seq_ahead"
    # An SDK re-sending its applied answer (same idempotency_key) after a reconnect is acked again.
    keyed = {
        "type": "node_input",
        "workflow_id": wid,
        "node_id": asked["node_id"],
        "request_id": asked["request_id"],
        "data": {"value": "yes"},
        "idempotency_key": "k1",
    }
    for client, id_ in ((b, "k-b"), (c, "k-c")):
        await client.send({**keyed, "id": id_})
        acked = (await client.until(lambda m, i=id_: m.get("reply_to") == i, timeout=DEADLINE))[-1]
        assert acked["type"] == "ack", acked
    events = await finished(a, wid)
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"]["answer"] == "yes"
    assert sum(e["type"] == "input_answered" for e in events) == 1


async def test_a_start_retried_on_another_gateway_finds_the_same_run(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    a, b, c = await clients.one_per_gateway()
    start = {"type": "start_workflow", "workflow": "ticker", "idempotency_key": "order-42"}
    params = {"count": 40, "payload_bytes": 10, "interval_ms": 5}
    await a.send({**start, "id": "s1", "params": params})
    first = (await a.until(lambda m: m.get("reply_to") == "s1", timeout=DEADLINE))[-1]
    assert first["type"] == "workflow_started", first
    assert first["epoch"]
    wid = first["workflow_id"]
    await a.until(lambda m: m.get("workflow_id") == wid and m.get("seq", 0) >= 5, timeout=DEADLINE)
    # The answer was "lost": the client retries through the balancer and lands on B.
    await b.send({**start, "id": "s2", "params": params})
    again = (await b.until(lambda m: m.get("reply_to") == "s2", timeout=DEADLINE))[-1]
    assert again["type"] == "workflow_started"
    assert again["workflow_id"] == wid
    on_a, on_b = await finished(a, wid), await finished(b, wid)
    assert on_b == on_a  # seq 1 again, then everything since: no gap, no second run
    assert_gap_free(on_a)
    await c.send({**start, "id": "s3", "params": {**params, "count": 41}})
    conflict = (await c.until(lambda m: m.get("reply_to") == "s3", timeout=DEADLINE))[-1]
    assert conflict["code"] == "idempotency_conflict"
    with redis_up.client() as admin:
        assert len(admin.keys("graphwire:start:*")) == 1


# -- faults: Redis connections killed, Redis restarted, a gateway cut from Redis --------


async def test_redis_connections_killed_mid_run_lose_and_repeat_nothing(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    a, b, c = await clients.one_per_gateway()
    wid = (await a.start("ticker", {"count": 200, "payload_bytes": 10, "interval_ms": 5}))["workflow_id"]
    for watcher in (b, c):
        await request(watcher, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
    for at in (20, 60, 100):
        await b.until(lambda m, at=at: m.get("workflow_id") == wid and m.get("seq", 0) >= at, timeout=DEADLINE)
        assert redis_up.client_kill_all() >= 3  # at least every gateway's pub/sub connection
    on_a, on_b, on_c = [await finished(x, wid) for x in (a, b, c)]
    assert_gap_free(on_a)
    assert on_b == on_a
    assert on_c == on_a
    assert on_a[-1]["type"] == "workflow_completed"
    await same_as_redis(redis_up, wid, on_a)
    for watcher in (a, b, c):
        await watcher.ping()  # nobody was disconnected


async def test_redis_restarted_mid_run_the_log_is_recreated_and_resumes_say_so(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    a, b, c = await clients.one_per_gateway()
    wid = (await a.start("ticker", {"count": 300, "payload_bytes": 10, "interval_ms": 5}))["workflow_id"]
    first = await request(b, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
    await b.until(lambda m: m.get("workflow_id") == wid and m.get("seq", 0) >= 30, timeout=DEADLINE)
    redis_up.restart()  # no persistence: every key is gone, every connection dropped
    on_a, on_b = await finished(a, wid), await finished(b, wid)
    assert_gap_free(on_a)
    assert on_b == on_a  # the watcher on B saw no hole and no repeat
    await same_as_redis(redis_up, wid, on_a)  # the owner wrote the whole log again
    # A resume naming the lost log's epoch is told, and gets the whole recreated log.
    resumed = await request(
        c, {"type": "subscribe", "id": "r", "workflow_id": wid, "since_seq": 30, "epoch": first["epoch"]}
    )
    assert resumed["recovered"] is False
    assert resumed["epoch"] != first["epoch"]
    assert resumed["snapshot"]["status"] == "completed"
    assert await finished(c, wid) == on_a
    # With the current epoch, the same resume is a plain one.
    again = await request(
        c, {"type": "subscribe", "id": "r2", "workflow_id": wid, "since_seq": 30, "epoch": resumed["epoch"]}
    )
    assert again["recovered"] is True


async def test_a_gateway_cut_from_redis_catches_up_without_a_hole(
    cluster: list[Server], clients: Clients, redis_up: RedisServer, tmp_path: Path
) -> None:
    with RoundRobinBalancer([redis_up.port]) as link:  # D's only way to Redis
        (d,) = start_cluster(tmp_path, 1, f"redis://127.0.0.1:{link.port}/0", env=CLUSTER_ENV)
        try:
            assert ready(d)[0] == 200
            a = (await clients.one_per_gateway())[0]
            before_d = scrape(d)
            watcher = await connect(d.ws())
            clients.open.append(watcher)
            wid = (await a.start("ticker", {"count": 300, "payload_bytes": 10, "interval_ms": 5}))["workflow_id"]
            await request(watcher, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
            await watcher.until(lambda m: m.get("seq", 0) >= 20, timeout=DEADLINE)
            link.set_refusing(True)
            link.cut_all()
            cut_at = events_of(a, wid)[-1]["seq"] if events_of(a, wid) else 0
            # While cut, D says it does not take new work (issue 15's readiness).
            status, body = await wait_for(
                lambda: answer if (answer := ready(d))[0] == 503 else None, "D not ready while cut from Redis"
            )
            assert (status, body["status"], body["reason"]) == (503, "not_ready", "broker_unreachable")
            # The run goes on on A while D cannot hear it.
            await a.until(lambda m: m.get("workflow_id") == wid and m.get("seq", 0) >= cut_at + 100, timeout=DEADLINE)
            link.set_refusing(False)
            await wait_for(lambda: ready(d)[0] == 200, "D ready again once Redis is back")
            on_a, on_d = await finished(a, wid), await finished(watcher, wid)
            assert on_d == on_a
            assert_gap_free(on_a)
            await watcher.ping()  # still connected
            after_d = scrape(d)
        finally:
            stop_cluster([d])
    assert "Traceback" not in d.log(), d.log()
    # The outage was counted, and what D missed while cut was read from the run's stream.
    assert moved(before_d, after_d, "graphwire_broker_errors_total", kind="outage") >= 1
    assert moved(before_d, after_d, "graphwire_broker_gap_repairs_total") >= 1
    # The owner wrote (and published) the run's events in Redis and timed each write.
    assert sum(value(scrape(s), "graphwire_broker_publish_lag_seconds_count") for s in cluster) >= 1


async def test_a_thousand_watchers_over_three_gateways_lose_nothing(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    a = (await clients.one_per_gateway())[0]
    wid = (await a.start("ticker", {"count": 20, "payload_bytes": 10, "wait_for_go": True}))["workflow_id"]
    asked = (await a.until(lambda m: m["type"] == "input_request"))[-1]
    gate = asyncio.Semaphore(100)

    async def watcher(i: int) -> Client:
        async with gate:
            client = await connect(cluster[i % 3].ws())
            await request(client, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
            return client

    watchers = await asyncio.gather(*(watcher(i) for i in range(1000)))
    clients.open.extend(watchers)
    assert (await answer(a, asked, "go", "go"))["type"] == "ack"
    on_a = await finished(a, wid)
    assert_gap_free(on_a)
    got = await asyncio.gather(*(finished(w, wid) for w in watchers))
    lost = sum(len(on_a) - len(events) for events in got)
    assert lost == 0
    assert all(events == on_a for events in got)


# -- ownership and scopes hold across gateways ----------------------------------------


async def test_ownership_and_scopes_hold_across_gateways(redis_url: str, tmp_path: Path) -> None:
    env = {**CLUSTER_ENV, "GRAPHWIRE_AUTH_JWT_SECRET": SECRET}
    servers = start_cluster(tmp_path, 2, redis_url, env=env)
    opened: list[Client] = []

    async def as_user(server: Server, sub: str, scope: str) -> Client:
        client = await connect(f"{server.ws()}?token={token(sub, scope)}")
        opened.append(client)
        return client

    try:
        alice_a = await as_user(servers[0], "alice", "workflows:start")
        wid = (await alice_a.start("approval", {"message": "Ship it?"}))["workflow_id"]
        asked = (await alice_a.until(lambda m: m["type"] == "input_request"))[-1]
        bob_b = await as_user(servers[1], "bob", "workflows:start")
        for frame in (
            {"type": "subscribe", "id": "x1", "workflow_id": wid, "since_seq": 0},
            {"type": "cancel_workflow", "id": "x2", "workflow_id": wid},
        ):
            await bob_b.send(frame)
            refused = (await bob_b.until(lambda m, i=frame["id"]: m.get("reply_to") == i, timeout=DEADLINE))[-1]
            assert refused["type"] == "error", refused
            assert refused["code"] == "forbidden", refused
        assert (await answer(bob_b, asked, "yes", "x3"))["code"] == "forbidden"
        # The same refusal for a run that does not exist: a workflow_id tells bob nothing.
        await bob_b.send({"type": "subscribe", "id": "x4", "workflow_id": "run_nope", "since_seq": 0})
        assert (await bob_b.until(lambda m: m.get("reply_to") == "x4"))[-1]["code"] == "forbidden"
        # A reader with runs:read may watch; alice, on the other gateway, may answer her own run.
        reader_b = await as_user(servers[1], "carol", "runs:read")
        watched = await request(reader_b, {"type": "subscribe", "id": "r", "workflow_id": wid, "since_seq": 0})
        assert watched["snapshot"]["status"] == "waiting"
        alice_b = await as_user(servers[1], "alice", "workflows:start")
        assert (await answer(alice_b, asked, "yes", "mine"))["type"] == "ack"
        events = await finished(reader_b, wid)
        assert events[-1]["type"] == "workflow_completed"
        assert events[-1]["data"]["approved"] is True
    finally:
        for client in opened:
            await client.close()
        stop_cluster(servers)
