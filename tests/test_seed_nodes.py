"""The product seed's nodes, unchanged (``examples/seed_nodes.py``), on a real gateway.

A real ``graphwire serve --workflows seed_nodes:register`` drives ``seed_chat``,
``seed_processing`` and ``seed_approval`` over plain ``websockets``, every frame checked
against the spec (``harness.Client``). This module also registers
``seed_approval_short`` (``register_short``, loaded by the same server): the seed's
``ApprovalNode`` with a 0.5 s timeout, followed by a node that asks its own question, so
the run is still going when the first request has timed out; and ``seed_announce_only``, a
node that announces a request and ends without waiting on it, followed by the same question.
Both close a request unanswered while the run goes on: watchers get ``input_closed``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from graphwire.graph import AsyncGraph, WebSocketNode
from graphwire.registry import WorkflowRegistry
from graphwire_codegen import schema_validator
from harness import ROOT, SPEC, TERMINAL, Client, Server, assert_gap_free, connect, start_server, stop_server

SHORT_TIMEOUT = 0.5
INPUT_CLOSED = schema_validator(SPEC, "InputClosed")


class ShortApprovalNode(WebSocketNode[Any, Any]):
    """The seed's ``ApprovalNode`` with a timeout a test can wait for."""

    async def exec_async(self, data: Any) -> Any:
        await self.send_update("approval_request", {"message": "Approve this action?", "options": ["yes", "no"]})
        response = await self.wait_for_input(timeout=SHORT_TIMEOUT)
        return response


class AnnounceOnly(WebSocketNode[Any, Any]):
    """Announces a request, as the seed's ``ApprovalNode`` does, and ends without waiting on it."""

    async def exec_async(self, data: Any) -> Any:
        await self.send_update("approval_request", {"message": "Notify anyone?", "options": ["ok"]})


class Confirm(WebSocketNode[Any, Any]):
    """Keeps the run alive after the timeout; leaves the result alone."""

    async def exec_async(self, data: Any) -> Any:
        return await self.wait_for_input(prompt="Done?", options=["ok"], timeout=30)

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        return None


def register_short(registry: WorkflowRegistry) -> None:
    from seed_nodes import ApprovalParams, ApprovalResult

    def build() -> AsyncGraph:
        approve = ShortApprovalNode(node_id="approve")
        approve >> Confirm(node_id="confirm")
        return AsyncGraph(approve)

    def build_announce_only() -> AsyncGraph:
        notify = AnnounceOnly(node_id="notify")
        notify >> Confirm(node_id="confirm")
        return AsyncGraph(notify)

    registry.register("seed_approval_short", build, params=ApprovalParams, result=ApprovalResult)
    registry.register("seed_announce_only", build_announce_only, params=ApprovalParams, result=ApprovalResult)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = os.pathsep.join(str(p) for p in (ROOT / "examples", ROOT / "tests", ROOT / "server" / "tests"))
    running = start_server(
        tmp_path_factory.mktemp("seed"),
        "--workflows",
        "seed_nodes:register",
        "--workflows",
        "test_seed_nodes:register_short",
        env={"PYTHONPATH": path},
    )
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()


def of_run(messages: list[dict[str, Any]], workflow_id: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("workflow_id") == workflow_id and "seq" in m]


