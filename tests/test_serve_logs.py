"""Structured logs (issue 15, part 3): a real ``graphwire serve`` with ``GRAPHWIRE_LOG_FORMAT=json``.

Every line of its output is one JSON object, uvicorn's included, and the records written
from a connection, from a run (its nodes, in threads too), from the watchdog's thread and
about a slow consumer carry the workflow, node, client and user they are about.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import jwt
import websockets
from websockets.exceptions import ConnectionClosed

from harness import Server, connect, start_server, stop_server
from hostile import StalledPeer, wait_for

SECRET = "a-test-secret-of-at-least-32-bytes!"
EVERYTHING = "workflows:start runs:read runs:answer runs:cancel"
FIELDS = ("workflow_id", "workflow", "node_id", "client_id", "user")
# Client ids the clients take (`?client_id=`), so that the test knows them before `connected`.
ALICE = "cl_a11ce00000000001"
BOB = "cl_b0b0000000000002"
# About 20 MB at once: far more than the socket buffers of a peer that never reads.
FLOOD = {"count": 1000, "payload_bytes": 20_000, "interval_ms": 1}


def token(sub: str) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + 600), "scope": EVERYTHING}, SECRET, algorithm="HS256")


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {name: entry[name] for name in FIELDS if name in entry}


def parse_every_line(server: Server) -> list[dict[str, Any]]:
    entries = []
    for number, line in enumerate(server.log().split("\n")[:-1], 1):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from exc
        assert isinstance(entry, dict), line
        assert all(isinstance(entry[key], str) for key in ("ts", "level", "logger", "message")), line
        assert set(entry) <= {"ts", "level", "logger", "message", "exc_info", "stack_info", *FIELDS}, line
        datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
        entries.append(entry)
    assert server.log().endswith("\n")
    return entries


def only(entries: list[dict[str, Any]], text: str) -> dict[str, Any]:
    (entry,) = [e for e in entries if text in e["message"]]
    return entry


async def refused(url: str) -> int | None:
    async with websockets.connect(url, open_timeout=10) as ws:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code


async def test_every_line_is_json_and_says_what_it_is_about(tmp_path: Path) -> None:
    env = {
        "GRAPHWIRE_LOG_FORMAT": "json",
        "GRAPHWIRE_AUTH_JWT_SECRET": SECRET,
        "GRAPHWIRE_SEND_QUEUE_MAX_MESSAGES": "20",
        "GRAPHWIRE_LOOP_BLOCK_WARN_MS": "250",
    }
    workflows = ["--workflows", "log_workflows:register", "--workflows", "sample_workflows:register_watchdog"]
    alice_token, bob_token = token("alice"), token("bob")
    server = start_server(tmp_path, *workflows, env=env)
    try:
        alice = await connect(
            server.ws() + f"?client_id={ALICE}", additional_headers={"Authorization": f"Bearer {alice_token}"}
        )
        assert alice.hello["client_id"] == ALICE
        boom = await alice.start("boom", {"message": "kaput"}, "boom")
        assert (await alice.run_events(boom["workflow_id"]))[-1]["type"] == "workflow_failed"
        chatty = await alice.start("chatty", {}, "chatty")
        assert (await alice.run_events(chatty["workflow_id"]))[-1]["type"] == "workflow_completed"
        # A frame that fails inside the gateway, after this connection started runs.
        await alice.send({"type": "start_workflow", "id": "broken", "workflow": "broken_check", "params": {}})
        await alice.until(lambda m: m["type"] == "error" and m["code"] == "internal_error")
        blocking = await alice.start("blocking_async", {"seconds": 1.0}, "blocking")
        assert (await alice.run_events(blocking["workflow_id"]))[-1]["type"] == "workflow_completed"
        assert await refused(server.ws() + "?token=junk-token-value") == 4001
        # A peer that starts a flood of events for itself and never reads them.
        peer = StalledPeer(server.port, f"/ws/workflow?client_id={BOB}&token={bob_token}")
        peer.send({"type": "start_workflow", "id": "flood", "workflow": "ticker", "params": FLOOD})
        await wait_for(lambda: "is too slow" in server.log(), 60, "the slow consumer closed")
        peer.close()
        await alice.close()
    finally:
        stop_server(server)

    entries = parse_every_line(server)
    messages = [e["message"] for e in entries]
    assert any(m.startswith("Started server process") for m in messages)  # uvicorn's, at start
    assert any(m.startswith("Finished server process") for m in messages)  # and at the end
    assert any(m.endswith("[accepted]") and "token=***" in m for m in messages)
    for secret in (alice_token, bob_token, SECRET, "junk-token-value"):
        assert secret not in server.log()

    failed = only(entries, f"run {boom['workflow_id']} failed")
    assert failed["level"] == "ERROR"
    assert fields(failed) == {
        "workflow_id": boom["workflow_id"],
        "workflow": "boom",
        "node_id": "boom",
        "user": "alice",
    }
    assert failed["exc_info"].endswith("ValueError: kaput")

    said = [e for e in entries if e["logger"] == "log_workflows"]
    assert [e["node_id"] for e in said] == ["sync_step", "batch_step", "batch_step", "async_step"]
    for entry in said:
        assert entry["message"].startswith('said "hi"\nfrom ')
        assert fields(entry) == {
            "workflow_id": chatty["workflow_id"],
            "workflow": "chatty",
            "node_id": entry["node_id"],
            "user": "alice",
        }

    internal = only(entries, f"internal error on a frame from {ALICE}")
    assert fields(internal) == {"client_id": ALICE, "user": "alice"}  # none of its runs' fields
    assert internal["exc_info"].endswith("RuntimeError: the check itself is broken")

    blocked = only(entries, "event loop blocked for")
    assert blocked["logger"] == "graphwire.watchdog"
    assert fields(blocked) == {"workflow_id": blocking["workflow_id"], "workflow": "blocking_async", "node_id": "hog"}

    refusal = only(entries, "refused a connection: ")
    assert "(4001)" in refusal["message"]
    assert fields(refusal) == {}

    slow = only(entries, f"client {BOB} is too slow")
    assert slow["level"] == "WARNING"
    assert fields(slow)["client_id"] == BOB
    assert fields(slow)["user"] == "bob"


async def test_a_stalled_socket_is_logged_with_its_connection_not_the_writers_run(tmp_path: Path) -> None:
    """The write timeout fires in a timer armed by whichever task wrote last (the run's here)."""
    env = {"GRAPHWIRE_LOG_FORMAT": "json", "GRAPHWIRE_WRITE_TIMEOUT": "1", "GRAPHWIRE_CLOSE_TIMEOUT": "1"}
    server = start_server(tmp_path, env=env)
    try:
        peer = StalledPeer(server.port, f"/ws/workflow?client_id={BOB}")
        # About 12 MB: more than the socket buffers hold, less than the send queue's 16 MB.
        peer.send({"type": "start_workflow", "id": "flood", "workflow": "ticker", "params": {**FLOOD, "count": 600}})
        await wait_for(lambda: "accepted no data" in server.log(), 60, "the stalled socket closed")
        peer.close()
    finally:
        stop_server(server)
    stalled = only(parse_every_line(server), "accepted no data for 1 s; closing with 1013")
    assert stalled["logger"] == "graphwire.transport"
    assert fields(stalled) == {"client_id": BOB}
