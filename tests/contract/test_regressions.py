"""Regression tests: the minimal frame of every bug the contract fuzzers found, over a real socket.

Each test names the frame hypothesis shrank to and what the spec says must happen.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract.catalog import SPEC
from contract.frames import NESTING_LIMIT, judge
from contract.oracle import TERMINAL
from contract.wire import connected
from graphwire import Settings, WorkflowRegistry, create_app, register_builtin_workflows
from graphwire_codegen import schema_validator
from harness import Server

CLIENT_MESSAGE = schema_validator(SPEC, "ClientMessage")


async def answer_to(server: Server, frame: str, channel: str = "workflow") -> dict[str, Any]:
    async with connected(server, channel) as client:
        await client.send_text(frame)
        seen = await client.barrier()
        assert len(seen) == 1, seen
        answer: dict[str, Any] = seen[0]
        return answer


# The gateway accepted explicit nulls where the spec's schema has no null: an optional
# field may be left out, not sent as null (found by test_invalid_message_gets_a_schema_error).
NULL_FRAMES = [
    ('{"id": null, "type": "ping"}', "id"),
    ('{"id": null, "type": "unsubscribe"}', "id"),
    ('{"group": "0", "id": null, "type": "leave_group"}', "id"),
    ('{"since_seq": null, "type": "subscribe", "topics": ["0"]}', "since_seq"),
    ('{"topics": null, "type": "subscribe", "id": "0", "workflow_id": "0"}', "topics"),
]


@pytest.mark.parametrize(("frame", "path"), NULL_FRAMES)
async def test_explicit_null_is_refused(contract_server: Server, frame: str, path: str) -> None:
    assert not CLIENT_MESSAGE.is_valid(json.loads(frame))
    answer = await answer_to(contract_server, frame)
    assert (answer["type"], answer["code"], answer["path"]) == ("error", "invalid_message", path)


async def test_explicit_null_is_refused_on_chat(contract_server: Server) -> None:
    answer = await answer_to(contract_server, '{"content": "0", "id": null, "type": "message"}', "chat")
    assert (answer["type"], answer["code"], answer["path"]) == ("error", "invalid_message", "id")


# The gateway coerced a string or a boolean into an integer (pydantic's lax mode), where
# the spec says `integer`: "5" and true are not integers.
@pytest.mark.parametrize("since_seq", ['"5"', "true"])
async def test_integer_field_refuses_strings_and_booleans(contract_server: Server, since_seq: str) -> None:
    frame = f'{{"type": "subscribe", "id": "s", "workflow_id": "0", "since_seq": {since_seq}}}'
    answer = await answer_to(contract_server, frame)
    assert (answer["code"], answer["path"], answer["reply_to"]) == ("invalid_message", "since_seq", "s")


# JSON Schema's `integer` has no size limit and counts 5.0 as an integer; the gateway
# refused 2**64 (it went through a double and past i64) (found by
# test_valid_message_gets_its_spec_reply[workflow:subscribe]). Neither frame breaks the
# schema, so the answer is the semantic one: no such run.
@pytest.mark.parametrize("since_seq", ["18446744073709551616", "5.0", "1e19"])
async def test_integer_field_accepts_big_and_integral_numbers(contract_server: Server, since_seq: str) -> None:
    frame = f'{{"type": "subscribe", "id": "s", "workflow_id": "0", "since_seq": {since_seq}}}'
    assert CLIENT_MESSAGE.is_valid(json.loads(frame))
    answer = await answer_to(contract_server, frame)
    assert (answer["code"], answer["reply_to"]) == ("unknown_run", "s")


# A since_seq above the run's last seq was answered `subscribed` and then nothing came,
# not even live events (issue 10): the connection's view started past everything the run
# would ever log. It is refused with `since_seq_ahead` now, and nothing is attached.
@pytest.mark.parametrize("since_seq", [2**64, 10_000])
async def test_since_seq_above_the_runs_last_seq_is_refused(contract_server: Server, since_seq: int) -> None:
    async with connected(contract_server) as client:
        started = await client.request(
            {"type": "start_workflow", "workflow": "tick", "params": {"count": 3, "delay_ms": 50}}
        )
        wid = started["workflow_id"]
        await client.request({"type": "unsubscribe", "workflow_id": wid})
        refused = await client.request({"type": "subscribe", "workflow_id": wid, "since_seq": since_seq})
        assert (refused["type"], refused["code"], refused["path"]) == ("error", "since_seq_ahead", "since_seq")
        # Nothing was attached: a valid resume afterwards gets the whole log, then live events.
        subscribed = await client.request({"type": "subscribe", "workflow_id": wid, "since_seq": 1})
        assert subscribed["type"] == "subscribed", subscribed
        seen = [subscribed]
        while not any(m.get("workflow_id") == wid and m["type"] in TERMINAL for m in seen):
            seen += await client.barrier()
        seqs = [m["seq"] for m in seen if m.get("workflow_id") == wid and "seq" in m]
        assert seqs == list(range(2, 2 + len(seqs)))


# JSON null for an optional workflow param was accepted against the spec, and the run then
# failed with a TypeError (`node_error`). The params schemas have no null: it is refused.
@pytest.mark.parametrize(
    ("workflow", "params", "path"),
    [
        ("data_processing", {"data": [1, 2], "delay_ms": None}, "params.delay_ms"),
        ("chat", {"message": "hi", "delay_ms": None}, "params.delay_ms"),
        ("approval", {"message": "ok?", "timeout": None}, "params.timeout"),
        ("ticker", {"count": None}, "params.count"),
    ],
)
async def test_null_params_get_invalid_params_with_the_path(
    contract_server: Server, workflow: str, params: dict[str, Any], path: str
) -> None:
    async with connected(contract_server) as client:
        answer = await client.request({"type": "start_workflow", "workflow": workflow, "params": params})
        assert (answer["type"], answer["code"], answer["path"]) == ("error", "invalid_params", path), answer


# A `type` nested about 1,000 levels deep made the unknown-type message's repr recurse out:
# `internal_error`, and a traceback logged per frame. Deep nesting anywhere is `invalid_message`.
@pytest.mark.parametrize("where", ["type", "id", "params"])
async def test_deep_nesting_anywhere_is_invalid_message(contract_server: Server, where: str) -> None:
    deep = "[" * 1000 + "]" * 1000
    frame = {"type": '"start_workflow"', "workflow": '"chat"', where: deep}
    text = "{" + ", ".join(f'"{k}": {v}' for k, v in frame.items()) + "}"
    logged = len(contract_server.log())
    answer = await answer_to(contract_server, text)
    assert (answer["type"], answer["code"]) == ("error", "invalid_message"), answer
    assert "Traceback" not in contract_server.log()[logged:], "client input must never log a traceback"


def _nested(depth: int) -> str:
    """``{"value": "yes", "n": {"n": {...}}}`` with ``depth`` objects below the top, as JSON text."""
    return '{"value": "yes", "n": ' + '{"n": ' * (depth - 1) + "{}" + "}" * (depth - 1) + "}"


def _depth(value: Any) -> int:
    levels = 0
    while isinstance(value, dict) and "n" in value:
        value, levels = value["n"], levels + 1
    return levels


# An answer nested deeper than the gateway can serialise again was taken (the request
# closed, the node resumed), then failed while building `input_answered`: the client got
# `internal_error` and no watcher ever learnt that the request was answered. Minimal
# frame: a `node_input` whose `data` nests 300 objects deep. Now a frame may nest
# NESTING_LIMIT levels: an answer within it is taken and echoed intact in
# `input_answered`, a deeper one is refused before any command runs (the request stays open).
@pytest.mark.parametrize("depth", [100, 126, 127, 150, 199, 200, 254, 255, 300, 1000, 1100])
async def test_deep_answer_is_refused_or_echoed_never_half_taken(contract_server: Server, depth: int) -> None:
    async with connected(contract_server) as client:
        started = await client.request({"type": "start_workflow", "workflow": "approval", "params": {"message": "?"}})
        wid = started["workflow_id"]
        request = (await client.until(lambda m: m["type"] == "input_request"))[-1]
        answer = {"type": "node_input", "workflow_id": wid, "node_id": "approve", "request_id": request["request_id"]}
        await client.send_text(json.dumps(answer)[:-1] + ', "data": ' + _nested(depth) + "}")
        (reply,) = [m for m in await client.barrier() if m["type"] in ("ack", "error")]
        if depth + 2 > NESTING_LIMIT:  # the frame, `data`, then `depth` objects below it
            assert reply["code"] in ("invalid_json", "invalid_message"), reply
            reply = await client.request({**answer, "data": {"value": "yes"}})
        else:
            answered = [m for m in client.received if m["type"] == "input_answered"]
            assert [_depth(m["data"]) for m in answered] == [depth]
        assert reply["type"] == "ack", reply
        await client.seen_or_until(lambda m: m["type"] == "workflow_completed" and m["workflow_id"] == wid)


async def test_subscribe_naming_nothing_spec_and_gateway_agree(contract_server: Server) -> None:
    frame = '{"type": "subscribe", "id": "s"}'
    valid, _ = judge(frame, CLIENT_MESSAGE)
    answer = await answer_to(contract_server, frame)
    if valid:
        assert answer["type"] == "subscribed", answer
    else:
        assert answer["code"] == "invalid_message", answer


async def test_idempotent_repeat_delivers_the_whole_run(contract_server: Server) -> None:
    """Found by the state machine: start(approval, key) on A; the same start on B; cancel. B saw seq 1, then 4.

    (Fixed in runs.py while this suite was written: a repeat now replays the log after seq 1.)
    """
    start = {"type": "start_workflow", "workflow": "approval", "params": {"message": "?"}, "idempotency_key": "k-regr"}
    async with connected(contract_server) as first, connected(contract_server) as second:
        started = await first.request(dict(start))
        wid = started["workflow_id"]
        await first.until(lambda m: m["type"] == "input_request")
        again = await second.request(dict(start))
        assert (again["type"], again["workflow_id"]) == ("workflow_started", wid)
        await first.request({"type": "cancel_workflow", "workflow_id": wid})
        # `second.view` fails on the first seq that skips: it must see 2 and 3 before the terminal 4.
        await second.seen_or_until(lambda m: m["type"] == "workflow_cancelled")
        assert [m["seq"] for m in second.received if m.get("workflow_id") == wid] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "data",
    [[1e308, 1e308], [4.360911076333363e294, 1.7976931348622722e308], [-1.7e308, -1.7e308, 1.0]],
    ids=["intermediate-overflow", "rounds-past-max", "negative"],
)
async def test_data_whose_sum_passes_the_float_range_is_refused_at_start(
    contract_server: Server, data: list[float]
) -> None:
    """Found by the workflow property (twice): numbers whose sum passes the largest double.

    JSON has no infinity, so there is no result to send: `start_workflow` gets
    `invalid_params` on `params.data`, no run starts, and the socket goes on serving.
    """
    async with connected(contract_server) as client:
        answer = await client.request(
            {"type": "start_workflow", "workflow": "data_processing", "params": {"data": data}}
        )
        assert answer["type"] == "error", answer
        assert (answer["code"], answer["path"]) == ("invalid_params", "params.data")
        assert "range of a float" in answer["message"]
        assert not [m for m in await client.barrier() if m.get("type") == "workflow_started"]
        fine = await client.request(
            {"type": "start_workflow", "workflow": "data_processing", "params": {"data": [1e308, -1e308, 2.0]}}
        )
        assert fine["type"] == "workflow_started", fine
        end = await client.seen_or_until(lambda m: m["type"] in TERMINAL and m["workflow_id"] == fine["workflow_id"])
        assert end["type"] == "workflow_completed", end
        assert end["data"]["sum"] == 2.0


def test_a_closed_socket_stops_being_a_subscriber_of_its_runs() -> None:
    """Found by the memory bound (about 23 KB of RSS per closed socket that started a run).

    In process, because the leak is only visible inside: start a run, close the socket.
    """
    registry = WorkflowRegistry()
    register_builtin_workflows(registry)
    app = create_app(Settings(), registry)
    with TestClient(app) as http:
        with http.websocket_connect("/ws/workflow") as ws:
            ws.send_json({"type": "start_workflow", "id": "s", "workflow": "approval", "params": {"message": "?"}})
            messages: list[dict[str, Any]] = []
            while not any(m.get("reply_to") == "s" for m in messages):
                frame = ws.receive_json()
                messages.extend(frame["messages"] if frame["type"] == "batch" else [frame])
            wid = next(m["workflow_id"] for m in messages if m.get("reply_to") == "s")
        run = app.gateway.runs.runs[wid]
        deadline = time.monotonic() + 1
        while run.subscribers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not run.subscribers, "the run still holds the closed socket"
