"""Runs that survive their gateway (issue 14): 3 real gateways on a real Redis, owners killed.

The owner of a run is killed with SIGKILL (or stopped with SIGTERM) while watchers on the
other gateways stream it: another gateway takes the run over once its lease lapses (at
once on SIGTERM), resumes it from its last checkpoint, and the watchers see it go on
with ``seq`` gap-free, one ``run_resumed``, and no finished node run twice. Every frame
is checked against the spec (``harness.Client``); every run is compared with its Redis log.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import DEADLINE, fresh_cluster, request
from harness import TERMINAL, Client, Server, assert_gap_free, connect
from redis_proc import RedisServer

# Short leases, so a dead owner's runs move within about a second.
DURABLE_ENV = {"GRAPHWIRE_REDIS_TIMEOUT": "1", "GRAPHWIRE_RUN_LEASE_SECONDS": "1", "GRAPHWIRE_SHUTDOWN_GRACE": "5"}


@pytest.fixture
def trio(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Server]]:
    """Three fresh gateways (the tests kill some)."""
    with fresh_cluster(redis_server, tmp_path, 3, DURABLE_ENV) as servers:
        yield servers


def run_events(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for frame in client.frames:
        messages.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    events = [dict(m) for m in messages if m.get("workflow_id") == workflow_id and "seq" in m]
    for event in events:
        event.pop("reply_to", None)
    return events


async def until_done(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    if not any(e["type"] in TERMINAL for e in run_events(client, workflow_id)):
        await client.until(lambda m: m.get("workflow_id") == workflow_id and m["type"] in TERMINAL, timeout=DEADLINE)
    return run_events(client, workflow_id)


def redis_log(redis_server: RedisServer, workflow_id: str) -> list[dict[str, Any]]:
    with redis_server.client() as admin:
        return [json.loads(f[b"f"]) for _id, f in admin.xrange(f"graphwire:run:{workflow_id}:log")]


def stages(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["name"] for e in events if e["type"] == "node_event" and e["event"] == "stage"]


async def watchers(servers: list[Server], workflow_id: str) -> list[Client]:
    out = []
    for server in servers:
        client = await connect(server.ws())
        await request(client, {"type": "subscribe", "id": "w", "workflow_id": workflow_id, "since_seq": 0})
        out.append(client)
    return out


async def test_the_owner_killed_mid_run_another_gateway_finishes_it(
    trio: list[Server], redis_server: RedisServer
) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wid = (await starter.start("relay", {"ticks": 12, "delay_ms": 25}))["workflow_id"]
    await starter.close()  # the run goes on without its starter
    b, c = await watchers(others, wid)
    await b.until(lambda m: m.get("type") == "node_event" and m["data"].get("name") == "second", timeout=DEADLINE)
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait()
    on_b, on_c = await until_done(b, wid), await until_done(c, wid)
    assert_gap_free(on_b)
    assert on_c == on_b  # 0 lost, 0 duplicated, on both gateways
    resumed = [e for e in on_b if e["type"] == "run_resumed"]
    assert len(resumed) == 1
    # The checkpoint was taken before `second`: `first` never runs again, `second` does.
    assert stages(on_b) == ["first", "second", "second", "third"]
    assert on_b[resumed[0]["from_seq"]]["type"] == "node_update"  # `second` starting, after the checkpoint
    assert on_b[-1]["type"] == "workflow_completed"
    assert on_b[-1]["data"] == {"done": ["first", "second", "third"]}
    assert redis_log(redis_server, wid) == on_b
    for client in (b, c):
        await client.close()


async def test_an_answer_sent_while_nobody_holds_the_run_is_applied_once(
    trio: list[Server], redis_server: RedisServer
) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wid = (await starter.start("relay_ask", {"ticks": 2, "delay_ms": 5}))["workflow_id"]
    await starter.close()
    (b,) = await watchers(others[:1], wid)
    asked = (await b.until(lambda m: m["type"] == "input_request", timeout=DEADLINE))[-1]
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait()
    # Sent during the gap: it waits in the run's inbox for the gateway that takes the run over.
    await b.send(
        {
            "type": "node_input",
            "id": "yes",
            "workflow_id": wid,
            "node_id": asked["node_id"],
            "request_id": asked["request_id"],
            "data": {"value": "yes"},
            "idempotency_key": "answer-1",
        }
    )
    answered = (await b.until(lambda m: m.get("reply_to") == "yes", timeout=DEADLINE))[-1]
    assert answered["type"] == "ack", answered
    events = await until_done(b, wid)
    assert_gap_free(events)
    assert [e["request_id"] for e in events if e["type"] == "input_request"] == [asked["request_id"]]
    assert [e["request_id"] for e in events if e["type"] == "input_answered"] == [asked["request_id"]]
    assert events[-1]["data"] == {"done": ["first", "ask", "second"]}
    assert redis_log(redis_server, wid) == events
    await b.close()


async def test_sigterm_hands_ten_runs_over_at_once(trio: list[Server], redis_server: RedisServer) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wids = []
    for i in range(10):
        wids.append((await starter.start("relay", {"ticks": 30, "delay_ms": 20}, id_=f"s{i}"))["workflow_id"])
    await starter.close()
    clients = [await connect(others[i % 2].ws()) for i in range(10)]
    for client, wid in zip(clients, wids, strict=True):
        await request(client, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
    await clients[0].until(lambda m: m.get("type") == "node_event" and m["data"].get("i") == 5, timeout=DEADLINE)
    owner.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal it handled once its shutdown is done.
    assert await asyncio.to_thread(owner.process.wait, 15) in (0, -signal.SIGTERM)
    assert "handed over" in owner.log()
    for client, wid in zip(clients, wids, strict=True):
        events = await until_done(client, wid)
        assert_gap_free(events)
        assert events[-1]["type"] == "workflow_completed", json.dumps(events[-4:])
        assert sum(e["type"] == "run_resumed" for e in events) == 1
        assert not any(e["type"] == "workflow_failed" for e in events)
        assert redis_log(redis_server, wid) == events
        await client.close()
