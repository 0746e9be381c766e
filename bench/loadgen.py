"""Load generator: N watchers on one ``ticker`` run, counting, de-duplicating and timing ticks.

Runs as its own process (``run.py`` pins it to its own core) and prints one JSON object.
It uses picows, whose frame callbacks are compiled, so that the client side is not the
limit; its own CPU time is reported so that can be checked.

Modes:
  fanout  start a ticker with wait_for_go, attach N watchers, send go, measure
          (``--stalled K`` adds K watchers that subscribe, then stop reading;
          ``--flooders K`` adds K clients that send pings flat out from go until the
          watchers are done, reading what comes back; ``--watch-url`` more than
          once splits the watchers evenly over those gateways, the run starting on
          ``--url``; ``--cpu-pids`` reports those processes' CPU seconds over the ticks)
  idle    open N connections, print "ready", hold them until stdin closes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import struct
import sys
import time
from array import array
from typing import Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.url import WSParsedURL

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


# A stalled watcher's socket: a small receive buffer (the kernel doubles it, to 8 KiB) and an
# internet-sized MSS. Linux sizes a sender's buffer from the MSS, and loopback's 64 KiB MSS
# would give the server's end a 4 MB kernel buffer that absorbs the whole run; at 1460 it
# holds about 100 KB, about what it starts with for a peer across the internet.
STALLED_RCVBUF = 4096
STALLED_MSS = 1460
# How often the stalled sockets' TCP state is looked up during the ticks.
STALL_POLL_S = 0.05
# After the fast watchers are done, how long a stalled watcher gets to read what was kept for it.
DRAIN_S = 10.0
TCP_ESTABLISHED = 1


class StalledWatcher(Watcher):
    """A watcher that subscribes like the others, then never reads until the fast ones are done.

    Its ticks count nowhere. It stops reading (``pause_reading``) as soon as ``subscribed``
    arrives, so what the server sends it fills its receive buffer, then the server's kernel
    buffer, then whatever the gateway keeps for it. Meanwhile the kernel tells how both ends
    of its socket stand (``SocketDiag``). Once the fast watchers are done it reads again and
    notes what it had been kept: the last tick, a close frame, the end of the stream.
    """

    def __init__(self, count: int) -> None:
        super().__init__(count, array("d"))
        self.last_i = 0
        self.last_sent_at = 0.0
        self.close_code: int | None = None
        self.ended_at: float | None = None  # the connection ended (seen once reading again)
        self.local_port = 0
        self.server_port = 0
        # Seen from the kernel while not reading: the server's end of the socket, and ours.
        self.server_send_queue_max = 0  # bytes its kernel holds, unsent (the socket is full)
        self.server_closed_at: float | None = None  # the server's end left ESTABLISHED (fd closed)
        self.client_end_at: float | None = None  # our end got a FIN or a reset

    def on_ws_connected(self, transport: WSTransport) -> None:
        super().on_ws_connected(transport)
        self.local_port = transport.underlying_transport.get_extra_info("sockname")[1]
        self.server_port = transport.underlying_transport.get_extra_info("peername")[1]

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.ended_at = time.time()
        super().on_ws_disconnected(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        super().on_ws_frame(transport, frame)

    def handle(self, message: dict[str, Any], now: float) -> None:
        if message["type"] == "node_event":
            data = message["data"]
            if data["i"] > self.last_i:
                self.last_i = data["i"]
                self.last_sent_at = data["sent_at"]
        super().handle(message, now)
        if message["type"] == "subscribed" and self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.resume_reading()

    def sample(self, diag: SocketDiag, now: float) -> None:
        """Note how both ends of this socket stand."""
        server_end = diag.lookup(self.server_port, self.local_port)
        if server_end is None or server_end[0] != TCP_ESTABLISHED:
            if self.server_closed_at is None:
                self.server_closed_at = now
        else:
            self.server_send_queue_max = max(self.server_send_queue_max, server_end[1])
        client_end = diag.lookup(self.local_port, self.server_port)
        if (client_end is None or client_end[0] != TCP_ESTABLISHED) and self.client_end_at is None:
            self.client_end_at = now

    def report(self, go: float) -> dict[str, Any]:
        def since_go(at: float | None) -> float | None:
            return None if at is None else at - go

        return {
            "ticks_kept": self.received,  # the ticks it got once it read again
            "last_tick_sent_s": since_go(self.last_sent_at or None),
            "completed": self.done.done() and self.done.result(),
            "close_code": self.close_code,
            "ended": self.ended_at is not None,
            "server_send_queue_max": self.server_send_queue_max,
            "server_closed_s": since_go(self.server_closed_at),
            "client_end_s": since_go(self.client_end_at),
        }


class SocketDiag:
    """One TCP socket's state, looked up in the kernel by its ports (netlink ``sock_diag``).

    What ``ss`` reads, for one socket and in microseconds: ``/proc/net/tcp`` prints every
    socket of the machine (about 10 ms of the load generator's core at 1,000 watchers).
    """

    NETLINK_SOCK_DIAG = 4
    SOCK_DIAG_BY_FAMILY = 20
    NLM_F_REQUEST = 1
    NLMSG_ERROR = 2
    LOOPBACK = socket.inet_aton("127.0.0.1") + bytes(12)  # __be32 address[4]
    NO_COOKIE = 0xFFFFFFFF

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_SOCK_DIAG)

    def lookup(self, local_port: int, remote_port: int) -> tuple[int, int] | None:
        """State and unsent bytes of the loopback socket ``local_port`` → ``remote_port``; None: gone."""
        # struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid:
        # sport, dport (big-endian), src[4], dst[4], interface, cookie[2].
        sockid = struct.pack("!HH", local_port, remote_port) + self.LOOPBACK + self.LOOPBACK
        sockid += struct.pack("=III", 0, self.NO_COOKIE, self.NO_COOKIE)
        request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
        header = struct.pack("=IHHII", 16 + len(request), self.SOCK_DIAG_BY_FAMILY, self.NLM_F_REQUEST, 1, 0)
        self.sock.send(header + request)
        reply = self.sock.recv(65536)
        if struct.unpack_from("=IH", reply)[1] == self.NLMSG_ERROR:
            return None  # ENOENT: no such socket any more
        # struct inet_diag_msg after the 16-byte header: family, state, timer, retrans,
        # inet_diag_sockid (48 bytes), expires, rqueue, wqueue (bytes not yet acknowledged).
        state: int = reply[17]
        unsent: int = struct.unpack_from("=I", reply, 16 + 4 + 48 + 8)[0]
        return state, unsent

    def close(self) -> None:
        self.sock.close()


def stalled_socket(_url: WSParsedURL) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect: the MSS goes out in the SYN, and the window is scaled from the buffer.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, STALLED_MSS)
    return sock


async def open_stalled(url: str, k: int, count: int) -> list[StalledWatcher]:
    async def one() -> StalledWatcher:
        _, listener = await ws_connect(
            lambda: StalledWatcher(count), url, websocket_handshake_timeout=30, socket_factory=stalled_socket
        )
        assert isinstance(listener, StalledWatcher)
        return listener

    return list(await asyncio.gather(*(one() for _ in range(k))))


async def watch_stalled(stalled: list[StalledWatcher], stop: asyncio.Event) -> None:
    """Sample the stalled sockets' TCP state until ``stop``, without reading from them."""
    diag = SocketDiag()
    try:
        while not stop.is_set():
            now = time.time()
            for w in stalled:
                w.sample(diag, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STALL_POLL_S)
    finally:
        diag.close()


# A flooder's ping, encoded once. It sends it flat out, yet keeps at most FLOOD_WINDOW of them
# unanswered (the server answers every one, with a pong or a rate_limited error): enough that
# the server never waits for the next one, few enough that the flooder does not spend the load
# generator's core (the watchers' core) stuffing megabytes of loopback buffers with pings the
# server will never read (it closes the connection after a few hundred).
FLOOD_PING = orjson.dumps({"type": "ping", "id": "f"})
FLOOD_WINDOW = 256


class FloodConnection(WSListener):
    """One connection of a flooder: pings flat out, counts the answers and how it ended."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.flooding = False
        self.unanswered = 0
        self.sent = 0
        self.pongs = 0
        self.rate_limited = 0
        self.retry_after_max: float | None = None
        self.first_rate_limited_at: float | None = None
        self.other: dict[str, int] = {}  # any other answer, by type (errors: by code)
        self.close_code: int | None = None
        self.closed_at: float | None = None  # the server's close frame arrived, or the stream ended
        self.stopped = False  # we ended it (the watchers were done), not the server
        self.ended = asyncio.get_running_loop().create_future()

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.flooding = False
        if self.closed_at is None and not self.stopped:
            self.closed_at = time.time()  # the stream ended without a close frame
        if not self.ended.done():
            self.ended.set_result(None)

    def start(self) -> None:
        self.flooding = True
        self.top_up()

    def stop(self) -> None:
        self.flooding = False
        if self.transport is not None and not self.transport.is_disconnected and self.closed_at is None:
            self.stopped = True
            self.transport.disconnect()

    def top_up(self) -> None:
        assert self.transport is not None
        send = self.transport.send
        more = FLOOD_WINDOW - self.unanswered
        for _ in range(more):
            send(WSMsgType.TEXT, FLOOD_PING)
        self.unanswered += more
        self.sent += more

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code().value
            self.closed_at = time.time()
            self.flooding = False
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        if frame.msg_type != WSMsgType.TEXT:
            return
        message = orjson.loads(frame.get_payload_as_bytes())
        for item in message["messages"] if message["type"] == "batch" else (message,):
            self.count(item)
        # Half the window answered: send as many again (fewer, larger bursts than one per answer).
        if self.flooding and self.unanswered <= FLOOD_WINDOW // 2:
            self.top_up()

    def count(self, message: dict[str, Any]) -> None:
        if message.get("reply_to") == "f":
            self.unanswered -= 1
        kind = message["type"]
        if kind == "connected":  # the greeting every connection gets, not an answer
            return
        if kind == "pong":
            self.pongs += 1
        elif kind == "error" and message.get("code") == "rate_limited":
            self.rate_limited += 1
            if self.first_rate_limited_at is None:
                self.first_rate_limited_at = time.time()
            retry_after = message.get("retry_after")
            if retry_after is not None:
                self.retry_after_max = max(self.retry_after_max or 0.0, float(retry_after))
        else:
            key = f"error {message.get('code')}" if kind == "error" else kind
            self.other[key] = self.other.get(key, 0) + 1


class Flooder:
    """One flooding client, from go until ``stop``; with ``reconnect``, it comes back when closed."""

    def __init__(self, url: str, reconnect: bool) -> None:
        self.url = url
        self.reconnect = reconnect
        self.connections: list[FloodConnection] = []
        self.stopping = False
        self.refused: str | None = None  # a reconnect that failed, and why

    async def connect(self) -> FloodConnection:
        _, listener = await ws_connect(FloodConnection, self.url, websocket_handshake_timeout=30)
        assert isinstance(listener, FloodConnection)
        self.connections.append(listener)
        return listener

    async def run(self) -> None:
        connection = self.connections[-1]  # opened before go, like the watchers
        while True:
            connection.start()
            await connection.ended
            if self.stopping or not self.reconnect:
                return
            try:
                connection = await self.connect()
            except Exception as exc:  # noted in the report; the watchers go on
                self.refused = f"{type(exc).__name__}: {exc}"
                return
            if self.stopping:
                connection.stop()
                return

    def stop(self) -> None:
        self.stopping = True
        if self.connections:
            self.connections[-1].stop()

    def report(self, go: float, until: float) -> dict[str, Any]:
        def since_go(at: float | None) -> float | None:
            return None if at is None else at - go

        connections = self.connections
        ended = [c for c in connections if c.closed_at is not None]  # by the server, before we stopped
        close_codes: dict[str, int] = {}  # "none": the stream ended without a close frame
        for c in ended:
            key = str(c.close_code) if c.close_code is not None else "none"
            close_codes[key] = close_codes.get(key, 0) + 1
        other: dict[str, int] = {}
        for c in connections:
            for key, value in c.other.items():
                other[key] = other.get(key, 0) + value
        retry_afters = [c.retry_after_max for c in connections if c.retry_after_max is not None]
        limited_at = [c.first_rate_limited_at for c in connections if c.first_rate_limited_at is not None]
        first = connections[0]
        return {
            "reconnect": self.reconnect,
            "window": FLOOD_WINDOW,
            "connections": len(connections),
            "flood_s": until - go,
            "sent": sum(c.sent for c in connections),
            "pongs": sum(c.pongs for c in connections),
            "rate_limited": sum(c.rate_limited for c in connections),
            "other_replies": other,
            "retry_after_max": max(retry_afters, default=None),
            "first_rate_limited_s": since_go(min(limited_at, default=None)),
            "closed_by_server": len(ended),
            "close_codes": close_codes,
            "open_at_end": bool(connections) and connections[-1].closed_at is None,
            "refused": self.refused,
            # The first connection alone: how long one flat-out connection lasts, and what it got.
            "first": {
                "sent": first.sent,
                "pongs": first.pongs,
                "rate_limited": first.rate_limited,
                "close_code": first.close_code,
                "closed_s": since_go(first.closed_at),
            },
        }


async def open_flooders(url: str, k: int, reconnect: bool) -> list[Flooder]:
    flooders = [Flooder(url, reconnect) for _ in range(k)]
    await asyncio.gather(*(f.connect() for f in flooders))
    return flooders


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


def cpu_seconds(pids: list[int]) -> list[float]:
    """utime + stime of each of these processes (every thread), from /proc."""
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


def percentile(values: array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fanout(args: argparse.Namespace) -> dict[str, Any]:
    watch_urls = args.watch_url or [args.url]
    latencies_by_url = [array("d") for _ in watch_urls]
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
    # The stalled ones subscribe first: ahead of every fast watcher in the run's fan-out order.
    stalled = await open_stalled(args.url, args.stalled, args.count)
    watchers = [
        w
        for i, (url, latencies) in enumerate(zip(watch_urls, latencies_by_url, strict=True))
        for w in await open_watchers(url, len(range(i, args.n, len(watch_urls))), args.count, latencies)
    ]
    flooders = await open_flooders(args.url, args.flooders, args.flood_reconnect)
    subscribed = [w.expect("subscribed") for w in [*stalled, *watchers]]
    for w in [*stalled, *watchers]:
        w.send({"type": "subscribe", "workflow_id": request["workflow_id"], "since_seq": request["seq"]})
    await asyncio.wait_for(asyncio.gather(*subscribed), 60)
    stop_watching = asyncio.Event()
    watching = asyncio.get_running_loop().create_task(watch_stalled(stalled, stop_watching)) if stalled else None
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu0 = cpu_seconds(args.cpu_pids)
    go = time.time()
    # The flood starts with the ticks (each flooder sends its first window on the next turn of the loop).
    flooding = [asyncio.get_running_loop().create_task(f.run()) for f in flooders]
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
    server_cpu = [after - before for before, after in zip(server_cpu0, cpu_seconds(args.cpu_pids), strict=True)]
    end = max((w.last_receipt for w in watchers), default=go)
    delivered = sum(w.received for w in watchers)
    expected = args.n * args.count
    elapsed = max(end - go, 1e-9)
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    latencies = array("d", (x for each in latencies_by_url for x in each))
    flood_end = time.time()
    for f in flooders:
        f.stop()
    if flooding:
        await asyncio.wait(flooding, timeout=10)
    if watching is not None:
        stop_watching.set()
        await watching
        for w in stalled:
            w.resume()
        await asyncio.wait([w.done for w in stalled], timeout=DRAIN_S)
    for w in [*stalled, *watchers, control]:
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
        "latency_p99_ms_by_url": [1000 * percentile(each, 0.99) for each in latencies_by_url],
        # The --cpu-pids, from go until the watchers were done: together, and each.
        "server_tick_cpu_s": sum(server_cpu),
        "server_tick_cpu_s_by_pid": server_cpu,
        "client_cpu_s": client_cpu,
        "client_cpu_share": client_cpu / elapsed,
        "stalled": args.stalled,
        "stalled_watchers": [w.report(go) for w in stalled],
        "flooders": args.flooders,
        "flooder_reports": [f.report(go, flood_end) for f in flooders],
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
    parser.add_argument(
        "--watch-url", action="append", help="fanout: the watchers' gateways, split evenly (default: --url)"
    )
    parser.add_argument(
        "--cpu-pids",
        type=lambda text: [int(pid) for pid in text.split(",") if pid],
        default=[],
        help="fanout: comma-separated server pids whose CPU seconds over the ticks are reported",
    )
    parser.add_argument("--stalled", type=int, default=0, help="fanout: watchers that stop reading once subscribed")
    parser.add_argument(
        "--flooders", type=int, default=0, help="fanout: clients sending pings flat out during the ticks"
    )
    parser.add_argument(
        "--flood-reconnect", action="store_true", help="fanout: a flooder the server closes connects again at once"
    )
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
