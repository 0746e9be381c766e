"""Prometheus metrics of one gateway process, served at ``GET /metrics`` (``prometheus-client``).

Each process is its own scrape target (``--workers N`` gives N targets, no multiprocess
mode), with its own ``CollectorRegistry`` so that several apps in one test process never
share counters. Labels are bounded sets only: endpoints, frame types and error codes of
the spec, close codes the spec or RFC 6455 name, registered workflow names, run statuses.
Never a run id, a client id or a user.

The fan-out path pays one label lookup per event, not one per delivery: ``Flusher``
counts the connections it handed a frame to and adds them in one ``inc``; a frame's type
is read from the front of the encoded frame (``{"type":"...``), where ``encode`` puts it.

Counters the broker, the run store and the Redis rate limits already keep (outages,
failed writes) are read when scraped (``_BrokerCollector``), adding nothing to their paths.
"""

from __future__ import annotations

import bisect
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from pydantic import BaseModel

from graphwire._generated import messages as spec
from graphwire._generated.messages import CloseCode, ErrorCode
from graphwire.protocol import frame_type

__all__ = ["OFF", "LoopHistogram", "Metrics", "type_label"]

# A `_created` series per counter and label set doubles what is scraped and says nothing
# an operator asks about; off for the process (prometheus-client's own switch).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Every `type` the spec defines (server and client frames): the only values of a `type` label.
FRAME_TYPES = frozenset(
    str(const)
    for model in vars(spec).values()
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields
    for const in typing.get_args(model.model_fields["type"].annotation)
    if isinstance(const, str)
)
ERROR_CODES = frozenset(code.value for code in ErrorCode)
# Close codes the spec names, and RFC 6455's that a peer or the transport may report.
CLOSE_CODES = frozenset(int(code.value) for code in CloseCode) | {1000, 1001, 1005, 1006, 1007, 1011, 1012}
OTHER = "other"
# Received frames that have no type of their own: not JSON or not valid, binary, too large.
RECEIVED_OTHERWISE = frozenset({"invalid", "binary", "oversized"})

