"""The baseline: a bare ``websockets`` server that fans out with ``websockets.broadcast()``.

It speaks just enough of graphwire's protocol for the load generator (``start_workflow``
of a ``ticker`` with ``wait_for_go``, ``subscribe``, ``node_input``) and fans out the
same frames to the watchers (``input_answered``, the ticks, ``workflow_completed``),
pre-encoded once per event, so both servers are measured on the same bytes. This is the
ceiling a plain Python send loop reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve

_ids = itertools.count(1)


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


class Run:
    def __init__(self, workflow_id: str, params: dict[str, Any]) -> None:
        self.workflow_id = workflow_id
        self.params = params
        self.seq = 0
        self.subscribers: set[ServerConnection] = set()

    def frame(self, **fields: Any) -> str:
        self.seq += 1
        return orjson.dumps(
            {"workflow_id": self.workflow_id, "seq": self.seq, "timestamp": now_iso(), **fields}
        ).decode()

    async def tick(self) -> None:
        count = int(self.params.get("count", 100))
        payload = "x" * int(self.params.get("payload_bytes", 100))
        interval = float(self.params.get("interval_ms", 0)) / 1000
        for i in range(1, count + 1):
            data = {"i": i, "sent_at": time.time(), "payload": payload}
            broadcast(self.subscribers, self.frame(type="node_event", node_id="tick", event="tick", data=data))
            await asyncio.sleep(interval)
        broadcast(self.subscribers, self.frame(type="workflow_completed", result={"count": count}))


RUNS: dict[str, Run] = {}


async def handler(ws: ServerConnection) -> None:
    await ws.send(
        orjson.dumps(
            {"type": "connected", "client_id": f"cl_{next(_ids)}", "protocol_version": "1", "max_message_size": 1048576}
        ).decode()
    )
    try:
        async for raw in ws:
            msg = orjson.loads(raw)
            kind = msg.get("type")
            reply_to = msg.get("id")
            if kind == "start_workflow":
                run = Run(f"run_{next(_ids)}", msg.get("params") or {})
                RUNS[run.workflow_id] = run
                run.subscribers.add(ws)
                started = orjson.loads(run.frame(type="workflow_started", workflow="ticker"))
                await ws.send(orjson.dumps({**started, "reply_to": reply_to}).decode())
                await ws.send(
                    run.frame(type="input_request", node_id="tick", request_id="req_go", prompt="go?", options=["go"])
                )
            elif kind == "subscribe":
                run = RUNS[msg["workflow_id"]]
                run.subscribers.add(ws)
                snapshot = {
                    "workflow_id": run.workflow_id,
                    "workflow": "ticker",
                    "status": "waiting",
                    "last_seq": run.seq,
                    "pending_inputs": [],
                }
                await ws.send(
                    orjson.dumps(
                        {
                            "type": "subscribed",
                            "reply_to": reply_to,
                            "topics": [],
                            "workflow_id": run.workflow_id,
                            "snapshot": snapshot,
                        }
                    ).decode()
                )
            elif kind == "node_input":
                run = RUNS[msg["workflow_id"]]
                # graphwire tells every watcher that the input was answered; so does this.
                answered = {"node_id": "tick", "request_id": "req_go", "data": msg.get("data")}
                broadcast(run.subscribers, run.frame(type="input_answered", **answered))
                await ws.send(orjson.dumps({"type": "ack", "reply_to": reply_to, "command": "node_input"}).decode())
                asyncio.get_running_loop().create_task(run.tick())
            elif kind == "ping":
                await ws.send(orjson.dumps({"type": "pong", "reply_to": reply_to, "timestamp": now_iso()}).decode())
    finally:
        for run in RUNS.values():
            run.subscribers.discard(ws)


async def main(host: str, port: int) -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    async with serve(handler, host, port, max_size=2**20, ping_interval=None, compression=None, backlog=4096):
        await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port))
