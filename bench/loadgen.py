"""Load generator: N watchers on one ``ticker`` run, counting, de-duplicating and timing ticks.

Runs as its own process (``run.py`` pins it to its own core) and prints one JSON object.
It uses picows, whose frame callbacks are compiled, so that the client side is not the
limit; its own CPU time is reported so that can be checked.

Modes:
  fanout  start a ticker with wait_for_go, attach N watchers, send go, measure
  idle    open N connections, print "ready", hold them until stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import sys
import time
from array import array
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TERMINAL = {"workflow_completed", "workflow_failed", "workflow_cancelled"}


class Watcher(WSListener):
    """One connection; ``handle`` sees every message, batches unpacked."""

    def __init__(self, count: int, latencies: array[float]) -> None:
        self.transport: WSTransport | None = None
        self.count = count
        self.seen = bytearray(count + 1)
        self.received = 0
        self.duplicates = 0
        self.latencies = latencies
        self.last_receipt = 0.0
        self.batches = 0  # batch frames received (a client that did not ask must see none)
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.done.done():
            self.done.set_result(False)
        for waiter in self.waiters.values():  # fail fast instead of waiting for a reply
            if not waiter.done():
                waiter.set_exception(ConnectionError("the server closed the connection"))

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, orjson.dumps(message))

    def expect(self, kind: str) -> asyncio.Future[dict[str, Any]]:
        future = asyncio.get_running_loop().create_future()
        self.waiters[kind] = future
        return future

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        now = time.time()
        if message["type"] == "batch":
            self.batches += 1
            for item in message["messages"]:
                self.handle(item, now)
        else:
            self.handle(message, now)

    def handle(self, message: dict[str, Any], now: float) -> None:
        kind = message["type"]
        if kind == "node_event":
            data = message["data"]
            i = data["i"]
            if self.seen[i]:
                self.duplicates += 1
            else:
                self.seen[i] = 1
                self.received += 1
            self.latencies.append(now - data["sent_at"])
            self.last_receipt = now
            return
        waiter = self.waiters.pop(kind, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
        if kind in TERMINAL and not self.done.done():
            self.done.set_result(True)


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_watchers(url: str, n: int, count: int, latencies: array[float]) -> list[Watcher]:
    gate = asyncio.Semaphore(64)

    async def one() -> Watcher:
        async with gate:
            _, listener = await ws_connect(lambda: Watcher(count, latencies), url, websocket_handshake_timeout=30)
            assert isinstance(listener, Watcher)
            return listener

    return list(await asyncio.gather(*(one() for _ in range(n))))


def percentile(values: array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    latencies: array[float] = array("d")
    control_latencies: array[float] = array("d")
    (control,) = await open_watchers(args.url, 1, args.count, control_latencies)
    started = control.expect("input_request")
    control.send(
        {
            "type": "start_workflow",
            "id": "bench",
            "workflow": "ticker",
            "params": {
                "count": args.count,
                "payload_bytes": args.payload_bytes,
                "interval_ms": args.interval_ms,
                "wait_for_go": True,
            },
        }
    )
    request = await asyncio.wait_for(started, 30)
    watchers = await open_watchers(args.url, args.n, args.count, latencies)
    subscribed = [w.expect("subscribed") for w in watchers]
    for w in watchers:
        w.send({"type": "subscribe", "workflow_id": request["workflow_id"], "since_seq": request["seq"]})
    await asyncio.wait_for(asyncio.gather(*subscribed), 60)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    go = time.time()
    control.send(
        {
            "type": "node_input",
            "workflow_id": request["workflow_id"],
            "node_id": request["node_id"],
            "request_id": request["request_id"],
            "data": {"value": "go"},
        }
    )
    budget = args.timeout
    _, pending = await asyncio.wait([w.done for w in watchers], timeout=budget)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    end = max((w.last_receipt for w in watchers), default=go)
    delivered = sum(w.received for w in watchers)
    expected = args.n * args.count
    elapsed = max(end - go, 1e-9)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    for w in [*watchers, control]:
        if w.transport is not None:
            w.transport.disconnect()
    return {
        "mode": "fanout",
        "subscribers": args.n,
        "count": args.count,
        "interval_ms": args.interval_ms,
        "payload_bytes": args.payload_bytes,
        "expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "duplicates": sum(w.duplicates for w in watchers),
        "batches": sum(w.batches for w in watchers),
        "unfinished": len(pending),
        "elapsed_s": elapsed,
        "deliveries_per_s": delivered / elapsed,
        "latency_p50_ms": 1000 * percentile(latencies, 0.50),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "client_cpu_s": client_cpu,
        "client_cpu_share": client_cpu / elapsed,
    }


async def idle(args: argparse.Namespace) -> None:
    watchers = await open_watchers(args.url, args.n, 1, array("d"))
    print("ready", len(watchers), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["fanout", "idle"])
    parser.add_argument("--url", required=True)
    parser.add_argument("-n", type=int, default=100, help="watchers")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--payload-bytes", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=0)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    raise_fd_limit()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if args.mode == "idle":
        asyncio.run(idle(args))
    else:
        print(orjson.dumps(asyncio.run(fanout(args))).decode(), flush=True)


if __name__ == "__main__":
    main()
