"""The sans-I/O core without sockets: frames in, routed messages and commands out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from graphwire_client._core import MAX_RESYNCS, ClientCore, PendingCommand
from graphwire_client._generated.messages import (
    Ack,
    CancelWorkflow,
    Connected,
    ErrorCode,
    JoinGroup,
    NodeInput,
    Ping,
    Pong,
    StartWorkflow,
    Subscribe,
    Subscribed,
    WorkflowStarted,
)
from graphwire_client.exceptions import BadRequest, InputClosed, InputRejected, InvalidParams, RunLost, UnknownRun

TS = "2026-11-25T12:00:00+00:00"
WID = "run_1"
HELLO = Connected(type="connected", client_id="cl_1", protocol_version="1", max_message_size=4096)


def frame(*messages: dict[str, Any]) -> str:
    """One frame: a single message, or a ``batch`` of several."""
    if len(messages) == 1:
        return json.dumps(messages[0])
    return json.dumps({"type": "batch", "messages": list(messages)})


def started(seq: int = 1, reply_to: str | None = None, wid: str = WID, epoch: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "workflow_started",
        "workflow_id": wid,
        "seq": seq,
        "timestamp": TS,
        "workflow": "approval",
    }
    if reply_to is not None:
        message["reply_to"] = reply_to
    if epoch is not None:
        message["epoch"] = epoch
    return message


def node(seq: int, wid: str = WID, status: str = "running") -> dict[str, Any]:
    return {
        "type": "node_update",
        "workflow_id": wid,
        "seq": seq,
        "timestamp": TS,
        "node_id": "n",
        "data": {"status": status},
    }


def request(seq: int, request_id: str = "req_1") -> dict[str, Any]:
    return {
        "type": "input_request",
        "workflow_id": WID,
        "seq": seq,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": request_id,
        "prompt": "Ship?",
        "options": ["yes", "no"],
    }


def answered(seq: int, value: str = "yes", request_id: str = "req_1") -> dict[str, Any]:
    return {
        "type": "input_answered",
        "workflow_id": WID,
        "seq": seq,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": request_id,
        "data": {"value": value},
    }


def closed(seq: int, reason: str = "timeout", request_id: str = "req_1") -> dict[str, Any]:
    return {
        "type": "input_closed",
        "workflow_id": WID,
        "seq": seq,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": request_id,
        "reason": reason,
    }


def completed(seq: int, wid: str = WID) -> dict[str, Any]:
    return {"type": "workflow_completed", "workflow_id": wid, "seq": seq, "timestamp": TS, "data": {"ok": True}}


def subscribed(reply_to: str, since: int, last: int, status: str = "running", **extra: Any) -> dict[str, Any]:
    snapshot = {"workflow_id": WID, "workflow": "approval", "status": status, "last_seq": last, "pending_inputs": []}
    snapshot.update(extra.pop("snapshot", {}))
    return {
        "type": "subscribed",
        "reply_to": reply_to,
        "topics": [],
        "workflow_id": WID,
        "since_seq": since,
        "snapshot": snapshot,
        **extra,
    }


def error(code: str, reply_to: str | None, **extra: Any) -> dict[str, Any]:
    message = {"type": "error", "code": code, "message": f"{code}!", **extra}
    if reply_to is not None:
        message["reply_to"] = reply_to
    return message


def online() -> ClientCore:
    core = ClientCore()
    core.connection_made(HELLO)
    return core


def sent(core: ClientCore) -> list[dict[str, Any]]:
    """What the core would write now, as wire dicts."""
    out, refused = core.take_outgoing()
    assert refused == []
    return [json.loads(text) for _, text in out]


def start(core: ClientCore, epoch: str | None = None) -> PendingCommand:
    """A started run: the start command answered with seq 1 (naming ``epoch``, if given)."""
    pending = core.command(StartWorkflow(type="start_workflow", workflow="approval"), WorkflowStarted)
    sent(core)
    core.receive_text(frame(started(reply_to=pending.id, epoch=epoch)))
    return pending


# --- parse and route ----------------------------------------------------------------------


def test_a_command_gets_an_id_and_its_answer_by_reply_to() -> None:
    core = online()
    pending = core.command(Ping(type="ping"), Pong)
    assert sent(core) == [{"type": "ping", "id": pending.id}]
    received = core.receive_text(frame({"type": "pong", "reply_to": pending.id, "timestamp": TS}))
    assert received.settled == [pending]
    assert isinstance(pending.reply, Pong)
    assert [d.message.type for d in received.deliveries] == ["pong"]
    assert received.deliveries[0].reply is pending


def test_start_workflow_always_carries_an_idempotency_key() -> None:
    core = online()
    core.command(StartWorkflow(type="start_workflow", workflow="chat"), WorkflowStarted)
    core.command(StartWorkflow(type="start_workflow", workflow="chat", idempotency_key="mine"), WorkflowStarted)
    first, second = sent(core)
    assert first["idempotency_key"].startswith("gw-")
    assert second["idempotency_key"] == "mine"


def test_a_batch_is_unpacked_in_order_and_run_events_go_to_their_run() -> None:
    core = online()
    pending = core.command(StartWorkflow(type="start_workflow", workflow="approval"), WorkflowStarted)
    sent(core)
    received = core.receive_text(frame(started(reply_to=pending.id), node(2), request(3)))
    assert pending.run is not None
    run = pending.run
    assert [e.seq for e in run.events] == [1, 2, 3]
    assert [d.message.type for d in received.deliveries] == ["workflow_started", "node_update", "input_request"]
    assert all(d.run is run for d in received.deliveries)
    assert received.changed == [run]
    assert list(run.pending_inputs) == ["req_1"]
    assert run.workflow == "approval"
    assert isinstance(pending.reply, WorkflowStarted)
    assert pending.reply.reply_to == pending.id, "the answer keeps reply_to"
    assert run.events[0].reply_to is None, "the run's seq 1 is the log's"  # type: ignore[union-attr]


def test_a_repeated_seq_is_dropped() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.receive_text(frame(node(2)))
    again = core.receive_text(frame(node(2), node(1, status="completed"), node(3)))
    assert [d.message.seq for d in again.deliveries] == [3]  # type: ignore[union-attr]
    assert [e.seq for e in run.events] == [1, 2, 3]


def test_a_gap_resubscribes_from_the_last_seq_and_the_replay_fills_it() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    gap = core.receive_text(frame(node(2), node(4), node(5)))
    assert [d.message.seq for d in gap.deliveries] == [2]  # type: ignore[union-attr]
    unsubscribe, subscribe = sent(core)
    assert unsubscribe == {"type": "unsubscribe", "id": unsubscribe["id"], "workflow_id": WID}
    assert subscribe == {"type": "subscribe", "id": subscribe["id"], "workflow_id": WID, "since_seq": 2}
    core.receive_text(frame(node(6)))  # still in flight: no second resubscribe
    assert sent(core) == []
    filled = core.receive_text(
        frame(
            {"type": "ack", "reply_to": unsubscribe["id"], "command": "unsubscribe"}, subscribed(subscribe["id"], 2, 5)
        )
    )
    assert filled.deliveries == []  # answers to the core's own commands stay inside
    core.receive_text(frame(node(3), node(4), node(5), completed(6)))
    assert [e.seq for e in run.events] == [1, 2, 3, 4, 5, 6]
    assert run.done
    assert WID not in core.runs


def test_a_gap_that_never_fills_loses_the_run() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    for _ in range(MAX_RESYNCS):
        core.receive_text(frame(node(9)))
        _, subscribe = sent(core)
        core.receive_text(frame(subscribed(subscribe["id"], 1, 9)))
    core.receive_text(frame(node(9)))
    assert isinstance(run.failure, RunLost)
    assert run.done


def test_an_error_answer_fails_its_command_with_the_mapped_exception() -> None:
    core = online()
    pending = core.command(StartWorkflow(type="start_workflow", workflow="chat", params={}), WorkflowStarted)
    sent(core)
    received = core.receive_text(frame(error("invalid_params", pending.id, path="params.message")))
    assert isinstance(pending.error, InvalidParams)
    assert pending.error.code is ErrorCode.invalid_params
    assert pending.error.path == "params.message"
    assert [d.message.type for d in received.deliveries] == ["error"]


def test_an_error_without_reply_to_is_only_delivered() -> None:
    core = online()
    received = core.receive_text(frame(error("rate_limited", None, retry_after=1.5)))
    assert received.settled == []
    (delivery,) = received.deliveries
    assert delivery.message.type == "error"
    assert delivery.message.retry_after == 1.5  # type: ignore[union-attr]


def test_bad_frames_are_skipped_and_the_rest_of_a_batch_still_counts() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    assert core.receive_text("not json").deliveries == []
    assert core.receive_text(frame({"type": "from_the_future"})).deliveries == []
    received = core.receive_text(frame({"type": "node_update", "workflow_id": WID, "seq": "x"}, node(2)))
    assert [d.message.type for d in received.deliveries] == ["node_update"]
    assert run.last_seq == 2


def test_topic_and_group_messages_are_delivered() -> None:
    core = online()
    received = core.receive_text(
        frame(
            {"type": "topic_message", "topic": "news", "data": {"a": 1}, "timestamp": TS},
            {"type": "system_alert", "group": "ops", "message": "hi", "timestamp": TS},
        )
    )
    assert [d.message.type for d in received.deliveries] == ["topic_message", "system_alert"]


# --- resume ---------------------------------------------------------------------------


def test_offline_commands_wait_for_the_connection_and_go_once() -> None:
    core = ClientCore()
    pending = core.command(JoinGroup(type="join_group", group="ops"), Ack)
    assert core.take_outgoing() == ([], [])
    core.connection_made(HELLO)
    assert sent(core) == [{"type": "join_group", "id": pending.id, "group": "ops"}]


def test_reconnect_resubscribes_open_runs_topics_and_groups_then_resends_unanswered_commands() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.receive_text(frame(node(2), request(3)))
    finished = core.command(StartWorkflow(type="start_workflow", workflow="chat"), WorkflowStarted)
    sent(core)
    core.receive_text(frame(started(reply_to=finished.id, wid="run_2"), completed(2, wid="run_2")))
    topics = core.command(Subscribe(type="subscribe", topics=["news"]), Subscribed)
    group = core.command(JoinGroup(type="join_group", group="ops"), Ack)
    answer = core.command(NodeInput(type="node_input", workflow_id=WID, node_id="approve", data={"value": "yes"}), Ack)
    sent(core)
    core.receive_text(
        frame(
            {"type": "subscribed", "reply_to": topics.id, "topics": ["news"]},
            {"type": "ack", "reply_to": group.id, "command": "join_group"},
        )
    )
    core.connection_lost()
    assert core.take_outgoing() == ([], [])
    core.connection_made(HELLO)
    out = sent(core)
    assert [m["type"] for m in out] == ["subscribe", "subscribe", "join_group", "node_input"]
    assert {k: out[0][k] for k in ("workflow_id", "since_seq")} == {"workflow_id": WID, "since_seq": 3}
    assert (out[1]["topics"], out[2]["group"]) == (["news"], "ops")
    assert out[-1]["id"] == answer.id, "a repeated command keeps its id"
    assert answer.attempts == 2
    assert "run_2" not in [m.get("workflow_id") for m in out], "a finished run is not resumed"


def test_the_resume_snapshot_restores_pending_inputs() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.receive_text(frame(node(2)))
    core.connection_lost()
    core.connection_made(HELLO)
    (resubscribe,) = sent(core)
    pending = {"request_id": "req_1", "node_id": "approve", "prompt": "Ship?", "options": ["yes", "no"]}
    core.receive_text(
        frame(subscribed(resubscribe["id"], 2, 3, status="waiting", snapshot={"pending_inputs": [pending]}))
    )
    assert list(run.pending_inputs) == ["req_1"], "known from the snapshot before the replay arrives"
    core.receive_text(frame(request(3)))
    assert run.node_of("req_1") == "approve"
    core.receive_text(frame(answered(4)))
    assert run.pending_inputs == {}
    assert run.node_of("req_1") == "approve"


def test_a_pending_attach_is_resent_with_the_seq_reached() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    sent(core)
    core.connection_lost()
    core.connection_made(HELLO)
    (again,) = sent(core)
    assert again == {"type": "subscribe", "id": attach.id, "workflow_id": WID, "since_seq": 0}
    core.receive_text(frame(subscribed(attach.id, 0, 2), started(), node(2)))
    assert attach.reply is not None
    assert attach.run is not None
    assert attach.run.last_seq == 2


def test_a_repeated_start_fetches_the_log_it_did_not_replay() -> None:
    core = online()
    pending = core.command(StartWorkflow(type="start_workflow", workflow="approval"), WorkflowStarted)
    (first,) = sent(core)
    core.connection_lost()  # the answer never came
    core.connection_made(HELLO)
    (second,) = sent(core)
    assert second == first, "same id, same idempotency_key"
    core.receive_text(frame(started(reply_to=pending.id)))
    unsubscribe, subscribe = sent(core)
    assert (unsubscribe["type"], subscribe["since_seq"]) == ("unsubscribe", 1)


def test_an_answer_carries_one_idempotency_key_and_goes_again_identical_after_a_drop() -> None:
    core = online()
    start(core)
    core.receive_text(frame(request(2)))
    message = NodeInput(
        type="node_input", workflow_id=WID, node_id="approve", request_id="req_1", data={"value": "yes"}
    )
    pending = core.command(message, Ack)
    (first,) = sent(core)
    assert first["idempotency_key"].startswith("gw-")
    other = core.command(message, Ack)
    (second,) = sent(core)
    assert second["idempotency_key"] != first["idempotency_key"], "one key per answer"
    core.receive_text(frame({"type": "ack", "reply_to": other.id, "command": "node_input", "workflow_id": WID}))
    core.connection_lost()
    core.connection_made(HELLO)
    resubscribe, repeat = sent(core)
    assert resubscribe["type"] == "subscribe"
    assert repeat == first, "same id, same idempotency_key, same data and request"
    # The gateway acks the repeat of the answer it applied.
    core.receive_text(frame(subscribed(resubscribe["id"], 2, 3), answered(3)))
    received = core.receive_text(
        frame({"type": "ack", "reply_to": repeat["id"], "command": "node_input", "workflow_id": WID})
    )
    assert isinstance(pending.reply, Ack)
    assert received.settled == [pending]


def test_a_repeated_answer_refused_as_already_answered_fails_even_with_the_same_data() -> None:
    # Another client answered "yes" first: the gateway says so, and seeing the same data
    # in input_answered does not make it ours.
    core = online()
    start(core)
    core.receive_text(frame(request(2)))
    data = {"value": "yes"}
    message = NodeInput(type="node_input", workflow_id=WID, node_id="approve", request_id="req_1", data=data)
    pending = core.command(message, Ack)
    sent(core)
    core.connection_lost()
    core.connection_made(HELLO)
    resubscribe, repeat = sent(core)
    core.receive_text(
        frame(subscribed(resubscribe["id"], 2, 3), answered(3), error("input_already_answered", repeat["id"]))
    )
    assert isinstance(pending.error, InputRejected)
    assert pending.error.code is ErrorCode.input_already_answered


def test_a_repeated_cancel_of_a_finished_run_counts_as_done() -> None:
    core = online()
    start(core)
    pending = core.command(CancelWorkflow(type="cancel_workflow", workflow_id=WID), Ack)
    sent(core)
    core.connection_lost()
    core.connection_made(HELLO)
    _, repeat = sent(core)
    core.receive_text(frame(error("run_finished", repeat["id"])))
    assert isinstance(pending.reply, Ack)


@pytest.mark.parametrize("code", ["unknown_run", "since_seq_ahead"])
def test_a_run_the_server_forgot_is_lost(code: str) -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.connection_lost()
    core.connection_made(HELLO)
    (resubscribe,) = sent(core)
    received = core.receive_text(frame(error(code, resubscribe["id"], workflow_id=WID)))
    assert isinstance(run.failure, RunLost)
    assert WID not in core.runs
    assert received.changed == [run]
    assert received.deliveries == []


def test_attaching_to_an_unknown_run_fails_the_attach() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id="nope"), Subscribed)
    sent(core)
    core.receive_text(frame(error("unknown_run", attach.id, workflow_id="nope")))
    assert isinstance(attach.error, UnknownRun)
    assert "nope" not in core.runs


def test_attaching_with_a_since_seq_ahead_of_the_run_fails_the_attach() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=99), Subscribed)
    sent(core)
    core.receive_text(frame(error("since_seq_ahead", attach.id, workflow_id=WID)))
    assert isinstance(attach.error, BadRequest)
    assert attach.error.code is ErrorCode.since_seq_ahead
    assert WID not in core.runs


def test_a_truncated_log_jumps_to_its_first_seq() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    sent(core)
    core.receive_text(frame(subscribed(attach.id, 0, 41, log_truncated=True, first_seq=40), node(40), node(41)))
    assert attach.run is not None
    assert [e.seq for e in attach.run.events] == [40, 41]
    assert attach.run.truncated
    assert not attach.run.recovered, "a server before 0.5.0 says only log_truncated"


# --- the log's epoch and recovered ------------------------------------------------------------


def attached(core: ClientCore, epoch: str = "e1", upto: int = 3) -> PendingCommand:
    """An attached run: ``subscribed`` with ``epoch``, then seqs 1 (started), 2 (an input request) … ``upto``."""
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    sent(core)
    replay = [started(), request(2), *(node(seq) for seq in range(3, upto + 1))]
    core.receive_text(frame(subscribed(attach.id, 0, upto, epoch=epoch, recovered=True, first_seq=1), *replay))
    return attach


def resumed(core: ClientCore) -> dict[str, Any]:
    """Drop the connection and open a new one: the one frame the core sends, its resume."""
    core.connection_lost()
    core.connection_made(HELLO)
    (resume,) = sent(core)
    return resume


def test_a_resume_and_a_resync_name_the_epoch_of_the_last_subscribed() -> None:
    core = online()
    run = attached(core).run
    assert run is not None
    assert (run.epoch, run.recovered) == ("e1", True)
    resume = resumed(core)
    assert {k: resume.get(k) for k in ("type", "workflow_id", "since_seq", "epoch")} == {
        "type": "subscribe",
        "workflow_id": WID,
        "since_seq": 3,
        "epoch": "e1",
    }
    core.receive_text(frame(subscribed(resume["id"], 3, 3, epoch="e1", recovered=True, first_seq=1)))
    core.receive_text(frame(node(5)))  # 4 went missing
    _unsubscribe, resync = sent(core)
    assert (resync["since_seq"], resync["epoch"]) == (3, "e1")


def test_a_started_run_resumes_naming_the_epoch_of_its_workflow_started_until_a_subscribed_names_one() -> None:
    core = online()
    run = start(core, epoch="e1").run
    assert run is not None
    assert run.epoch == "e1", "no subscribed yet: the start's answer names the log"
    resume = resumed(core)
    assert (resume["since_seq"], resume["epoch"]) == (1, "e1")
    # Redis lost the log meanwhile: the gateway answers with its new epoch and the whole log,
    # whose seq 1 still names the epoch it was first written under.
    core.receive_text(
        frame(
            subscribed(resume["id"], 0, 2, epoch="e2", recovered=False, first_seq=1),
            started(epoch="e1"),
            node(2),
        )
    )
    assert run.epoch == "e2", "the subscribed is the newest"
    assert resumed(core)["epoch"] == "e2"


@pytest.mark.parametrize(
    ("named", "kept"), [(None, "e1"), ("e2", "e2")], ids=["subscribed-without-epoch", "subscribed-with-epoch"]
)
def test_a_watcher_takes_the_epoch_of_seq_1_only_when_its_subscribed_named_none(named: str | None, kept: str) -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    sent(core)
    extra = {} if named is None else {"epoch": named}
    core.receive_text(frame(subscribed(attach.id, 0, 1, **extra), started(epoch="e1")))
    assert attach.run is not None
    assert attach.run.epoch == kept
    assert resumed(core)["epoch"] == kept


@pytest.mark.parametrize("epoch", [None, "", "x" * 65], ids=["none", "empty", "too-long"])
def test_a_started_run_resumes_without_an_epoch_when_workflow_started_names_none_it_can_carry(
    epoch: str | None,
) -> None:
    core = online()
    run = start(core, epoch=epoch).run  # None: as from a server before 0.5.0
    assert run is not None
    assert run.epoch is None
    assert "epoch" not in resumed(core), "a subscribe carries 1 to 64 characters of epoch"


def test_a_recreated_log_rebuilds_the_run_from_the_snapshot_and_the_whole_replay() -> None:
    core = online()
    run = attached(core).run
    assert run is not None
    assert list(run.pending_inputs) == ["req_1"]
    resume = resumed(core)
    # Another epoch: the gateway replays its whole recreated log (same events, same seqs).
    # Meanwhile the request was answered and the run went on; the snapshot says so.
    core.receive_text(
        frame(
            subscribed(resume["id"], 0, 5, epoch="e2", recovered=False, log_truncated=False, first_seq=1),
            started(),
            request(2),
            node(3),
            answered(4),
            node(5),
        )
    )
    assert not run.recovered
    assert not run.truncated, "no seq was skipped"
    assert run.epoch == "e2"
    assert [e.seq for e in run.events] == [1, 2, 3, 4, 5], "seqs already seen are not appended twice"
    assert run.pending_inputs == {}
    assert resumed(core)["epoch"] == "e2", "the next resume names the new log"


def test_a_recreated_log_that_no_longer_reaches_back_jumps_like_a_truncated_one() -> None:
    core = online()
    run = attached(core).run
    assert run is not None
    resume = resumed(core)
    received = core.receive_text(
        frame(
            subscribed(resume["id"], 0, 8, epoch="e2", recovered=False, log_truncated=True, first_seq=7),
            node(7),
            node(8),
        )
    )
    assert (run.recovered, run.truncated) == (False, True)
    assert [e.seq for e in run.events] == [1, 2, 3, 7, 8]
    assert run.pending_inputs == {}, "the open input is the snapshot's (none), not the one seen at seq 2"
    assert [getattr(d.message, "seq", None) for d in received.deliveries] == [7, 8]
    assert sent(core) == [], "a jump the server announced is no gap to resync"


def test_a_recovered_resume_continues_the_view() -> None:
    core = online()
    run = attached(core).run
    assert run is not None
    resume = resumed(core)
    core.receive_text(
        frame(
            subscribed(resume["id"], 3, 4, epoch="e1", recovered=True, log_truncated=False, first_seq=1),
            node(4),
        )
    )
    assert (run.recovered, run.truncated, run.epoch) == (True, False, "e1")
    assert [e.seq for e in run.events] == [1, 2, 3, 4]
    assert resumed(core)["epoch"] == "e1"


def test_a_recreated_log_that_ends_before_the_seqs_seen_loses_the_run() -> None:
    core = online()
    run = attached(core, upto=5).run
    assert run is not None
    resume = resumed(core)
    received = core.receive_text(frame(subscribed(resume["id"], 0, 4, epoch="e2", recovered=False, first_seq=1)))
    assert isinstance(run.failure, RunLost)
    assert received.changed == [run]
    assert WID not in core.runs


def test_attaching_after_the_end_is_done_from_the_snapshot() -> None:
    core = online()
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=7), Subscribed)
    sent(core)
    core.receive_text(frame(subscribed(attach.id, 7, 7, status="completed", snapshot={"result": {"x": 1}})))
    assert attach.run is not None
    assert attach.run.done
    assert attach.run.events == []


def test_attaching_again_on_the_same_connection_unsubscribes_first() -> None:
    # The server never resends on one connection what it already sent there.
    core = online()
    start(core)
    core.receive_text(frame(completed(2)))
    attach = core.command(Subscribe(type="subscribe", workflow_id=WID, since_seq=0), Subscribed)
    assert [m["type"] for m in sent(core)] == ["unsubscribe", "subscribe"]
    assert attach.run is not None


def test_a_frame_above_the_server_limit_is_refused_before_sending() -> None:
    core = online()
    big = core.command(StartWorkflow(type="start_workflow", workflow="chat", params={"message": "x" * 5000}), Ack)
    small = core.command(Ping(type="ping"), Pong)
    out, refused = core.take_outgoing()
    assert refused == [big]
    assert isinstance(big.error, BadRequest)
    assert big.error.code is ErrorCode.message_too_large
    assert [p for p, _ in out] == [small]


def test_fail_all_settles_every_command_and_run() -> None:
    core = online()
    run = start(core).run
    assert run is not None
    pending = core.command(Ping(type="ping"), Pong)
    lost = RunLost(WID, "gone")
    received = core.fail_all(lost)
    assert received.settled == [pending]
    assert pending.error is lost
    assert run.failure is lost
    assert core.runs == {}


def test_forget_drops_a_command_nobody_waits_for() -> None:
    core = ClientCore()
    pending = core.command(Ping(type="ping"), Pong)
    core.forget(pending)
    core.connection_made(HELLO)
    assert sent(core) == []


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_terminal_events_close_the_open_inputs(status: str) -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.receive_text(frame(request(2)))
    terminal: dict[str, Any] = {"type": f"workflow_{status}", "workflow_id": WID, "seq": 3, "timestamp": TS}
    if status == "failed":
        terminal["error"] = {"code": "input_timeout", "message": "late"}
    core.receive_text(frame(terminal))
    assert run.pending_inputs == {}
    assert run.terminal is not None
    assert run.done


def test_a_start_with_the_callers_key_fetches_the_log_it_may_not_replay() -> None:
    # The key may name a run that started earlier: the server answers with its seq 1
    # and then only live events, so the core asks for the rest of the log.
    core = online()
    pending = core.command(
        StartWorkflow(type="start_workflow", workflow="approval", idempotency_key="k"), WorkflowStarted
    )
    sent(core)
    core.receive_text(frame(started(reply_to=pending.id)))
    unsubscribe, subscribe = sent(core)
    assert (unsubscribe["type"], subscribe["type"], subscribe["since_seq"]) == ("unsubscribe", "subscribe", 1)
    core.receive_text(frame(subscribed(subscribe["id"], 1, 3), node(2), completed(3)))
    assert pending.run is not None
    assert [e.seq for e in pending.run.events] == [1, 2, 3]


# --- input_closed ---------------------------------------------------------------------------


def answer(request_id: str = "req_1") -> NodeInput:
    return NodeInput(
        type="node_input", workflow_id=WID, node_id="approve", request_id=request_id, data={"value": "yes"}
    )


@pytest.mark.parametrize("reason", ["timeout", "node_finished"])
def test_input_closed_drops_the_open_input(reason: str) -> None:
    core = online()
    run = start(core).run
    assert run is not None
    core.receive_text(frame(request(2), request(3, "req_2")))
    received = core.receive_text(frame(closed(4, reason)))
    assert list(run.pending_inputs) == ["req_2"]
    assert [d.message.type for d in received.deliveries] == ["input_closed"]
    assert received.changed == [run]
    assert run.node_of("req_1") == "approve"
    event = run.closed_input("req_1")
    assert event is not None
    assert event.reason.value == reason
    assert run.closed_input("req_2") is None


def test_an_answer_waiting_for_a_reconnect_fails_with_input_closed() -> None:
    core = online()
    start(core)
    core.receive_text(frame(request(2)))
    pending = core.command(answer(), Ack)
    sent(core)
    core.connection_lost()  # no ack yet: the answer waits to go again
    core.connection_made(HELLO)
    resubscribe, repeat = sent(core)
    assert repeat["type"] == "node_input"
    # The replay tells that the request timed out before any copy landed.
    received = core.receive_text(frame(subscribed(resubscribe["id"], 2, 3), closed(3)))
    assert received.settled[-1] is pending
    assert isinstance(pending.error, InputClosed)
    assert isinstance(pending.error, InputRejected)
    assert (pending.error.code, pending.error.request_id, pending.error.reason.value) == (
        ErrorCode.unknown_request,
        "req_1",
        "timeout",
    )
    # The gateway's own refusal of the re-sent copy is not handed out as a stray error.
    late = core.receive_text(frame(error("unknown_request", repeat["id"], workflow_id=WID)))
    assert late.deliveries == []
    assert late.settled == []


def test_an_answer_held_after_rate_limited_is_settled_and_never_sent_again() -> None:
    core = online()
    start(core)
    core.receive_text(frame(request(2)))
    held = core.command(answer(), Ack)
    (first,) = sent(core)
    refused = core.receive_text(frame(error("rate_limited", first["id"], retry_after=5)))
    assert refused.retry_after == 5
    assert not held.done
    core.receive_text(frame(closed(3)))
    assert isinstance(held.error, InputClosed)
    core.release_held()
    assert sent(core) == [], "an answer to a closed request never goes again"


def test_an_answer_queued_offline_is_settled_and_never_sent() -> None:
    core = online()
    start(core)
    core.receive_text(frame(request(2)))
    core.connection_lost()
    queued = core.command(answer(), Ack)
    core.connection_made(HELLO)
    out, _ = core.take_outgoing()
    _resubscribe, answer_out = (pending for pending, _ in out)
    assert answer_out is queued
    # Lost again before anything came back; the next resume replays the close first.
    core.connection_lost()
    core.connection_made(HELLO)
    (resubscribe_again, _again) = sent(core)
    core.receive_text(frame(subscribed(resubscribe_again["id"], 2, 3), closed(3, "node_finished")))
    assert isinstance(queued.error, InputClosed)
    assert queued.error.reason.value == "node_finished"
    core.connection_lost()
    core.connection_made(HELLO)
    assert [m["type"] for m in sent(core)] == ["subscribe"], "the run is followed again, the answer is gone"


def test_input_closed_leaves_answers_to_other_requests_alone() -> None:
    core = online()
    start(core)
    core.receive_text(frame(request(2), request(3, "req_2")))
    other = core.command(answer("req_2"), Ack)
    (wire,) = sent(core)
    core.receive_text(frame(closed(4)))
    assert not other.done
    core.receive_text(frame({"type": "ack", "reply_to": wire["id"], "command": "node_input", "workflow_id": WID}))
    assert isinstance(other.reply, Ack)