async def reply(client: Client, frame: dict[str, Any], seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Send ``frame`` (it carries an ``id``) and return its direct answer; what came before goes to ``seen``."""
    await client.send(frame)
    messages = await client.until(lambda m: m.get("reply_to") == frame["id"])
    if seen is not None:
        seen += messages[:-1]
    return messages[-1]


async def snapshot(server: Server, workflow_id: str) -> dict[str, Any]:
    """The run's snapshot, as another connection subscribing to it sees it."""
    watcher = await connect(server.ws())
    subscribed = await reply(watcher, {"type": "subscribe", "id": "sub", "workflow_id": workflow_id, "since_seq": 0})
    await watcher.close()
    assert subscribed["type"] == "subscribed", subscribed
    result: dict[str, Any] = subscribed["snapshot"]
    return result


def answer(request: dict[str, Any], value: str, id_: str) -> dict[str, Any]:
    return {
        "type": "node_input",
        "id": id_,
        "workflow_id": request["workflow_id"],
        "node_id": request["node_id"],
        "request_id": request["request_id"],
        "data": {"value": value},
    }


async def test_seed_chat_streams_every_token_then_completes(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("seed_chat", {"message": "stream this please"})
    events = [started, *await client.run_events(started["workflow_id"])]
    assert_gap_free(events)
    tokens = [e["data"] for e in events if e["type"] == "token"]
    assert tokens == ["You ", "said: ", "stream ", "this ", "please"]
    assert {e["node_id"] for e in events if e["type"] == "token"} == {"chat"}
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"] == {}
    await client.close()


async def test_seed_processing_reports_progress_per_item(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("seed_processing", {"data": [2, 4, 6, 8, 10]})
    events = [started, *await client.run_events(started["workflow_id"])]
    assert_gap_free(events)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [(p["percent"], p["current"], p["total"]) for p in progress] == [
        (20.0, 1, 5),
        (40.0, 2, 5),
        (60.0, 3, 5),
        (80.0, 4, 5),
        (100.0, 5, 5),
    ]
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"] == {}
    await client.close()


async def test_seed_approval_asks_and_completes_with_the_answer(server: Server) -> None:
    starter = await connect(server.ws())
    started = await starter.start("seed_approval", {})
    wid = started["workflow_id"]
    seen = await starter.until(lambda m: m["type"] == "input_request")
    request = seen[-1]
    assert (request["node_id"], request["prompt"], request["options"]) == (
        "approve",
        "Approve this action?",
        ["yes", "no"],
    )

    view = await snapshot(server, wid)
    assert view["status"] == "waiting"
    (pending,) = view["pending_inputs"]
    assert pending["request_id"] == request["request_id"]
    assert (pending["prompt"], pending["options"]) == ("Approve this action?", ["yes", "no"])
    # wait_for_input(timeout=60) gave the announced request its deadline.
    left = datetime.fromisoformat(pending["expires_at"]) - datetime.now(UTC)
    assert 30 < left.total_seconds() <= 60

    approver = await connect(server.ws())
    refused = await reply(approver, answer(request, "maybe", "maybe"))
    assert (refused["type"], refused["code"]) == ("error", "invalid_input")
    assert (await snapshot(server, wid))["pending_inputs"] == view["pending_inputs"]

    ack = await reply(approver, answer(request, "yes", "yes"))
    assert ack["type"] == "ack", ack
    events = [started, *of_run(seen, wid), *await starter.run_events(wid)]
    assert_gap_free(events)
    answered = [e for e in events if e["type"] == "input_answered"]
    assert [(e["request_id"], e["data"]) for e in answered] == [(request["request_id"], {"value": "yes"})]
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"] == {"value": "yes"}
    assert (await snapshot(server, wid))["pending_inputs"] == []
    for client in (starter, approver):
        await client.ping()
        await client.close()


async def test_seed_approval_timeout_returns_none_and_closes_the_request(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("seed_approval_short", {})
    wid = started["workflow_id"]
    seen = await client.until(lambda m: m["type"] == "input_request")
    first = seen[-1]
    assert first["prompt"] == "Approve this action?"
    # Nobody answers: after SHORT_TIMEOUT the request is closed, live, and the next node asks.
    seen += await client.until(lambda m: m["type"] == "input_closed")
    closed = seen[-1]
    assert not list(INPUT_CLOSED.iter_errors(closed)), closed
    assert (closed["workflow_id"], closed["node_id"], closed["request_id"], closed["reason"]) == (
        wid,
        "approve",
        first["request_id"],
        "timeout",
    )
    waited = datetime.fromisoformat(closed["timestamp"]) - datetime.fromisoformat(first["timestamp"])
    assert waited.total_seconds() >= SHORT_TIMEOUT * 0.9
    seen += await client.until(lambda m: m["type"] == "input_request" and m["node_id"] == "confirm")
    confirm = seen[-1]
    assert first["seq"] < closed["seq"] < confirm["seq"]

    view = await snapshot(server, wid)
    assert [p["request_id"] for p in view["pending_inputs"]] == [confirm["request_id"]]
    late = await reply(client, answer(first, "yes", "late"), seen)
    assert (late["type"], late["code"]) == ("error", "unknown_request")

    ack = await reply(client, answer(confirm, "ok", "ok"), seen)
    assert ack["type"] == "ack", ack
    events = [started, *of_run(seen, wid)]
    if events[-1]["type"] not in TERMINAL:  # the run may have ended before the ack was read
        events += await client.run_events(wid)
    assert_gap_free(events)
    assert [e["request_id"] for e in events if e["type"] == "input_answered"] == [confirm["request_id"]]
    assert [e["request_id"] for e in events if e["type"] == "input_closed"] == [first["request_id"]]
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["data"] == {"value": None}  # the approval's None left no result
    after = await reply(client, answer(first, "yes", "after"))
    assert (after["type"], after["code"]) == ("error", "run_finished")
    await client.close()


async def test_input_closed_is_in_the_log_and_replayed_on_resume(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("seed_approval_short", {})
    wid = started["workflow_id"]
    seen = await client.until(lambda m: m["type"] == "input_request" and m["node_id"] == "confirm")
    (first,) = [m for m in of_run(seen, wid) if m["type"] == "input_request" and m["node_id"] == "approve"]
    (closed,) = [m for m in of_run(seen, wid) if m["type"] == "input_closed"]

    # A watcher that had everything up to the first request resumes from there.
    watcher = await connect(server.ws())
    resume = {"type": "subscribe", "id": "resume", "workflow_id": wid, "since_seq": first["seq"]}
    subscribed = await reply(watcher, resume)
    assert subscribed["type"] == "subscribed", subscribed
    assert [p["request_id"] for p in subscribed["snapshot"]["pending_inputs"]] == [
        m["request_id"] for m in of_run(seen, wid) if m["type"] == "input_request" and m["node_id"] == "confirm"
    ]
    replayed = of_run(await watcher.until(lambda m: m["type"] == "input_request" and m["node_id"] == "confirm"), wid)
    # Exactly what the live client saw after that seq, input_closed included.
    assert replayed == [m for m in of_run(seen, wid) if m["seq"] > first["seq"]]
    assert closed in replayed
    assert not list(INPUT_CLOSED.iter_errors(closed)), closed

    confirm = replayed[-1]
    ack = await reply(watcher, answer(confirm, "ok", "ok"))
    assert ack["type"] == "ack", ack
    await client.run_events(wid)
    for each in (client, watcher):
        await each.close()


async def test_a_request_the_node_never_waits_on_is_closed_node_finished(server: Server) -> None:
    client = await connect(server.ws())
    started = await client.start("seed_announce_only", {})
    wid = started["workflow_id"]
    seen = await client.until(lambda m: m["type"] == "input_request" and m["node_id"] == "confirm")
    events = [started, *of_run(seen, wid)]
    notify = next(e for e in events if e["type"] == "input_request" and e["node_id"] == "notify")
    (closed,) = [e for e in events if e["type"] == "input_closed"]
    assert not list(INPUT_CLOSED.iter_errors(closed)), closed
    assert (closed["node_id"], closed["request_id"], closed["reason"]) == (
        "notify",
        notify["request_id"],
        "node_finished",
    )
    confirm = events[-1]
    assert notify["seq"] < closed["seq"] < confirm["seq"]

    view = await snapshot(server, wid)
    assert (view["status"], [p["request_id"] for p in view["pending_inputs"]]) == ("waiting", [confirm["request_id"]])
    late = await reply(client, answer(notify, "ok", "late"), seen)
    assert (late["type"], late["code"]) == ("error", "unknown_request")

    ack = await reply(client, answer(confirm, "ok", "ok"), seen)
    assert ack["type"] == "ack", ack
    events = [started, *of_run(seen, wid)]
    if events[-1]["type"] not in TERMINAL:
        events += await client.run_events(wid)
    assert_gap_free(events)
    assert [e["type"] for e in events].count("input_closed") == 1  # the run's end closes nothing more
    assert events[-1]["type"] == "workflow_completed"
    await client.close()
