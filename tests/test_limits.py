"""Limits a hostile or unlucky client meets, over real sockets (issue 10)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from harness import Server, connect, start_server, stop_server


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
