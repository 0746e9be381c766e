"""End-to-end: a real ``graphwire serve`` over real sockets, every frame checked against the spec."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets

from harness import Client, Server, assert_gap_free, connect


async def test_data_processing_over_the_wire(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("data_processing", {"data": [3, 4, 5, 6]})
    events = [started, *await client.run_events(started["workflow_id"])]
    assert_gap_free(events)
    assert [e["data"]["current"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    assert events[-1]["data"] == {"count": 4, "sum": 18.0, "mean": 4.5}
    await client.close()


async def test_chat_over_both_endpoints(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("chat", {"message": "stream please"})
    events = [started, *await client.run_events(started["workflow_id"])]
    assert_gap_free(events)
    reply = "".join(e["data"] for e in events if e["type"] == "token")
    assert events[-1]["data"] == {"reply": reply}
    browser = await connect(server.ws("/ws/chat"))
    await browser.send({"type": "message", "content": "stream please"})
    chat_started = await browser.recv()
    chat_events = [chat_started, *await browser.run_events(chat_started["workflow_id"])]
    assert_gap_free(chat_events)
    assert chat_events[-1]["data"] == {"reply": reply}, "the default responder is deterministic"
    await client.close()
    await browser.close()


async def test_approval_answered_by_another_client(server: Server) -> None:
    starter = await connect(server.ws())
    approver = await connect(server.ws())
    started = await starter.start("approval", {"message": "Release v2?"})
    wid = started["workflow_id"]
    request = (await starter.until(lambda m: m["type"] == "input_request"))[-1]
    await approver.send({"type": "subscribe", "id": "sub", "workflow_id": wid, "since_seq": request["seq"]})
    subscribed = await approver.recv()
    assert subscribed["snapshot"]["pending_inputs"][0]["request_id"] == request["request_id"]
    answer = {
        "type": "node_input",
        "workflow_id": wid,
        "node_id": request["node_id"],
        "request_id": request["request_id"],
        "data": {"value": "yes"},
    }
    await approver.send({**answer, "id": "first"})
    await starter.send({**answer, "id": "second"})
    second = await starter.until(lambda m: m.get("reply_to") == "second")
    assert second[-1]["code"] == "input_already_answered"
    # The run may finish before that reply is read: keep what was read on the way.
    events = [m for m in second if m.get("workflow_id") == wid and "seq" in m]
    if not any(m["type"] == "workflow_completed" for m in events):
        events += await starter.run_events(wid)
    assert events[-1]["data"] == {"approved": True, "answer": "yes"}
    watched = await approver.run_events(wid)
    assert watched[-1] == events[-1]
    for client in (starter, approver):
        await client.ping()
        await client.close()


async def test_approval_timeout(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("approval", {"message": "fast?", "timeout": 0.2})
    events = await client.run_events(started["workflow_id"])
    assert events[-1]["error"]["code"] == "input_timeout"
    await client.close()


async def test_many_concurrent_clients(server: Server) -> None:
    clients = await asyncio.gather(*(connect(server.ws()) for _ in range(30)))

    async def one(i: int, client: Client) -> dict[str, Any]:
        data = list(range(i + 1))
        started = await client.start("data_processing", {"data": data}, f"c{i}")
        events = [started, *await client.run_events(started["workflow_id"])]
        assert_gap_free(events)
        return dict(events[-1]["data"])

    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    assert [r["count"] for r in results] == list(range(1, 31))
    assert len({c.hello["client_id"] for c in clients}) == 30
    await asyncio.gather(*(c.close() for c in clients))


async def test_disconnect_mid_run_leaves_run_and_others_untouched(server: Server) -> None:
    starter = await connect(server.ws())
    watcher = await connect(server.ws())
    started = await starter.start("tick", {"count": 40, "delay_ms": 10})
    wid = started["workflow_id"]
    await watcher.send({"type": "subscribe", "workflow_id": wid, "since_seq": 0})
    seen = await starter.until(lambda m: m["type"] == "node_event" and m["data"]["i"] == 5)
    last_seq = max(m["seq"] for m in seen if m.get("workflow_id") == wid)
    starter.ws.transport.abort()  # no close handshake: the network just went away
    watcher_events = await watcher.until(lambda m: m.get("workflow_id") == wid and m["type"] == "workflow_completed")
    run = [m for m in watcher_events if m.get("workflow_id") == wid and "seq" in m]
    assert_gap_free(run)
    assert run[-1]["data"] == {"ticks": 40}
    # The starter comes back and resumes: exactly the events after what it had.
    back = await connect(server.ws())
    await back.send({"type": "subscribe", "id": "r", "workflow_id": wid, "since_seq": last_seq})
    subscribed = await back.recv()
    assert (subscribed["snapshot"]["status"], subscribed["log_truncated"]) == ("completed", False)
    resumed = await back.run_events(wid)
    assert_gap_free(resumed, first=last_seq + 1)
    assert [m["seq"] for m in run if m["seq"] > last_seq] == [m["seq"] for m in resumed]
    assert server.get_json("/ws/health")["status"] == "ok"
    await watcher.close()
    await back.close()


async def test_cancel_over_the_wire(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("tick", {"count": 1000, "delay_ms": 5})
    await client.until(lambda m: m["type"] == "node_event")
    await client.send({"type": "cancel_workflow", "id": "x", "workflow_id": started["workflow_id"]})
    events = await client.run_events(started["workflow_id"])
    assert events[-1]["type"] == "workflow_cancelled"
    await client.close()


BAD = [
    "{",
    "null",
    '{"type": 5}',
    '{"type": "unknown", "id": "u"}',
    '{"type": "start_workflow", "id": "s", "workflow": "data_processing", "params": {"data": []}}',
    '{"type": "start_workflow", "id": "s2", "workflow": "nope"}',
    '{"type": "node_input", "id": "n", "workflow_id": "run_x", "node_id": "a", "data": {}}',
    '{"type": "subscribe", "id": "v", "workflow_id": "run_x"}',
    '{"type": "join_group", "id": "g", "group": ""}',
    "[" * 100_000 + "]" * 100_000,
    '{"type": "ping", "id": "' + "i" * 65 + '"}',
    '{"type": "ping", "n": 1' + "0" * 5000 + "}",
]


async def test_bad_input_batch_over_the_wire(server: Server) -> None:
    client = await connect(server.ws())
    other = await connect(server.ws())
    started = await other.start("tick", {"count": 20, "delay_ms": 5})
    for text in BAD:
        await client.ws.send(text)
        error = await client.recv()
        assert error["type"] == "error", (text[:60], error)
        await client.ping()
    await client.ws.send(b"\x00binary")
    assert (await client.recv())["code"] == "binary_not_supported"
    await client.ping()
    events = await other.run_events(started["workflow_id"])
    assert_gap_free([started, *events])
    assert server.get_json("/ws/health")["status"] == "ok"
    await client.close()
    await other.close()


async def test_frame_above_max_message_size_closes_1009(server: Server) -> None:
    client = await connect(server.ws())
    await client.ws.send(json.dumps({"type": "ping", "pad": "x" * 1_100_000}))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert server.get_json("/ws/health")["status"] == "ok"


async def test_group_broadcast_reaches_members_only(server: Server) -> None:
    member = await connect(server.ws())
    outsider = await connect(server.ws())
    await member.send({"type": "join_group", "id": "j", "group": "night-shift"})
    assert (await member.recv())["reply_to"] == "j"
    delivered = await asyncio.to_thread(
        server.post_json, "/api/broadcast", {"group": "night-shift", "message": "db failover", "level": "critical"}
    )
    assert delivered == {"delivered": 1}
    alert = await member.recv()
    assert (alert["type"], alert["message"], alert["level"]) == ("system_alert", "db failover", "critical")
    await outsider.ping()
    assert not outsider.pending
    await member.close()
    await outsider.close()


def test_http_endpoints(server: Server) -> None:
    metrics = server.get_json("/ws/metrics")
    assert {"active_connections", "total_messages", "uptime", "clients"} <= set(metrics)
    health = server.get_json("/ws/health")
    assert {"data_processing", "chat", "approval"} <= set(health["workflows"])
