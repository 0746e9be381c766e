"""``RunView``, the delivery oracle, fed messages directly: no socket, no server."""

from __future__ import annotations

from typing import Any

import pytest

from contract.oracle import RunView

T = "2026-11-25T12:00:00+00:00"


def event(kind: str, seq: int, run: str = "r1", **fields: Any) -> dict[str, Any]:
    return {"type": kind, "workflow_id": run, "seq": seq, "timestamp": T, **fields}


def started(run: str = "r1", **fields: Any) -> dict[str, Any]:
    return event("workflow_started", 1, run, workflow="tick", **fields)


def subscribed(run: str, since: int, last: int, **fields: Any) -> dict[str, Any]:
    snapshot = {"workflow_id": run, "workflow": "tick", "status": "running", "last_seq": last, "pending_inputs": []}
    return {"type": "subscribed", "topics": [], "workflow_id": run, "since_seq": since, "snapshot": snapshot, **fields}


def test_a_started_run_is_followed_gap_free_to_one_terminal_event() -> None:
    view = RunView()
    view.observe(started(reply_to="c1"))
    for seq in (2, 3):
        view.observe(event("node_event", seq, node_id="n", event="tick", data={}))
    view.observe(event("workflow_completed", 4, result={}))
    assert view.last == {"r1": 4}
    assert view.terminal["r1"]["seq"] == 4


def test_a_start_without_id_is_told_from_an_event_by_the_count_of_starts() -> None:
    view = RunView(starts_expected=1)
    view.observe(started())
    assert view.attached == {"r1"}
    with pytest.raises(AssertionError, match="neither started nor subscribed"):
        view.observe(started("r2"))


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([started(reply_to="c"), event("token", 3, node_id="n", token="x")], "seq 3 where 2 was due"),
        ([started(reply_to="c"), event("token", 2, node_id="n", token="x")] * 2, "seq 2 where 3 was due"),
        ([event("token", 2, node_id="n", token="x")], "neither started nor subscribed"),
        (
            [started(reply_to="c"), event("workflow_cancelled", 2), event("workflow_failed", 3, error={})],
            "a second terminal event",
        ),
        (
            [started(reply_to="c"), event("workflow_cancelled", 2), event("token", 3, node_id="n", token="x")],
            "after its terminal event",
        ),
        (
            [
                started(reply_to="c"),
                event("input_answered", 2, node_id="n", request_id="q", data={}),
                event("input_answered", 3, node_id="n", request_id="q", data={}),
            ],
            "answered twice",
        ),
        (
            [
                started(reply_to="c"),
                event("input_closed", 2, node_id="n", request_id="q", reason="timeout"),
                event("input_closed", 3, node_id="n", request_id="q", reason="timeout"),
            ],
            "closed twice",
        ),
        (
            [
                started(reply_to="c"),
                event("input_answered", 2, node_id="n", request_id="q", data={}),
                event("input_closed", 3, node_id="n", request_id="q", reason="node_finished"),
            ],
            "closed unanswered after it was answered",
        ),
        (
            [
                started(reply_to="c"),
                event("input_closed", 2, node_id="n", request_id="q", reason="timeout"),
                event("input_answered", 3, node_id="n", request_id="q", data={}),
            ],
            "answered after it was closed",
        ),
    ],
)
def test_broken_promises_fail_at_once(messages: list[dict[str, Any]], error: str) -> None:
    view = RunView()
    for message in messages[:-1]:
        view.observe(message)
    with pytest.raises(AssertionError, match=error):
        view.observe(messages[-1])


def test_resume_continues_exactly_after_since_seq() -> None:
    view = RunView()
    view.observe(subscribed("r1", since=5, last=7))
    view.observe(event("token", 6, node_id="n", token="x"))
    with pytest.raises(AssertionError, match="seq 8 where 7 was due"):
        view.observe(event("token", 8, node_id="n", token="x"))


def test_resubscribing_while_attached_repeats_nothing() -> None:
    view = RunView()
    view.observe(started(reply_to="c"))
    view.observe(event("token", 2, node_id="n", token="x"))
    view.observe(subscribed("r1", since=0, last=2))
    with pytest.raises(AssertionError, match="seq 1 where 3 was due"):
        view.observe(started())


def test_after_unsubscribe_nothing_of_the_run_may_arrive() -> None:
    view = RunView()
    view.observe(started(reply_to="c"))
    view.observe({"type": "ack", "command": "unsubscribe", "workflow_id": "r1"})
    with pytest.raises(AssertionError, match="neither started nor subscribed"):
        view.observe(event("token", 2, node_id="n", token="x"))


def test_a_truncated_log_replays_from_first_seq() -> None:
    view = RunView()
    view.observe(subscribed("r1", since=0, last=50, log_truncated=True, first_seq=41))
    view.observe(event("token", 41, node_id="n", data="x"))


@pytest.mark.parametrize(
    ("result", "known_gaps"),
    [({"count": 0, "sum": 0, "mean": 0}, True), ({"count": 2, "sum": None, "mean": None}, False)],
)
def test_a_result_must_keep_its_workflow_schema(result: dict[str, Any], known_gaps: bool) -> None:
    view = RunView(known_gaps=known_gaps)
    view.observe({**started(reply_to="c"), "workflow": "data_processing"})
    with pytest.raises(AssertionError, match="result breaks its workflow's schema"):
        view.observe(event("workflow_completed", 2, data=result))
