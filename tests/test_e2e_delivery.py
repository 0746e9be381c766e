"""Delivery under load over real sockets: batching, the slow-consumer policy, fan-out."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from harness import Server, assert_gap_free, connect, start_server, stop_server


async def drain(ws: websockets.ClientConnection) -> None:
    """Read until the server closes the connection (with any code)."""
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway whose send queues hold at most 50 frames."""
    env = {"GRAPHWIRE_SEND_QUEUE_MAX_MESSAGES": "50"}
    running = start_server(tmp_path_factory.mktemp("small-queue"), env=env)
    yield running
    stop_server(running)


async def test_burst_arrives_as_batches_and_batch_off_gets_single_frames(server: Server) -> None:
    batched = await connect(server.ws() + "?batch=1")
    started = await batched.start("ticker", {"count": 300, "payload_bytes": 10, "wait_for_go": True})
    wid = started["workflow_id"]
    request = (await batched.until(lambda m: m["type"] == "input_request"))[-1]
    single = await connect(server.ws())  # did not ask: never a batch
    await single.send({"type": "subscribe", "workflow_id": wid, "since_seq": 0})
    await single.until(lambda m: m["type"] == "subscribed")
    await batched.answer(request, "go")
    for client in (batched, single):
        events = await client.run_events(wid)
        assert [e["data"]["i"] for e in events if e["type"] == "node_event"] == list(range(1, 301))
    assert any(f["type"] == "batch" for f in batched.frames), "a burst of 300 events should be coalesced"
    assert all(f["type"] != "batch" for f in single.frames)
    await batched.close()
    await single.close()


async def test_slow_consumer_is_closed_with_1013_and_others_are_untouched(small_queue_server: Server) -> None:
    server = small_queue_server
    starter = await connect(server.ws())
    # Paced so that a reader keeps up (its queue stays far below 50 frames), while 20 MB
    # in all overflow the socket buffers of a client that stops reading.
    params = {"count": 400, "payload_bytes": 50_000, "interval_ms": 5, "wait_for_go": True}
    started = await starter.start("ticker", params)
    wid = started["workflow_id"]
    request = (await starter.until(lambda m: m["type"] == "input_request"))[-1]
    subscribe = json.dumps({"type": "subscribe", "workflow_id": wid, "since_seq": request["seq"]})
    fast = await websockets.connect(server.ws() + "?batch=0", max_size=None)
    slow = await websockets.connect(server.ws() + "?batch=0", max_size=None, max_queue=1)
    try:
        for ws in (fast, slow):
            await ws.send(subscribe)
        await asyncio.sleep(0.2)
        slow.transport.pause_reading()  # the slow client stops reading: its buffers fill up
        ticks: list[int] = []

        async def read_fast() -> None:
            async for raw in fast:
                message = json.loads(raw)
                if message["type"] == "node_event":
                    ticks.append(message["data"]["i"])
                if message["type"] == "workflow_completed":
                    return

        reader = asyncio.create_task(read_fast())
        await starter.answer(request, "go")
        await asyncio.wait_for(reader, 60)
        assert ticks == list(range(1, 401)), "the reader that keeps up gets every event"
        slow.transport.resume_reading()
        await asyncio.wait_for(drain(slow), 30)
        assert slow.close_code == 1013
        assert server.get_json("/ws/health")["status"] == "ok"
    finally:
        await slow.close()
        await fast.close()
        await starter.close()


async def test_fan_out_to_many_watchers(server: Server, tmp_path: Path) -> None:
    starter = await connect(server.ws())
    started = await starter.start("ticker", {"count": 50, "payload_bytes": 50, "wait_for_go": True})
    wid = started["workflow_id"]
    request = (await starter.until(lambda m: m["type"] == "input_request"))[-1]
    watchers = await asyncio.gather(*(connect(server.ws()) for _ in range(200)))
    for watcher in watchers:
        await watcher.send({"type": "subscribe", "workflow_id": wid, "since_seq": request["seq"]})
    await asyncio.gather(*(w.until(lambda m: m["type"] == "subscribed") for w in watchers))
    await starter.answer(request, "go")
    results = await asyncio.gather(*(w.run_events(wid) for w in watchers))
    for events in results:
        assert_gap_free(events, first=request["seq"] + 1)
        assert [e["data"]["i"] for e in events if e["type"] == "node_event"] == list(range(1, 51))
    await asyncio.gather(*(w.close() for w in [starter, *watchers]))
