"""``make bench``: graphwire against a raw ``websockets.broadcast()`` server, in one run.

Each server runs pinned to core 0 and the load generator (``loadgen.py``, its own
process) to core 1, on loopback. Scenarios: one ``ticker`` run fanned out to N watchers,
flat out and paced; the same paced fan-out with and without a stalled watcher (one that
subscribes, then never reads); a paced fan-out with and without a flooder (a client
sending pings flat out, which the per-connection rate limits must keep from the
watchers); the fan-out through two gateways sharing the run through Redis (the gateways
and Redis all on core 0), against one gateway; the fan-out with Prometheus metrics off and
on; memory per idle connection. Every figure
is the median of the repetitions, and every graphwire figure is also given as a ratio to
the raw server's figure from the same run (the stalled and flood scenarios: to
graphwire's own run without the stalled watcher or the flooder; the cluster: to one
gateway; metrics: to the same gateway with them off), because these machines are noisy.

``--smoke`` runs a seconds-long profile (used by the test suite so the benchmark keeps
working); it checks correctness (no lost or duplicated events), not speed. ``--only``
runs some of the scenarios (``--only stalled``, ``--only cluster``); the report then holds
just those (``--out DIR`` keeps it away from ``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pinned(core: int, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return argv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerKind:
    name: str
    argv: list[str]
    ready_path: str | None  # HTTP path that answers when ready; None: wait for the port
    query: str = ""  # what the watchers add to the URL
    every_size: bool = True  # False: only at PLAIN_N watchers, to keep a full run short


GRAPHWIRE = [PY, "-m", "graphwire", "serve", "--log-level", "warning", "--port"]
# The plain-client row (watchers that did not ask for `batch` frames) runs at this size only.
PLAIN_N = {20, 1000}
SCENARIO_NAMES = ["flat", "paced", "stalled", "flood", "cluster", "metrics", "idle"]


def server_kinds() -> list[ServerKind]:
    return [
        # The SDKs ask for batching (`?batch=1`); a plain client does not, and never gets a batch.
        ServerKind("graphwire", GRAPHWIRE, "/ws/health", "?batch=1"),
        ServerKind("graphwire (plain client)", GRAPHWIRE, "/ws/health", "", every_size=False),
        ServerKind("raw-websockets", [PY, str(HERE / "raw_server.py"), "--port"], None),
    ]


class Server:
    def __init__(self, kind: ServerKind, env: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.port = free_port()
        # A file, not a pipe: nobody reads the server's log while it runs, and warnings
        # (slow consumers, a busy loop) filling a pipe would stop the server mid-run.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop(), outlives __init__
        self.process = subprocess.Popen(
            pinned(0, [*kind.argv, str(self.port)]),
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{kind.name} exited: {self.log.read().decode(errors='replace')}")
            try:
                if kind.ready_path:
                    urllib.request.urlopen(f"http://127.0.0.1:{self.port}{kind.ready_path}", timeout=1).close()
                else:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{kind.name} did not start")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workflow{self.kind.query}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def fanout(
    server: Server,
    n: int,
    count: int,
    interval_ms: float,
    payload: int,
    stalled: int = 0,
    flooders: int = 0,
    flood_reconnect: bool = False,
    peers: Sequence[Server] = (),
    helpers: Sequence[Server] = (),
) -> dict[str, Any]:
    """One loadgen run: the ticker starts on ``server``; the watchers split evenly over it and
    its ``peers`` (more gateways); the CPU of ``helpers`` (Redis) counts as the server's too."""
    budget = 60 + count * interval_ms / 1000 * 2
    counted = [server, *peers, *helpers]
    cpu0 = sum(s.cpu_seconds() for s in counted)
    wall0 = time.monotonic()
    done = subprocess.run(
        pinned(
            1,
            [
                PY,
                str(HERE / "loadgen.py"),
                "fanout",
                "--url",
                server.url,
                *(arg for s in (server, *peers) if peers for arg in ("--watch-url", s.url)),
                "--cpu-pids",
                ",".join(str(s.process.pid) for s in counted),
                "-n",
                str(n),
                "--count",
                str(count),
                "--interval-ms",
                str(interval_ms),
                "--payload-bytes",
                str(payload),
                "--timeout",
                str(budget),
                "--stalled",
                str(stalled),
                "--flooders",
                str(flooders),
                *(["--flood-reconnect"] if flood_reconnect else []),
            ],
        ),
        capture_output=True,
        text=True,
        timeout=budget + 120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loadgen failed against {server.kind.name}:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # Over the load generator's whole life (connect, subscribe, ticks): the server's share
    # of its core. The client's share covers the tick phase only (it measures itself).
    result["server_cpu_s"] = sum(s.cpu_seconds() for s in counted) - cpu0
    # Per delivery, the ticks only (the loadgen reads /proc at go and when the watchers are
    # done): connecting and subscribing the watchers is not a delivery's cost.
    result["server_cpu_s_per_100k"] = 100_000 * result["server_tick_cpu_s"] / max(result["delivered"], 1)
    result["server_cpu_share"] = result["server_cpu_s"] / max(time.monotonic() - wall0, 1e-9)
    return result


def taking_turns(
    reps: int, k: int, measure: Callable[[int], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``reps`` runs without (``measure(0)``) and with ``k`` (``measure(k)``), taking turns,
    who goes first swapping every repetition: drift of the machine falls on both alike."""
    runs: dict[int, list[dict[str, Any]]] = {0: [], k: []}
    for rep in range(reps):
        for each in (0, k) if rep % 2 == 0 else (k, 0):
            runs[each].append(measure(each))
    return runs[0], runs[k]


def on_fresh_server(kind: ServerKind, measure: Callable[[Server], T], env: Mapping[str, str] | None = None) -> T:
    """Start a server of ``kind`` (``env``: extra environment variables), measure it, stop it."""
    server = Server(kind, env)
    try:
        return measure(server)
    finally:
        server.stop()


def idle_memory(server: Server, n: int) -> float:
    """KB of server memory per idle connection (RSS growth over n connections)."""
    before = server.rss_kb()
    loader = subprocess.Popen(
        pinned(1, [PY, str(HERE / "loadgen.py"), "idle", "--url", server.url, "-n", str(n)]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert loader.stdout is not None
    assert loader.stdin is not None
    line = loader.stdout.readline()
    if not line.startswith("ready"):
        loader.kill()
        raise RuntimeError(f"idle loader failed against {server.kind.name}")
    time.sleep(1.0)
    after = server.rss_kb()
    loader.stdin.close()
    loader.wait(60)
    return (after - before) / n


@dataclass
class Scenario:
    name: str
    n: int
    count: int
    interval_ms: float


def scenarios(smoke: bool, offered: int) -> list[Scenario]:
    if smoke:
        return [Scenario("flat", 20, 50, 0), Scenario("paced", 20, 20, 5)]
    out: list[Scenario] = []
    for n in (100, 1000, 5000):
        out.append(Scenario("flat", n, max(100, 500_000 // n), 0))
        interval = 1000 * n / offered
        # Six seconds of ticks: p99 over a shorter run is decided by one hiccup of the machine.
        out.append(Scenario("paced", n, max(10, int(6000 / interval)), interval))
    out.append(Scenario("flat", 10_000, 30, 0))
    return out


@dataclass
class StallScenario:
    """Paced fan-out to n watchers, once as is and once with ``stalled`` more that never read."""

    n: int
    stalled: int
    count: int
    interval_ms: float
    payload: int


# The stalled scenario's gateway: a socket that takes no data for 2 s is closed (1013), and
# a peer that does not answer the close within 1 s is aborted, so that both happen within
# the six seconds of ticks. Both runs, with and without the stalled watcher, use it.
STALL_ENV = {"GRAPHWIRE_WRITE_TIMEOUT": "2", "GRAPHWIRE_CLOSE_TIMEOUT": "1"}
# Ticks this large fill a stalled socket (its ~8 KiB receive buffer, ~100 KB in the server's
# kernel, the transport's 64 KiB) within the first second; the run sends each watcher ~1 MB.
STALL_PAYLOAD = 8192


def stall_scenarios(smoke: bool, offered: int) -> list[StallScenario]:
    if smoke:
        # Four seconds: long enough for the gateway to close the stalled one (2 s + 1 s) mid-run.
        return [StallScenario(20, 1, 400, 10, STALL_PAYLOAD)]
    n = 1000
    interval = 1000 * n / offered  # the paced rows' rate
    return [StallScenario(n, 1, max(10, int(6000 / interval)), interval, STALL_PAYLOAD)]


def stall_row(stall: StallScenario, without: list[dict[str, Any]], stalled: list[dict[str, Any]]) -> dict[str, Any]:
    """The fast watchers' figures without and with the stalled watchers, side by side."""
    before, after = median_of(without), median_of(stalled)
    return {
        "server": "graphwire",
        "scenario": "stalled",
        "n": stall.n,
        "stalled": stall.stalled,
        "count": stall.count,
        "interval_ms": stall.interval_ms,
        "payload_bytes": stall.payload,
        "env": STALL_ENV,
        "without": before,
        "with": after,
        "p50_ratio": after["latency_p50_ms"] / before["latency_p50_ms"],
        "p99_ratio": after["latency_p99_ms"] / before["latency_p99_ms"],
        "p99_ms_each": {
            "without": [r["latency_p99_ms"] for r in without],
            "with": [r["latency_p99_ms"] for r in stalled],
        },
        # One list per repetition: what each stalled watcher saw.
        "stalled_watchers": [r["stalled_watchers"] for r in stalled],
    }


@dataclass
class FloodScenario:
    """Paced fan-out to n watchers, once as is and once with ``flooders`` clients pinging flat out."""

    n: int
    flooders: int
    count: int
    interval_ms: float
    reconnect: bool  # a flooder the gateway closes connects again at once


def flood_scenarios(smoke: bool, offered: int, reconnect: bool) -> list[FloodScenario]:
    if smoke:
        # One second of ticks: a flat-out flood is over 200 pings/s, and closed, well within it.
        return [FloodScenario(20, 1, 200, 5, reconnect)]
    n = 100
    interval = 1000 * n / offered  # the paced rows' rate
    return [FloodScenario(n, 1, max(10, int(6000 / interval)), interval, reconnect)]


def rate_limits_in_effect() -> dict[str, Any]:
    """The gateway's rate limits as its servers here get them: the defaults, unless GRAPHWIRE_* says otherwise."""
    settings = importlib.import_module("graphwire.settings").load_settings()
    overridden = sorted(k for k in os.environ if k.upper().startswith("GRAPHWIRE_RATE_LIMIT"))
    return {
        "per_connection": settings.rate_limit_per_connection,
        "close_after": settings.rate_limit_close_after,
        "overridden": overridden,  # empty: the defaults
    }


def flood_row(
    flood: FloodScenario, payload: int, without: list[dict[str, Any]], flooded: list[dict[str, Any]]
) -> dict[str, Any]:
    """The watchers' figures without and with the flooders, side by side, and what the flooders got."""
    before, after = median_of(without), median_of(flooded)
    return {
        "server": "graphwire",
        "scenario": "flood",
        "n": flood.n,
        "flooders": flood.flooders,
        "reconnect": flood.reconnect,
        "count": flood.count,
        "interval_ms": flood.interval_ms,
        "payload_bytes": payload,
        "rate_limits": rate_limits_in_effect(),
        "without": before,
        "with": after,
        "p50_ratio": after["latency_p50_ms"] / before["latency_p50_ms"],
        "p99_ratio": after["latency_p99_ms"] / before["latency_p99_ms"],
        "p99_ms_each": {
            "without": [r["latency_p99_ms"] for r in without],
            "with": [r["latency_p99_ms"] for r in flooded],
        },
        # Latency counts from a tick's sent_at, so a ticker slowed down by a busy gateway (it
        # sleeps interval_ms after each tick) does not show in it; how long the ticks took does.
        "ticks_s": {
            "due": flood.count * flood.interval_ms / 1000,
            "without": statistics.median(r["elapsed_s"] for r in without),
            "with": statistics.median(r["elapsed_s"] for r in flooded),
        },
        # One list per repetition: what each flooder sent and got.
        "flooder_reports": [r["flooder_reports"] for r in flooded],
    }


def redis_kind() -> ServerKind:
    """Debian's redis-server as tests/redis_proc.py starts it: loopback, nothing on disk."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("the cluster scenario needs redis-server: `make redis-server` installs Debian's")
    flags = ["--bind", "127.0.0.1", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
    return ServerKind("redis-server", [executable, *flags, "--loglevel", "warning", "--port"], None)


def on_fresh_cluster(redis: ServerKind, measure: Callable[[Server, Server, Server], T]) -> T:
    """Start Redis and two gateways on it (all on core 0, as one server is), measure them
    (``measure(a, b, redis)``), stop them."""
    started: list[Server] = []
    try:
        started.append(Server(redis))
        env = {"GRAPHWIRE_REDIS_URL": f"redis://127.0.0.1:{started[0].port}/0"}
        graphwire = server_kinds()[0]
        started += [Server(graphwire, env), Server(graphwire, env)]
        return measure(started[1], started[2], started[0])
    finally:
        for server in reversed(started):
            server.stop()


@dataclass
class ClusterScenario:
    """Fan-out to n watchers from one gateway, and from two sharing the run through Redis."""

    mode: str  # "paced" or "flat", as the fan-out rows
    n: int
    count: int
    interval_ms: float


# Issue 13: the Redis hop costs at most this much more CPU per delivery, and adds at most
# this much to paced p99.
CLUSTER_CPU_RATIO_GOAL = 1.25
CLUSTER_P99_GOAL_MS = 5.0


def cluster_scenarios(smoke: bool, offered: int) -> list[ClusterScenario]:
    if smoke:
        return [ClusterScenario("paced", 20, 20, 5), ClusterScenario("flat", 20, 50, 0)]
    out: list[ClusterScenario] = []
    for n in (1000, 5000):
        interval = 1000 * n / offered  # the paced rows' rate and length
        out.append(ClusterScenario("paced", n, max(10, int(6000 / interval)), interval))
        out.append(ClusterScenario("flat", n, max(100, 500_000 // n), 0))
    return out


def cluster_row(
    scenario: ClusterScenario, single: list[dict[str, Any]], cluster: list[dict[str, Any]]
) -> dict[str, Any]:
    """One gateway's figures and the cluster's side by side; CPU is per 100k deliveries."""
    one, two = median_of(single), median_of(cluster)
    cpu_one, cpu_two = one["server_cpu_s_per_100k"], two["server_cpu_s_per_100k"]
    cpu_ratio = cpu_two / cpu_one if cpu_one else None
    p99_diff = two["latency_p99_ms"] - one["latency_p99_ms"]
    return {
        "server": "graphwire",
        "scenario": "cluster",
        "mode": scenario.mode,
        "n": scenario.n,
        "count": scenario.count,
        "interval_ms": scenario.interval_ms,
        "single": one,
        "cluster": two,
        "cpu_ratio": cpu_ratio,
        "p99_diff_ms": p99_diff,
        # The cluster's watchers by gateway (A owns the run; B's events crossed Redis).
        "cluster_p99_ms_a_b": [statistics.median(r["latency_p99_ms_by_url"][i] for r in cluster) for i in (0, 1)],
        "tick_cpu_s": {
            "single": statistics.median(r["server_tick_cpu_s"] for r in single),
            "cluster_a_b_redis": [
                statistics.median(r["server_tick_cpu_s_by_pid"][i] for r in cluster) for i in (0, 1, 2)
            ],
        },
        "p99_ms_each": {
            "single": [r["latency_p99_ms"] for r in single],
            "cluster": [r["latency_p99_ms"] for r in cluster],
        },
        "cpu_s_per_100k_each": {
            "single": [r["server_cpu_s_per_100k"] for r in single],
            "cluster": [r["server_cpu_s_per_100k"] for r in cluster],
        },
        # None: too little CPU to time (a smoke run's few ticks).
        "goal_met": None
        if cpu_ratio is None
        else cpu_ratio <= CLUSTER_CPU_RATIO_GOAL and (scenario.mode != "paced" or p99_diff <= CLUSTER_P99_GOAL_MS),
    }


@dataclass
class MetricsScenario:
    """Fan-out with Prometheus metrics off (``GRAPHWIRE_METRICS=false``) and on (the default)."""

    mode: str  # "paced" or "flat", as the fan-out rows
    n: int
    count: int
    interval_ms: float


METRICS_OFF = {"GRAPHWIRE_METRICS": "false"}


def metrics_scenarios(smoke: bool, offered: int) -> list[MetricsScenario]:
    if smoke:
        return [MetricsScenario("flat", 20, 50, 0)]
    out: list[MetricsScenario] = []
    for n in (1000, 5000):
        interval = 1000 * n / offered  # the paced rows' rate and length
        out.append(MetricsScenario("paced", n, max(10, int(6000 / interval)), interval))
        out.append(MetricsScenario("flat", n, max(100, 500_000 // n), 0))
    return out


def metrics_row(scenario: MetricsScenario, off: list[dict[str, Any]], on: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics off and on side by side; CPU is per 100k deliveries."""
    a, b = median_of(off), median_of(on)
    cpu_off, cpu_on = a["server_cpu_s_per_100k"], b["server_cpu_s_per_100k"]
    return {
        "server": "graphwire",
        "scenario": "metrics",
        "mode": scenario.mode,
        "n": scenario.n,
        "count": scenario.count,
        "interval_ms": scenario.interval_ms,
        "off": a,
        "on": b,
        "deliveries_ratio": b["deliveries_per_s"] / a["deliveries_per_s"] if a["deliveries_per_s"] else None,
        "cpu_ratio": cpu_on / cpu_off if cpu_off else None,
        "p99_diff_ms": b["latency_p99_ms"] - a["latency_p99_ms"],
        "p99_ms_each": {"off": [r["latency_p99_ms"] for r in off], "on": [r["latency_p99_ms"] for r in on]},
        "cpu_s_per_100k_each": {
            "off": [r["server_cpu_s_per_100k"] for r in off],
            "on": [r["server_cpu_s_per_100k"] for r in on],
        },
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["deliveries_per_s", "latency_p50_ms", "latency_p99_ms", "client_cpu_share", "server_cpu_share"]
    keys += ["server_cpu_s_per_100k"]
    merged = {k: statistics.median(r[k] for r in runs) for k in keys}
    merged["lost"] = sum(r["lost"] for r in runs)
    merged["duplicates"] = sum(r["duplicates"] for r in runs)
    merged["unfinished"] = sum(r["unfinished"] for r in runs)
    merged["batches"] = sum(r.get("batches", 0) for r in runs)
    merged["runs"] = len(runs)
    return merged


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("graphwire", "uvicorn", "fastapi", "starlette", "websockets", "uvloop", "picows", "orjson"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def machine() -> str:
    model = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {model}, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--offered", type=int, default=20_000, help="paced load, deliveries/s")
    parser.add_argument("--payload-bytes", type=int, default=100, help="tick payload (the frame is ~100 bytes more)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--only", action="append", choices=SCENARIO_NAMES, help="run only these (repeatable)")
    parser.add_argument(
        "--flood-reconnect",
        action="store_true",
        help="flood scenario: the flooder connects again at once each time the gateway closes it",
    )
    args = parser.parse_args()
    only = set(args.only or SCENARIO_NAMES)
    reps = 1 if args.smoke else args.reps
    plan = [s for s in scenarios(args.smoke, args.offered) if s.name in only]
    stall_plan = stall_scenarios(args.smoke, args.offered) if "stalled" in only else []
    flood_plan = flood_scenarios(args.smoke, args.offered, args.flood_reconnect) if "flood" in only else []
    cluster_plan = cluster_scenarios(args.smoke, args.offered) if "cluster" in only else []
    metrics_plan = metrics_scenarios(args.smoke, args.offered) if "metrics" in only else []
    redis = redis_kind() if cluster_plan else None  # no redis-server: stop before anything runs
    idle_sizes = ([200] if args.smoke else [5000, 10_000]) if "idle" in only else []
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "profile": "smoke" if args.smoke else "full",
        "only": sorted(only),
        "reps": reps,
        "offered_paced": args.offered,
        "fanout": [],
        "stalled": [],
        "flood": [],
        "cluster": [],
        "metrics": [],
        "idle_kb_per_connection": {},
    }
    kinds = server_kinds()
    # The servers take turns within each repetition, so drift of the machine over the
    # minutes a full run takes falls on both alike, not on whichever was measured last.
    for scenario in plan:
        here = [kind for kind in kinds if kind.every_size or scenario.n in PLAIN_N]
        runs: dict[str, list[dict[str, Any]]] = {kind.name: [] for kind in here}
        for _ in range(reps):
            for kind in here:
                measure = functools.partial(
                    fanout,
                    n=scenario.n,
                    count=scenario.count,
                    interval_ms=scenario.interval_ms,
                    payload=args.payload_bytes,
                )
                runs[kind.name].append(on_fresh_server(kind, measure))
        for kind in here:
            row = {"server": kind.name, "scenario": scenario.name, "n": scenario.n, "count": scenario.count}
            row |= {"interval_ms": scenario.interval_ms} | median_of(runs[kind.name])
            results["fanout"].append(row)
            print(json.dumps(row), flush=True)
    # The raw server has no slow-consumer handling (broadcast() buffers without bound for a
    # socket that does not read), so only graphwire runs this, against itself without it.
    graphwire = next(kind for kind in kinds if kind.name == "graphwire")
    for stall in stall_plan:

        def stalled_run(k: int, stall: StallScenario = stall) -> dict[str, Any]:
            measure = functools.partial(
                fanout, n=stall.n, count=stall.count, interval_ms=stall.interval_ms, payload=stall.payload, stalled=k
            )
            return on_fresh_server(graphwire, measure, env=STALL_ENV)

        row = stall_row(stall, *taking_turns(reps, stall.stalled, stalled_run))
        results["stalled"].append(row)
        print(json.dumps(row), flush=True)
        print(stall_summary(row), flush=True)
    # The raw server has no rate limits (it answers every ping, however many), so only
    # graphwire runs this too, against itself without the flooder.
    for flood in flood_plan:

        def flooded_run(k: int, flood: FloodScenario = flood) -> dict[str, Any]:
            measure = functools.partial(
                fanout,
                n=flood.n,
                count=flood.count,
                interval_ms=flood.interval_ms,
                payload=args.payload_bytes,
                flooders=k,
                flood_reconnect=flood.reconnect,
            )
            return on_fresh_server(graphwire, measure)

        row = flood_row(flood, args.payload_bytes, *taking_turns(reps, flood.flooders, flooded_run))
        results["flood"].append(row)
        print(json.dumps(row), flush=True)
        print(flood_summary(row), flush=True)
    # One gateway, then two on Redis with the run on A and the watchers half on A, half on B,
    # taking turns; every process of either on core 0, so CPU per delivery compares.
    for cluster in cluster_plan:
        assert redis is not None

        def cluster_run(two: int, cluster: ClusterScenario = cluster, redis: ServerKind = redis) -> dict[str, Any]:
            measure = functools.partial(
                fanout, n=cluster.n, count=cluster.count, interval_ms=cluster.interval_ms, payload=args.payload_bytes
            )
            if not two:
                return on_fresh_server(graphwire, measure)
            return on_fresh_cluster(redis, lambda a, b, r: measure(a, peers=[b], helpers=[r]))

        row = cluster_row(cluster, *taking_turns(reps, 1, cluster_run))
        results["cluster"].append(row)
        print(json.dumps(row), flush=True)
    # The same gateway with Prometheus metrics off and on, taking turns: what counting costs.
    for scenario in metrics_plan:

        def metrics_run(on: int, scenario: MetricsScenario = scenario) -> dict[str, Any]:
            measure = functools.partial(
                fanout, n=scenario.n, count=scenario.count, interval_ms=scenario.interval_ms, payload=args.payload_bytes
            )
            return on_fresh_server(graphwire, measure, env=None if on else METRICS_OFF)

        row = metrics_row(scenario, *taking_turns(reps, 1, metrics_run))
        results["metrics"].append(row)
        print(json.dumps(row), flush=True)
    idle_kinds = [kind for kind in kinds if kind.every_size]
    for n in idle_sizes:
        values: dict[str, list[float]] = {kind.name: [] for kind in idle_kinds}
        for _ in range(reps):
            for kind in idle_kinds:
                values[kind.name].append(on_fresh_server(kind, functools.partial(idle_memory, n=n)))
        for kind in idle_kinds:
            kb = statistics.median(values[kind.name])
            results["idle_kb_per_connection"].setdefault(kind.name, {})[str(n)] = kb
            print(kind.name, "idle", n, kb, "KB/conn", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "RESULTS.md").write_text(render(results))
    print(render(results))
    compared = [*results["stalled"], *results["flood"]]
    measured = [*results["fanout"], *(r[side] for r in compared for side in ("without", "with"))]
    measured += [r[side] for r in results["cluster"] for side in ("single", "cluster")]
    measured += [r[side] for r in results["metrics"] for side in ("off", "on")]
    bad = [r for r in measured if r["lost"] or r["duplicates"] or r["unfinished"]]
    return 1 if bad else 0


def each(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def stall_summary(row: dict[str, Any]) -> str:
    before, after = row["without"], row["with"]
    return (
        f"stalled: {row['n']} fast watchers, p99 {before['latency_p99_ms']:.1f} ms without, "
        f"{after['latency_p99_ms']:.1f} ms with {row['stalled']} stalled ({row['p99_ratio']:.2f}×); "
        f"p50 {before['latency_p50_ms']:.1f} / {after['latency_p50_ms']:.1f} ms; "
        f"lost {before['lost']} / {after['lost']}, duplicates {before['duplicates']} / {after['duplicates']}; "
        f"p99 of each run: {each(row['p99_ms_each']['without'])} without, {each(row['p99_ms_each']['with'])} with. "
        f"The stalled watcher: {describe_stalled(row)}"
    )


def describe_stalled(row: dict[str, Any]) -> str:
    """What happened to the stalled watchers, over every repetition, seen from outside."""
    reports = [w for rep in row["stalled_watchers"] for w in rep]
    if not reports:
        return "none ran."

    def median(key: str) -> float | None:
        values = [w[key] for w in reports if w[key] is not None]
        return statistics.median(values) if values else None

    def of(count: int) -> str:
        return f"{count}/{len(reports)}"

    kept = median("ticks_kept") or 0
    last = median("last_tick_sent_s")
    unsent = (median("server_send_queue_max") or 0) / 1000
    text = f"medians of {len(reports)}: once it read again it got {kept:.0f} of {row['count']} ticks"
    if last is not None:
        text += f", the last sent {last:+.1f} s after the first tick"
    text += f" ({unsent:.0f} KB sat unsent in the server's kernel); "
    closed = [w for w in reports if w["close_code"] is not None or w["server_closed_s"] is not None]
    if closed:
        at = median("server_closed_s")
        text += f"the server closed it in {of(len(closed))} runs"
        text += f", its end of the socket {at:+.1f} s after the first tick" if at is not None else ""
        framed = [w for w in closed if w["close_code"] is not None]
        codes = ", ".join(sorted({str(w["close_code"]) for w in framed}))
        text += f"; close frame {codes} in {of(len(framed))}" if framed else ""
        aborted = len(closed) - len(framed)
        text += f"; aborted (the stream ended without a close frame) in {of(aborted)}" if aborted else ""
        seen = median("client_end_s")
        text += f"; its own end saw the FIN or reset {seen:+.1f} s" if seen is not None else ""
    else:
        text += f"the server had not closed it when the fast watchers were done ({of(len(reports))} runs)"
    completed = sum(1 for w in reports if w["completed"])
    return text + (f"; it got workflow_completed in {of(completed)}." if completed else ".")


def flood_summary(row: dict[str, Any]) -> str:
    before, after = row["without"], row["with"]
    return (
        f"flood: {row['n']} watchers, p99 {before['latency_p99_ms']:.1f} ms without, "
        f"{after['latency_p99_ms']:.1f} ms with {row['flooders']} flooder ({row['p99_ratio']:.2f}×); "
        f"p50 {before['latency_p50_ms']:.1f} / {after['latency_p50_ms']:.1f} ms; "
        f"lost {before['lost']} / {after['lost']}, duplicates {before['duplicates']} / {after['duplicates']}; "
        f"server CPU {100 * before['server_cpu_share']:.0f}% / {100 * after['server_cpu_share']:.0f}%; "
        f"the ticks took {row['ticks_s']['without']:.2f} / {row['ticks_s']['with']:.2f} s "
        f"({row['ticks_s']['due']:g} s of intervals); "
        f"p99 of each run: {each(row['p99_ms_each']['without'])} without, {each(row['p99_ms_each']['with'])} with. "
        f"The flooder: {describe_flooders(row)}"
    )


def describe_flooders(row: dict[str, Any]) -> str:
    """What the flooders sent and got, over every repetition (medians), seen from their end."""
    reports = [f for rep in row["flooder_reports"] for f in rep]
    if not reports:
        return "none ran."

    def median(get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for v in map(get, reports) if v is not None]
        return statistics.median(values) if values else None

    def of(count: int) -> str:
        return f"{count}/{len(reports)}"

    text = f"medians of {len(reports)}: it sent {median(lambda f: f['sent']):,.0f} pings"
    if row["reconnect"]:
        text += f" over {median(lambda f: f['flood_s']):.1f} s"
    text += (
        f" and got {median(lambda f: f['pongs']):,.0f} pongs and "
        f"{median(lambda f: f['rate_limited']):,.0f} rate_limited errors"
    )
    first_limited = median(lambda f: f["first_rate_limited_s"])
    if first_limited is not None:
        text += f" (the first {first_limited:+.2f} s after the first tick"
        retry = median(lambda f: f["retry_after_max"])
        text += f", retry_after up to {retry:.2f} s)" if retry is not None else ")"
    firsts = [f["first"] for f in reports]
    closed = [c for c in firsts if c["closed_s"] is not None]
    if closed:
        codes = ", ".join(sorted({str(c["close_code"]) for c in closed}))
        at = statistics.median(c["closed_s"] for c in closed)
        text += (
            f"; the gateway closed its (first) connection in {of(len(closed))} runs, close code {codes}, "
            f"{at:+.2f} s after the first tick, after {statistics.median(c['pongs'] for c in closed):,.0f} pongs "
            f"and {statistics.median(c['rate_limited'] for c in closed):,.0f} rate_limited"
        )
    else:
        text += "; the gateway had not closed it when the watchers were done"
    if row["reconnect"]:
        text += (
            f"; coming back each time, it opened {median(lambda f: f['connections']):,.0f} connections, "
            f"{median(lambda f: f['closed_by_server']):,.0f} closed by the gateway "
            f"({', '.join(sorted({k for f in reports for k in f['close_codes']})) or 'none'})"
        )
    other = sorted({k for f in reports for k in f["other_replies"]})
    text += f"; other replies: {', '.join(other)}" if other else ""
    refused = [f["refused"] for f in reports if f["refused"]]
    text += f"; a reconnect failed in {of(len(refused))} ({refused[0]})" if refused else ""
    return text + "."


def render(results: dict[str, Any]) -> str:
    rows = results["fanout"]
    raw = {(r["scenario"], r["n"]): r for r in rows if r["server"] == "raw-websockets"}
    only = results.get("only", [])
    partial = f", only {', '.join(only)}" if set(only) != set(SCENARIO_NAMES) else ""
    lines = [
        "# Fan-out benchmark",
        "",
        f"Generated by `make bench` (`bench/run.py`, profile {results['profile']}{partial}) on {results['date']}.",
        f"Machine: {results['machine']}. Server pinned to core 0, load generator (picows, own process) to core 1.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        f"Medians of {results['reps']} repetitions; one `ticker` run fanned out to N watchers; "
        f"paced = {results['offered_paced']} deliveries/s offered. Ratios are graphwire ÷ raw from this same run.",
        "",
        "`graphwire` rows: watchers that ask for `batch` frames (`?batch=1`, as the SDKs do); `graphwire (plain",
        "client)`: watchers that did not ask (the seed's bare `websockets` client), which get every frame on its own.",
    ]
    if rows:
        lines += fanout_table(rows, raw)
    if results.get("stalled"):
        lines += stall_table(results["stalled"])
    if results.get("flood"):
        lines += flood_table(results["flood"])
    if results.get("cluster"):
        lines += cluster_table(results["cluster"])
    if results.get("metrics"):
        lines += metrics_table(results["metrics"])
    if results["idle_kb_per_connection"]:
        lines += ["", "| server | idle connections | KB per idle connection |", "|---|---|---|"]
        for server, sizes in results["idle_kb_per_connection"].items():
            for n, kb in sizes.items():
                lines.append(f"| {server} | {n} | {kb:.1f} |")
    return "\n".join(lines) + "\n"


def fanout_table(rows: list[dict[str, Any]], raw: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "p99 ratio (paced rows): graphwire's p99 latency ÷ the raw server's; below 1 is lower. Flat out,",
        "latency is time spent queued behind a producer that outruns the reader, so it is not compared.",
        "",
        "| scenario | N | server | deliveries/s | ratio | p50 ms | p99 ms | p99 ratio | lost | dup "
        "| server CPU | client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = raw.get((r["scenario"], r["n"]))
        ratio = p99_ratio = ""
        if base is not None and r is not base:
            ratio = f"{r['deliveries_per_s'] / base['deliveries_per_s']:.2f}×"
            if r["scenario"] == "paced":
                p99_ratio = f"{r['latency_p99_ms'] / base['latency_p99_ms']:.2f}"
        lines.append(
            f"| {r['scenario']} | {r['n']} | {r['server']} | {r['deliveries_per_s']:,.0f} | {ratio} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | {p99_ratio} | {r['lost']} | "
            f"{r['duplicates']} | {100 * r['server_cpu_share']:.0f}% | {100 * r['client_cpu_share']:.0f}% |"
        )
    bound = [r for r in rows if r["client_cpu_share"] >= 0.9]
    if bound:
        lines += [
            "",
            f"{len(bound)} row(s) ran the load generator's core at 90% or more: there the client was the "
            "limit, and the server's deliveries/s is a lower bound (compare its server CPU).",
        ]
    return lines


def stall_table(rows: list[dict[str, Any]]) -> list[str]:
    env = ", ".join(f"`{k}={v}`" for k, v in rows[0]["env"].items())
    lines = [
        "",
        "## A stalled watcher among fast ones",
        "",
        "The paced rate above (graphwire, `?batch=1`), with ticks of 8 KiB so that a socket that does not",
        "read is full within a second (hence higher latencies than the paced rows'), run twice in each",
        "repetition, taking turns (who goes first alternates): N fast watchers alone, and the same N with",
        "stalled watchers that subscribe to the same run (ahead of the fast ones), then never read again",
        "(receive buffer 4 KiB and MSS 1460 set before connecting, `pause_reading()` once `subscribed`",
        "arrives). Their frames are not counted: the figures are the fast watchers'. The stalled watcher",
        "is watched from outside (netlink `sock_diag`, as `ss` does: how the server's end of its socket",
        "stands) and reads again once the fast ones are done, to see what it had been kept.",
        f"Gateway: {env}, defaults otherwise.",
        "The raw-websockets server is not run here: `websockets.broadcast()` has no slow-consumer",
        "handling (it buffers without bound for a socket that does not read, and `raw_server.py` turns",
        "keepalive pings off).",
        "",
        "| N fast | stalled | ticks × payload | p50 ms without | p50 ms with | p99 ms without | p99 ms with "
        "| p99 with ÷ without | lost | dup | client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["without"], r["with"]
        lines.append(
            f"| {r['n']} | {r['stalled']} | {r['count']} × {r['payload_bytes']:,} B every {r['interval_ms']:g} ms | "
            f"{a['latency_p50_ms']:.1f} | {b['latency_p50_ms']:.1f} | {a['latency_p99_ms']:.1f} | "
            f"{b['latency_p99_ms']:.1f} | {r['p99_ratio']:.2f} | {a['lost']} / {b['lost']} | "
            f"{a['duplicates']} / {b['duplicates']} | {100 * a['client_cpu_share']:.0f}% / "
            f"{100 * b['client_cpu_share']:.0f}% |"
        )
    for r in rows:
        each_run = r["p99_ms_each"]
        lines += [
            "",
            f"N={r['n']}: p99 of each run, ms: {each(each_run['without'])} without; {each(each_run['with'])} with.",
            f"The stalled watcher, {describe_stalled(r)}",
        ]
    return lines


def flood_table(rows: list[dict[str, Any]]) -> list[str]:
    limits = rows[0]["rate_limits"]
    settings = (
        "defaults (no `GRAPHWIRE_RATE_LIMIT_*` set)"
        if not limits["overridden"]
        else "set by " + ", ".join(f"`{k}`" for k in limits["overridden"])
    )
    reconnect = any(r["reconnect"] for r in rows)
    window = next((f["window"] for r in rows for rep in r["flooder_reports"] for f in rep), "?")
    lines = [
        "",
        "## A flooding client among watchers",
        "",
        "The paced rate above (graphwire, `?batch=1`), run twice in each repetition, taking turns (who goes",
        "first alternates): N watchers alone, and the same N with a flooder, a client on the same gateway",
        'that sends `{"type":"ping","id":"f"}` flat out from the first tick until the watchers are done.',
        f"It keeps up to {window} pings unanswered (every ping gets a pong or a `rate_limited` error), so the",
        "gateway always has its next one to read, and it reads what comes back (it is not a slow consumer).",
        "The figures are the watchers'; the flooder's own are below. Latency counts from a tick's `sent_at`,",
        "so a ticker slowed down by a busy gateway (it sleeps the interval after each tick) does not show",
        "in it: *ticks took* does (the first tick to the last one received, the intervals alone add up to",
        "ticks × interval).",
        f"Gateway rate limits: per connection `{limits['per_connection']}`, closed (1008) past "
        f"{limits['close_after']:g}× that; {settings}.",
    ]
    if reconnect:
        lines.append(
            "Run with `--flood-reconnect`: each time the gateway closes the flooder, it connects again at once."
        )
    lines += [
        "The raw-websockets server is not run here: it has no rate limits (`raw_server.py` answers every",
        "ping, however many), so there is nothing of its to compare.",
        "",
        "| N watchers | flooders | ticks | p50 ms without | p50 ms with | p99 ms without | p99 ms with "
        "| p99 with ÷ without | ticks took s | lost | dup | server CPU | client CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["without"], r["with"]
        lines.append(
            f"| {r['n']} | {r['flooders']} | {r['count']} × {r['payload_bytes']:,} B every {r['interval_ms']:g} ms | "
            f"{a['latency_p50_ms']:.1f} | {b['latency_p50_ms']:.1f} | {a['latency_p99_ms']:.1f} | "
            f"{b['latency_p99_ms']:.1f} | {r['p99_ratio']:.2f} | "
            f"{r['ticks_s']['without']:.2f} / {r['ticks_s']['with']:.2f} | {a['lost']} / {b['lost']} | "
            f"{a['duplicates']} / {b['duplicates']} | {100 * a['server_cpu_share']:.0f}% / "
            f"{100 * b['server_cpu_share']:.0f}% | {100 * a['client_cpu_share']:.0f}% / "
            f"{100 * b['client_cpu_share']:.0f}% |"
        )
    for r in rows:
        each_run = r["p99_ms_each"]
        lines += [
            "",
            f"N={r['n']}: p99 of each run, ms: {each(each_run['without'])} without; {each(each_run['with'])} with.",
            f"The flooder, {describe_flooders(r)}",
            "",
            "| run | pings sent | pongs | rate_limited | first connection closed | close codes | connections |",
            "|---|---|---|---|---|---|---|",
        ]
        for i, rep in enumerate(r["flooder_reports"], 1):
            for f in rep:
                first = f["first"]
                closed = (
                    f"{first['close_code'] or 'no close frame'}, {first['closed_s']:+.2f} s"
                    if first["closed_s"] is not None
                    else "no (open at the end)"
                )
                codes = ", ".join(f"{code} × {n}" for code, n in sorted(f["close_codes"].items())) or "-"
                lines.append(
                    f"| {i} | {f['sent']:,} | {f['pongs']:,} | {f['rate_limited']:,} | {closed} | {codes} | "
                    f"{f['connections']} |"
                )
    return lines


def cluster_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Cluster: the same fan-out through two gateways and Redis",
        "",
        "One `ticker` run fanned out to N watchers (`?batch=1`), run twice in each repetition, taking",
        "turns (who goes first alternates): on one gateway, and on two gateways sharing the run through",
        "Redis (`GRAPHWIRE_REDIS_URL`, Debian's `redis-server` on loopback with no RDB or AOF). The run",
        "starts on gateway A; half the watchers subscribe on A, half on B (the same `subscribe`), so",
        "half the deliveries cross Redis: A appends each event to the run's Stream and PUBLISHes it, B",
        "fans it out to its own watchers. Both gateways and Redis share core 0, as the one gateway has",
        "it alone; the load generator has core 1. CPU: utime + stime of every server process (gateways",
        "and Redis together, from `/proc`) from the first tick until the watchers are done, per 100k",
        "deliveries. Paced: the fan-out rows' rate (the ticker sleeps the interval after each tick and",
        "its gateway's own fan-out, so A, with half the watchers, ticks a little faster); flat: as fast",
        "as it goes (p99 is time queued there, and CPU per delivery follows the events per frame).",
        "",
        "| mode | N | ticks | deliveries/s single | cluster | p99 ms single | cluster | Δ p99 ms "
        "| CPU s per 100k single | cluster | ratio | lost | dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        one, two = r["single"], r["cluster"]
        ratio = f"{r['cpu_ratio']:.2f}×" if r["cpu_ratio"] is not None else "-"
        ticks = f"{r['count']} every {r['interval_ms']:g} ms" if r["interval_ms"] else f"{r['count']} flat out"
        lines.append(
            f"| {r['mode']} | {r['n']} | {ticks} | "
            f"{one['deliveries_per_s']:,.0f} | {two['deliveries_per_s']:,.0f} | {one['latency_p99_ms']:.1f} | "
            f"{two['latency_p99_ms']:.1f} | {r['p99_diff_ms']:+.1f} | {one['server_cpu_s_per_100k']:.2f} | "
            f"{two['server_cpu_s_per_100k']:.2f} | {ratio} | {one['lost']} / {two['lost']} | "
            f"{one['duplicates']} / {two['duplicates']} |"
        )
    lines.append("")
    for r in rows:
        one, two = r["single"], r["cluster"]
        a, b = r["cluster_p99_ms_a_b"]
        each_p99, each_cpu = r["p99_ms_each"], r["cpu_s_per_100k_each"]
        cpu_a, cpu_b, cpu_redis = r["tick_cpu_s"]["cluster_a_b_redis"]
        # Flat out, CPU per delivery follows the events per frame: a backlog makes larger batches.
        framing = (
            ""
            if r["mode"] == "paced"
            else f"batch frames per watcher {one['batches'] / one['runs'] / r['n']:.1f} single, "
            f"{two['batches'] / two['runs'] / r['n']:.1f} cluster; "
        )
        lines.append(
            f"- {r['mode']}, N={r['n']}: the cluster's p99 on A's watchers {a:.1f} ms, on B's {b:.1f} ms; "
            f"CPU s over the ticks {r['tick_cpu_s']['single']:.2f} single, A {cpu_a:.2f} + B {cpu_b:.2f} + "
            f"Redis {cpu_redis:.2f} cluster; {framing}"
            f"p99 of each run {each(each_p99['single'])} single, {each(each_p99['cluster'])} cluster; "
            f"CPU s per 100k {each(each_cpu['single'], 2)} single, {each(each_cpu['cluster'], 2)} cluster."
        )
    missed = [f"{r['mode']} N={r['n']}" for r in rows if r["goal_met"] is False]
    untimed = [f"{r['mode']} N={r['n']}" for r in rows if r["goal_met"] is None]
    verdict = f"not met in {', '.join(missed)}" if missed else "met in every row"
    verdict += f" (too little CPU to time in {', '.join(untimed)})" if untimed else ""
    return [
        *lines,
        "",
        f"Goal (issue 13): the Redis hop costs at most {CLUSTER_CPU_RATIO_GOAL - 1:.0%} more CPU per delivery "
        f"(every row) and adds at most {CLUSTER_P99_GOAL_MS:g} ms to paced p99: {verdict}.",
    ]


def metrics_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## What Prometheus metrics cost",
        "",
        "One `ticker` run fanned out to N watchers (`?batch=1`) on one gateway, run twice in each",
        "repetition, taking turns (who goes first alternates): with `GRAPHWIRE_METRICS=false` (no",
        "per-frame counting, `GET /metrics` 404) and with the default (metrics on). Fan-out counts",
        "once per event (one label lookup, one `inc` of the number of watchers), never per delivery.",
        "CPU: the gateway's utime + stime from the first tick until the watchers are done, per 100k deliveries.",
        "",
        "| mode | N | ticks | deliveries/s off | on | on ÷ off | p99 ms off | on | Δ p99 ms "
        "| CPU s per 100k off | on | on ÷ off | lost | dup |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a, b = r["off"], r["on"]
        ticks = f"{r['count']} every {r['interval_ms']:g} ms" if r["interval_ms"] else f"{r['count']} flat out"
        ratio = f"{r['deliveries_ratio']:.2f}×" if r["deliveries_ratio"] is not None else "-"
        cpu = f"{r['cpu_ratio']:.2f}×" if r["cpu_ratio"] is not None else "-"
        lines.append(
            f"| {r['mode']} | {r['n']} | {ticks} | {a['deliveries_per_s']:,.0f} | {b['deliveries_per_s']:,.0f} | "
            f"{ratio} | {a['latency_p99_ms']:.1f} | {b['latency_p99_ms']:.1f} | {r['p99_diff_ms']:+.1f} | "
            f"{a['server_cpu_s_per_100k']:.2f} | {b['server_cpu_s_per_100k']:.2f} | {cpu} | "
            f"{a['lost']} / {b['lost']} | {a['duplicates']} / {b['duplicates']} |"
        )
    lines.append("")
    for r in rows:
        each_p99, each_cpu = r["p99_ms_each"], r["cpu_s_per_100k_each"]
        lines.append(
            f"- {r['mode']}, N={r['n']}: p99 of each run {each(each_p99['off'])} off, {each(each_p99['on'])} on; "
            f"CPU s per 100k {each(each_cpu['off'], 2)} off, {each(each_cpu['on'], 2)} on."
        )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
