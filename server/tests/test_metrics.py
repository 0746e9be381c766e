"""graphwire.metrics in-process: frame types as labels, bounded values, the off switch."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from graphwire._generated.messages import ErrorCode
from graphwire.metrics import Metrics, type_label
from graphwire.protocol import ProtocolError, error_frame


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_frames_type_is_read_from_its_front_and_unknown_ones_are_other() -> None:
    assert type_label('{"type":"token","workflow_id":"run_1"}') == "token"
    assert type_label('{"type":"run_abcdef","x":1}') == "other"  # not a type of the spec
    assert type_label('{"seq":1,"type":"token"}') == "other"  # not where encode puts it
    assert type_label("junk") == "other"


def test_fan_out_adds_once_and_errors_count_by_code() -> None:
    metrics = Metrics()
    metrics.sent_frames('{"type":"token"}', 1000)
    metrics.sent_frame(error_frame(ProtocolError(ErrorCode.unknown_run, "no such run")))
    metrics.sent_frame('{"type":"error","code":"made_up_code","message":"m"}')
    metrics.received_frame("ping")
    metrics.received_frame("cl_0123456789abcdef")  # never a label of its own
    got = samples(metrics)
    assert got[("graphwire_messages_sent_total", (("type", "token"),))] == 1000
    assert got[("graphwire_messages_sent_total", (("type", "error"),))] == 2
    assert got[("graphwire_errors_total", (("code", "unknown_run"),))] == 1
    assert got[("graphwire_errors_total", (("code", "other"),))] == 1
    assert got[("graphwire_messages_received_total", (("type", "other"),))] == 1
    assert not any(value.startswith("cl_") for _, labels in got for _, value in labels)


def test_off_skips_the_per_frame_counting() -> None:
    metrics = Metrics(enabled=False)
    metrics.sent_frames('{"type":"token"}', 1000)
    metrics.received_frame("ping")
    metrics.wrote_from_queue(4096)
    metrics.batch_sent()
    got = samples(metrics)
    assert ("graphwire_messages_sent_total", (("type", "token"),)) not in got
    assert got[("graphwire_batches_sent_total", ())] == 0
    assert got[("graphwire_send_queue_bytes_count", ())] == 0


def test_connections_gauge_and_counter_share_a_name_and_close_codes_are_bounded() -> None:
    metrics = Metrics()
    metrics.connected("workflow")
    metrics.connected("chat")
    metrics.disconnected("chat", 1013)
    metrics.disconnected("workflow", 3999)  # a code the spec does not name
    got = samples(metrics)
    assert got[("graphwire_connections", (("endpoint", "workflow"),))] == 0
    assert got[("graphwire_connections_total", (("endpoint", "workflow"),))] == 1
    assert got[("graphwire_disconnects_total", (("code", "1013"),))] == 1
    assert got[("graphwire_disconnects_total", (("code", "other"),))] == 1
    assert not any(name.endswith("_created") for name, _ in got)


def test_the_loop_histogram_exposes_what_prometheus_clients_histogram_does() -> None:
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from graphwire.metrics import QUEUE_BUCKETS, LoopHistogram

    registry = CollectorRegistry()
    theirs = Histogram("q", "d", buckets=QUEUE_BUCKETS, registry=registry)
    ours = LoopHistogram("q", "d", QUEUE_BUCKETS)
    for value in (0, 1024, 1025, 70_000, 16 * 1_048_576, 10**9):
        theirs.observe(value)
        ours.observe(value)
    mine = CollectorRegistry()
    mine.register(type("C", (), {"collect": lambda self: [ours.family()], "describe": lambda self: []})())
    assert generate_latest(mine) == generate_latest(registry)