_ERROR_HEAD = '{"type":"error","code":"'
# Bytes waiting for one connection: 1 KiB up to the default send_queue_max_bytes (16 MiB).
QUEUE_BUCKETS = tuple(float(1024 * 4**i) for i in range(8))
# Runs last from milliseconds to hours; a person answers in seconds to days.
RUN_BUCKETS = (0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def type_label(frame: str) -> str:
    """The ``type`` of an encoded frame, as a label: one of the spec's, else ``other``."""
    kind = frame_type(frame)
    return kind if kind in FRAME_TYPES else OTHER


class Metrics:
    """The gateway's counters, gauges and histograms; ``enabled=False`` skips the hot paths.

    With ``enabled`` off (``GRAPHWIRE_METRICS=false``) the per-frame and per-write methods
    return at once and ``GET /metrics`` is 404; what happens once per run or connection
    is still counted (it costs nothing measurable), into a registry nobody reads.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = registry = CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        # 1, labelled with this process's gateway_id (one per process): which worker answered.
        self.gateway_info = Gauge(
            "graphwire_gateway_info",
            "This gateway process; its gateway_id as a label.",
            ["gateway_id"],
            registry=registry,
        )
        self.connections = Gauge(
            "graphwire_connections", "Open WebSocket connections, by endpoint.", ["endpoint"], registry=registry
        )
        # The counter shares the gauge's name (graphwire_connections_total in the text format),
        # which prometheus-client's registry would refuse: it is collected from plain ints.
        self.connections_opened: dict[str, int] = {"workflow": 0, "chat": 0}
        registry.register(_Collected(lambda: [self._connections_total()]))
        self.disconnects = counter(
            "graphwire_disconnects",
            "Connections ended, by close code (other: a code the spec does not name).",
            ("code",),
        )
        self.received = counter(
            "graphwire_messages_received",
            "Frames received from clients, by type (invalid: not a valid frame; binary; oversized).",
            ("type",),
        )
        self._received: dict[str, Any] = {}
        self.sent = counter(
            "graphwire_messages_sent",
            "Frames handed to connections to send, by type (frames in a batch count).",
            ("type",),
        )
        self._sent: dict[str, Any] = {}
        self.batches = counter("graphwire_batches_sent", "batch frames written (each holds several frames).")
        self.queue_bytes = LoopHistogram(
            "graphwire_send_queue_bytes",
            "Bytes waiting in a connection's send queue, seen each time it writes from the queue.",
            QUEUE_BUCKETS,
        )
        registry.register(_Collected(lambda: [self.queue_bytes.family()]))
        self.slow_consumer_closes = counter(
            "graphwire_slow_consumer_closes",
            "Connections closed with 1013 as slow consumers: queue over its bound, or no data accepted "
            "for write_timeout.",
            ("reason",),
        )
        self.resumes = counter(
            "graphwire_resumes",
            "subscribe with since_seq or epoch: recovered (exactly the missed events), truncated (log_truncated), "
            "new_epoch (the log was recreated).",
            ("outcome",),
        )
        # Read at scrape time from the run manager (Gateway sets the function).
        self.runs_in_flight = Gauge(
            "graphwire_runs_in_flight",
            "Runs whose graph is running on this gateway (waiting for input included).",
            registry=registry,
        )
        self.runs_started = counter(
            "graphwire_runs_started", "Runs started on this gateway, by workflow.", ("workflow",)
        )
        self.runs_finished = counter(
            "graphwire_runs_finished",
            "Runs that ended on this gateway, by workflow and status (completed, failed, cancelled).",
            ("workflow", "status"),
        )
        self.run_duration = Histogram(
            "graphwire_run_duration_seconds",
            "How long runs ran on this gateway, from start (or take-over) to their end.",
            ["workflow"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.input_wait = Histogram(
            "graphwire_input_wait_seconds",
            "From an input_request to its answer.",
            ["workflow"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.errors = counter("graphwire_errors", "error frames sent, by code.", ("code",))
        self._errors: dict[str, Any] = {}
        self.rate_limited = counter("graphwire_rate_limited", "Commands refused with rate_limited.")
        self.abuse_closes = counter(
            "graphwire_rate_limit_closes", "Connections closed with 1008 for going far over the rate limit."
        )
        self.auth_failures = counter(
            "graphwire_auth_failures",
            "Tokens and handshakes refused: missing, invalid, expired, forbidden (scope), origin.",
            ("reason",),
        )
        self.broker_gap_repairs = counter(
            "graphwire_broker_gap_repairs", "Holes in a mirrored run's events filled from its Redis stream."
        )
        self.runs_reclaimed = counter(
            "graphwire_runs_reclaimed", "Runs taken over from a gateway that went away (or handed them over)."
        )
        self.publish_lag = Histogram(
            "graphwire_broker_publish_lag_seconds",
            "With Redis: from a broadcast handed to the broker, or a run's oldest unwritten event, to Redis "
            "acknowledging its PUBLISH (queue wait and round trip).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self._broker_errors: Callable[[], dict[str, int]] = dict
        registry.register(_Collected(lambda: [self._broker_errors_total()]))
        for endpoint in self.connections_opened:
            self.connections.labels(endpoint)

    # -- hot paths: gated on `enabled` ------------------------------------------------

    def received_frame(self, kind: str) -> None:
        if self.enabled:
            child = self._received.get(kind)
            if child is None:
                child = self._received[kind] = self.received.labels(
                    kind if kind in FRAME_TYPES or kind in RECEIVED_OTHERWISE else OTHER
                )
            child.inc()

    def sent_frame(self, frame: str) -> None:
        """One frame to one connection (a reply, a replayed event); errors count by code too."""
        if self.enabled:
            kind = self.sent_frames(frame, 1)
            if kind == "error" and frame.startswith(_ERROR_HEAD):
                code = frame[len(_ERROR_HEAD) : frame.find('"', len(_ERROR_HEAD))]
                child = self._errors.get(code)
                if child is None:
                    child = self._errors[code] = self.errors.labels(code if code in ERROR_CODES else OTHER)
                child.inc()

    def sent_frames(self, frame: str, count: int) -> str:
        """One frame fanned out to ``count`` connections: one lookup, one ``inc``."""
        kind = type_label(frame)
        if self.enabled and count:
            child = self._sent.get(kind)
            if child is None:
                child = self._sent[kind] = self.sent.labels(kind)
            child.inc(count)
        return kind

    def wrote_from_queue(self, queued_bytes: int) -> None:
        if self.enabled:
            self.queue_bytes.observe(queued_bytes)

    def batch_sent(self) -> None:
        if self.enabled:
            self.batches.inc()

    def published(self, lag: float) -> None:
        if self.enabled:
            self.publish_lag.observe(lag)

    # -- the rest ----------------------------------------------------------------------

    def connected(self, endpoint: str) -> None:
        self.connections_opened[endpoint] += 1
        self.connections.labels(endpoint).inc()

    def disconnected(self, endpoint: str, code: int) -> None:
        self.connections.labels(endpoint).dec()
        self.disconnects.labels(str(code) if code in CLOSE_CODES else OTHER).inc()

    def watch_broker(self, errors: Callable[[], dict[str, int]]) -> None:
        """Where ``graphwire_broker_errors_total`` is read from at each scrape: kind -> count."""
        self._broker_errors = errors

    def _connections_total(self) -> Metric:
        family = CounterMetricFamily(
            "graphwire_connections", "WebSocket connections accepted, by endpoint.", labels=["endpoint"]
        )
        for endpoint, count in self.connections_opened.items():
            family.add_metric([endpoint], count)
        return family

    def _broker_errors_total(self) -> Metric:
        family = CounterMetricFamily(
            "graphwire_broker_errors",
            "With Redis: outages (Redis unreachable), frames Redis did not take, run writes that failed, "
            "rate-limit checks that failed; by kind.",
            labels=["kind"],
        )
        for kind, count in sorted(self._broker_errors().items()):
            family.add_metric([kind], count)
        return family

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve_on(self, host: str, port: int) -> None:
        """Also answer scrapes on ``host:port`` (``GRAPHWIRE_METRICS_PORT``), from a thread of
        prometheus-client's: a worker's own target, whichever worker the gateway's port picks.

        Collecting there reads counters the loop writes; every value is one int or float,
        so a scrape may be a moment behind, never torn.
        """
        start_http_server(port, host, self.registry)


class LoopHistogram:
    """A histogram observed from the event loop's thread only, without prometheus-client's locks.

    ``graphwire_send_queue_bytes`` is observed on every write from a queue, which flat-out
    fan-out does for thousands of sockets per flush; prometheus-client's ``observe`` takes
    a lock per bucket it counts and one for the sum, and ``make bench`` showed it. Here a
    ``bisect`` and two additions; the cumulative buckets are built at scrape time.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> Metric:
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            cumulative.append((floatToGoString(bound), total))  # type: ignore[no-untyped-call]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, self.sum)
        return family


class _Collected:
    """A collector of families built at scrape time."""

    def __init__(self, build: Callable[[], list[Metric]]) -> None:
        self._build = build

    def describe(self) -> list[Metric]:
        # Nothing to check against the registry's names: graphwire_connections_total would
        # clash with the gauge graphwire_connections in its (OpenMetrics) view.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._build()


# What components built without a gateway (unit tests) count into.
OFF = Metrics(enabled=False)
