"""Fast in-process checks of the gateway's protocol behaviour (Starlette TestClient)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from inprocess import Frames

Connect = Callable[..., Frames]


def start(frames: Frames, workflow: str, params: dict[str, Any], id_: str = "s1") -> dict[str, Any]:
    frames.send({"type": "start_workflow", "id": id_, "workflow": workflow, "params": params})
    started = frames.recv()
    assert started["type"] == "workflow_started"
    assert started["seq"] == 1
    assert started["reply_to"] == id_
    return started


def run_events(frames: Frames, workflow_id: str) -> list[dict[str, Any]]:
    terminal = {"workflow_completed", "workflow_failed", "workflow_cancelled"}
    return [
        m
        for m in frames.until(lambda m: m.get("workflow_id") == workflow_id and m["type"] in terminal)
        if m.get("workflow_id") == workflow_id
    ]


def test_connected_then_ping(connect: Connect) -> None:
    frames = connect()
    frames.ping("first")
    frames.send({"type": "ping"})
    assert "reply_to" not in frames.recv()


def test_data_processing_end_to_end(connect: Connect) -> None:
    frames = connect()
    started = start(frames, "data_processing", {"data": [1, 2, 3, 4]})
    events = run_events(frames, started["workflow_id"])
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(2, len(events) + 2))
    progress = [e for e in events if e["type"] == "progress"]
    assert [(p["data"]["current"], p["data"]["total"], p["data"]["percent"]) for p in progress] == [
        (1, 4, 25.0),
        (2, 4, 50.0),
        (3, 4, 75.0),
        (4, 4, 100.0),
    ]
    stages = [e["node_id"] for e in events if e["type"] == "node_update" and e["data"]["status"] == "running"]
    assert stages == ["load", "transform", "aggregate"]
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"] == {"count": 4, "sum": 10.0, "mean": 2.5}


def test_chat_streams_tokens_then_full_reply(connect: Connect) -> None:
    frames = connect()
    started = start(frames, "chat", {"message": "hello graph"})
    events = run_events(frames, started["workflow_id"])
    tokens = "".join(e["data"] for e in events if e["type"] == "token")
    assert len([e for e in events if e["type"] == "token"]) > 3
    assert events[-1]["data"] == {"reply": tokens}
    assert "hello graph" in tokens


@pytest.mark.parametrize(("answer", "approved"), [("yes", True), ("no", False)])
def test_approval_routes_on_answer(connect: Connect, answer: str, approved: bool) -> None:
    frames = connect()
    started = start(frames, "approval", {"message": "Ship it?"})
    wid = started["workflow_id"]
    request = frames.until_type("input_request")[-1]
    assert request["options"] == ["yes", "no"]
    assert request["prompt"] == "Ship it?"
    frames.send(
        {
            "type": "node_input",
            "id": "n1",
            "workflow_id": wid,
            "node_id": request["node_id"],
            "request_id": request["request_id"],
            "data": {"value": answer},
        }
    )
    events = run_events(frames, wid)
    assert events[-1]["data"] == {"approved": approved, "answer": answer}
    # The same request again is refused, and the socket lives on.
    frames.send(
        {
            "type": "node_input",
            "id": "n2",
            "workflow_id": wid,
            "node_id": request["node_id"],
            "request_id": request["request_id"],
            "data": {"value": answer},
        }
    )
    error = frames.until_type("error")[-1]
    assert error["code"] == "input_already_answered"
    assert error["reply_to"] == "n2"
    frames.ping()


def test_approval_timeout_fails_with_input_timeout(connect: Connect) -> None:
    frames = connect()
    started = start(frames, "approval", {"message": "Quick?", "timeout": 0.05})
    events = run_events(frames, started["workflow_id"])
    assert events[-1]["type"] == "workflow_failed"
    assert events[-1]["error"]["code"] == "input_timeout"


def test_answer_not_in_options_is_refused_and_request_stays_open(connect: Connect) -> None:
    frames = connect()
    wid = start(frames, "approval", {"message": "Pick"})["workflow_id"]
    request = frames.until_type("input_request")[-1]
    base = {"type": "node_input", "workflow_id": wid, "node_id": "approve", "request_id": request["request_id"]}
    frames.send({**base, "id": "bad", "data": {"value": "maybe"}})
    error = frames.until_type("error")[-1]
    assert (error["code"], error["path"], error["reply_to"]) == ("invalid_input", "data.value", "bad")
    frames.send({**base, "id": "good", "data": {"value": "yes"}})
    assert run_events(frames, wid)[-1]["data"]["approved"] is True


BAD_FRAMES: list[tuple[str, str, str | None]] = [
    ("not json", "invalid_json", None),
    ("[1, 2]", "not_an_object", None),
    ('{"no_type": 1}', "unknown_type", "type"),
    ('{"type": "launch_missiles", "id": "x1"}', "unknown_type", "type"),
    ('{"type": "start_workflow", "id": "x2"}', "invalid_message", "workflow"),
    ('{"type": "start_workflow", "id": "x3", "workflow": "chat", "extra": 1}', "invalid_message", "extra"),
    ('{"type": "subscribe", "id": "x4", "since_seq": -1, "workflow_id": "r"}', "invalid_message", "since_seq"),
    ('{"type": "start_workflow", "id": "x5", "workflow": "nope"}', "unknown_workflow", "workflow"),
    (
        '{"type": "start_workflow", "id": "x6", "workflow": "data_processing", "params": {}}',
        "invalid_params",
        "params.data",
    ),
    (
        '{"type": "start_workflow", "id": "x7", "workflow": "data_processing", "params": {"data": ["a"]}}',
        "invalid_params",
        "params.data.0",
    ),
    ('{"type": "cancel_workflow", "id": "x8", "workflow_id": "run_missing"}', "unknown_run", "workflow_id"),
    ('{"type": "subscribe", "id": "x9", "workflow_id": "run_missing"}', "unknown_run", "workflow_id"),
    (
        '{"type": "node_input", "id": "y1", "workflow_id": "run_missing", "node_id": "a", "data": {}}',
        "unknown_run",
        "workflow_id",
    ),
    ('{"type": "ping", "id": ""}', "invalid_message", "id"),
]


@pytest.mark.parametrize(("text", "code", "path"), BAD_FRAMES)
def test_bad_input_gets_typed_error_and_socket_survives(
    connect: Connect, text: str, code: str, path: str | None
) -> None:
    frames = connect()
    frames.ws.send_text(text)
    error = frames.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error.get("path") == path
    if '"id": "' in text and '"id": ""' not in text:
        assert error["reply_to"] == text.split('"id": "')[1].split('"')[0]
    else:
        assert "reply_to" not in error
    frames.ping()


def test_binary_frame_is_refused(connect: Connect) -> None:
    frames = connect()
    frames.ws.send_bytes(b"\x00\x01")
    assert frames.recv()["code"] == "binary_not_supported"
    frames.ping()


def test_oversized_frame_closes_with_1009(client: TestClient) -> None:
    with client.websocket_connect("/ws/workflow") as ws:
        ws.receive_json()
        ws.send_text('{"type": "ping", "pad": "' + "x" * 1_100_000 + '"}')
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1009


def test_node_input_to_node_that_is_not_waiting(connect: Connect) -> None:
    frames = connect()
    wid = start(frames, "tick", {"count": 50, "delay_ms": 5})["workflow_id"]
    frames.send({"type": "node_input", "id": "q", "workflow_id": wid, "node_id": "tick", "data": {"value": 1}})
    error = frames.until_type("error")[-1]
    assert (error["code"], error["reply_to"]) == ("no_pending_input", "q")
    frames.send(
        {"type": "node_input", "id": "r", "workflow_id": wid, "node_id": "tick", "request_id": "req_nope", "data": {}}
    )
    assert frames.until_type("error")[-1]["code"] == "unknown_request"
    assert run_events(frames, wid)[-1]["type"] == "workflow_completed"


def test_node_exception_fails_only_its_run(connect: Connect) -> None:
    frames = connect()
    boom = start(frames, "boom", {"message": "bad data"}, "b")["workflow_id"]
    events = run_events(frames, boom)
    assert [e["type"] for e in events][-3:] == ["node_event", "node_update", "workflow_failed"]
    assert events[-1]["error"]["code"] == "node_error"
    assert "bad data" in events[-1]["error"]["message"]
    assert "Traceback" not in events[-1]["error"]["message"]
    ok = start(frames, "data_processing", {"data": [2]}, "d")["workflow_id"]
    assert run_events(frames, ok)[-1]["data"]["mean"] == 2.0


def test_cancel_ends_run_with_workflow_cancelled(connect: Connect) -> None:
    frames = connect()
    wid = start(frames, "tick", {"count": 1000, "delay_ms": 5})["workflow_id"]
    frames.until(lambda m: m["type"] == "node_event")
    frames.send({"type": "cancel_workflow", "id": "c", "workflow_id": wid})
    events = frames.until_type("workflow_cancelled")
    assert any(m["type"] == "ack" and m["reply_to"] == "c" for m in events)
    frames.send({"type": "cancel_workflow", "id": "c2", "workflow_id": wid})
    assert frames.until_type("error")[-1]["code"] == "run_finished"
    frames.ping()


def test_subscribe_since_seq_replays_exactly_then_live(connect: Connect) -> None:
    starter = connect()
    wid = start(starter, "approval", {"message": "ok?"})["workflow_id"]
    request = starter.until_type("input_request")[-1]
    watcher = connect()
    watcher.send({"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 1})
    subscribed = watcher.recv()
    assert subscribed["type"] == "subscribed"
    assert subscribed["reply_to"] == "w"
    snapshot = subscribed["snapshot"]
    assert snapshot["status"] == "waiting"
    assert snapshot["last_seq"] == request["seq"]
    assert [p["request_id"] for p in snapshot["pending_inputs"]] == [request["request_id"]]
    replay = [watcher.recv() for _ in range(request["seq"] - 1)]
    assert [m["seq"] for m in replay] == list(range(2, request["seq"] + 1))
    starter.send(
        {
            "type": "node_input",
            "workflow_id": wid,
            "node_id": "approve",
            "request_id": request["request_id"],
            "data": {"value": "no"},
        }
    )
    live = run_events(watcher, wid)
    assert [m["seq"] for m in live] == list(range(request["seq"] + 1, live[-1]["seq"] + 1))
    assert live[0]["type"] == "input_answered"
    assert live[-1]["data"] == {"approved": False, "answer": "no"}
    # A late joiner with since_seq=0 gets the whole log, seq 1 first.
    late = connect()
    late.send({"type": "subscribe", "workflow_id": wid, "since_seq": 0})
    assert late.recv()["snapshot"]["status"] == "completed"
    whole = run_events(late, wid)
    assert [m["seq"] for m in whole] == list(range(1, live[-1]["seq"] + 1))


def test_groups_receive_broadcast_only_for_members(client: TestClient, connect: Connect) -> None:
    member, outsider = connect(), connect()
    member.send({"type": "join_group", "id": "j", "group": "ops"})
    assert member.recv() == {"type": "ack", "reply_to": "j", "command": "join_group"}
    response = client.post("/api/broadcast", json={"group": "ops", "message": "deploy at 5"})
    assert response.json() == {"delivered": 1}
    alert = member.recv()
    assert (alert["type"], alert["group"], alert["message"]) == ("system_alert", "ops", "deploy at 5")
    outsider.ping()  # the pong is the next frame: no alert reached the outsider
    member.send({"type": "leave_group", "group": "ops"})
    assert member.recv()["command"] == "leave_group"
    assert client.post("/api/broadcast", json={"group": "ops", "message": "again"}).json() == {"delivered": 0}


def test_topics_subscribe_and_publish(client: TestClient, connect: Connect) -> None:
    frames = connect()
    frames.send({"type": "subscribe", "id": "t", "topics": ["news"]})
    assert frames.recv() == {"type": "subscribed", "reply_to": "t", "topics": ["news"]}
    assert client.post("/api/publish", json={"topic": "news", "data": {"v": 2}}).json() == {"delivered": 1}
    message = frames.recv()
    assert (message["type"], message["topic"], message["data"]) == ("topic_message", "news", {"v": 2})


def test_idempotency_key_returns_same_run(connect: Connect) -> None:
    frames = connect()
    base = {"type": "start_workflow", "workflow": "tick", "params": {"count": 3, "delay_ms": 1}, "idempotency_key": "k"}
    frames.send({**base, "id": "a"})
    first = frames.until_type("workflow_started")[-1]
    frames.send({**base, "id": "b"})
    second = frames.until(lambda m: m["type"] == "workflow_started" and m.get("reply_to") == "b")[-1]
    assert second["workflow_id"] == first["workflow_id"]
    frames.send({**base, "id": "c", "params": {"count": 4}})
    error = frames.until_type("error")[-1]
    assert (error["code"], error["reply_to"]) == ("idempotency_conflict", "c")


def test_chat_endpoint_speaks_the_seed_shape(connect: Connect) -> None:
    frames = connect("/ws/chat")
    frames.send({"type": "message", "content": "hi there"})
    started = frames.recv()
    assert started["type"] == "workflow_started"
    assert started["data"] == {"workflow_id": started["workflow_id"], "workflow": "chat", "epoch": started["epoch"]}
    events = run_events(frames, started["workflow_id"])
    assert all("data" in e for e in events), "every chat frame carries the seed's data field"
    tokens = [e["data"] for e in events if e["type"] == "token"]
    assert all(isinstance(t, str) for t in tokens)
    reply = events[-1]["data"]["reply"]
    assert "hi there" in reply
    assert reply == "".join(tokens)
    frames.send({"type": "start_workflow", "workflow": "chat"})
    error = frames.recv()
    assert error["code"] == error["data"]["code"] == "unknown_type"
    frames.send({"type": "message", "content": ""})
    error = frames.recv()
    assert (error["code"], error["path"]) == ("invalid_message", "content")
    frames.ping()


def test_http_endpoints(client: TestClient, connect: Connect) -> None:
    connect()
    health = client.get("/ws/health").json()
    assert health["status"] == "ok"
    assert health["active_connections"] == 1
    metrics = client.get("/ws/metrics").json()
    assert set(metrics) >= {"active_connections", "total_messages", "uptime", "clients"}
    assert metrics["active_connections"] == 1
    spec = client.get("/asyncapi.yaml")
    assert spec.headers["content-type"].startswith("application/yaml")
    assert "asyncapi: 3.0.0" in spec.text


def test_ticker_waits_for_go_then_ticks(connect: Connect) -> None:
    frames = connect()
    wid = start(frames, "ticker", {"count": 5, "payload_bytes": 7, "wait_for_go": True})["workflow_id"]
    request = frames.until_type("input_request")[-1]
    assert request["options"] == ["go"]
    watcher = connect()
    watcher.send({"type": "subscribe", "workflow_id": wid, "since_seq": request["seq"]})
    assert watcher.recv()["snapshot"]["status"] == "waiting"
    frames.send(
        {
            "type": "node_input",
            "workflow_id": wid,
            "node_id": "tick",
            "request_id": request["request_id"],
            "data": {"value": "go"},
        }
    )
    for reader in (frames, watcher):
        ticks = [m["data"] for m in run_events(reader, wid) if m["type"] == "node_event"]
        assert [t["i"] for t in ticks] == [1, 2, 3, 4, 5]
        assert all(t["payload"] == "x" * 7 and t["sent_at"] > 0 for t in ticks)


def test_repeated_start_replays_what_the_run_logged(connect: Connect) -> None:
    """A retry with the same idempotency_key after the run moved on misses nothing."""
    first = connect()
    frame = {
        "type": "start_workflow",
        "workflow": "data_processing",
        "params": {"data": [1, 2, 3]},
        "idempotency_key": "k-replay",
    }
    first.send({**frame, "id": "a"})
    wid = first.until_type("workflow_started")[-1]["workflow_id"]
    logged = run_events(first, wid)
    retry = connect()
    retry.send({**frame, "id": "b"})
    started = retry.recv()
    assert (started["type"], started["seq"], started["reply_to"]) == ("workflow_started", 1, "b")
    assert run_events(retry, wid) == logged


def test_subscribe_naming_nothing_lists_current_topics(connect: Connect) -> None:
    frames = connect()
    frames.send({"type": "subscribe", "id": "t", "topics": ["a"]})
    frames.recv()
    frames.send({"type": "subscribe", "id": "n"})
    assert frames.recv() == {"type": "subscribed", "reply_to": "n", "topics": ["a"]}


def test_a_workflow_check_refuses_params_with_a_typed_error_and_nothing_starts(connect: Connect) -> None:
    frames = connect()
    frames.send({"type": "start_workflow", "id": "odd", "workflow": "even_tick", "params": {"count": 3}})
    refused = frames.recv()
    assert (refused["type"], refused["code"], refused["path"], refused["reply_to"]) == (
        "error",
        "invalid_params",
        "params.count",
        "odd",
    )
    assert refused["message"] == "params.count: must be even"
    frames.ping("still-here")  # the socket goes on; no run event came before the pong
    started = start(frames, "even_tick", {"count": 2, "delay_ms": 0}, id_="even")
    assert run_events(frames, started["workflow_id"])[-1]["type"] == "workflow_completed"


def test_data_whose_sum_overflows_is_refused_at_start(connect: Connect) -> None:
    frames = connect()
    frames.send(
        {"type": "start_workflow", "id": "big", "workflow": "data_processing", "params": {"data": [1e308, 1e308]}}
    )
    refused = frames.recv()
    assert (refused["code"], refused["path"]) == ("invalid_params", "params.data")
