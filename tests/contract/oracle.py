"""What the spec says must come back: a tracker of one client's view of its runs, and reply checks.

``RunView`` follows the messages one connection receives, in order, and fails on the
first one that breaks a delivery promise of the spec: an event of a run the client
neither started nor subscribed to, a ``seq`` that skips or repeats, a second terminal
event, an ``input_request`` answered twice, closed twice, or both answered and closed
unanswered (``input_closed``), a ``workflow_completed`` whose ``result`` breaks its
workflow's result schema (``x-graphwire-workflows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema

from contract.catalog import SPEC, workflow_schemas
from contract.known_gaps import known_result_gap
from graphwire_codegen import schema_validator

__all__ = ["TERMINAL", "RunView", "result_validators"]

TERMINAL = frozenset({"workflow_completed", "workflow_failed", "workflow_cancelled"})


def result_validators(spec: dict[str, Any] = SPEC) -> dict[str, jsonschema.Draft7Validator]:
    return {name: schema_validator(spec, result) for name, (_params, result) in workflow_schemas(spec).items()}


_RESULTS = result_validators()


@dataclass
class RunView:
    """One connection's view of the runs it watches."""

    last: dict[str, int] = field(default_factory=dict)  # run → last seq given while attached
    workflow: dict[str, str] = field(default_factory=dict)  # run → workflow name
    terminal: dict[str, dict[str, Any]] = field(default_factory=dict)  # run → its terminal event
    answered: dict[str, int] = field(default_factory=dict)  # request_id → seq of its input_answered
    closed: dict[str, int] = field(default_factory=dict)  # request_id → seq of its input_closed
    requests: dict[str, tuple[str, str, list[str] | None]] = field(default_factory=dict)  # id → run, node, options
    # Start commands sent and not yet answered: the answer to one without an `id` is a
    # `workflow_started` without `reply_to`, told from an event only by this count.
    starts_expected: int = 0
    # Tolerate the results listed in known_gaps.py (off in the regression tests that pin them).
    known_gaps: bool = True

    @property
    def attached(self) -> set[str]:
        return set(self.last)

    def detach(self, workflow_id: str) -> None:
        self.last.pop(workflow_id, None)

    def observe(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        wid = str(message.get("workflow_id", ""))
        if kind == "workflow_started" and (
            "reply_to" in message or (self.starts_expected and wid not in self.last and message["seq"] == 1)
        ):
            # The starter's direct answer: seq 1 of a new run, or of the run an idempotency key names.
            assert message["seq"] == 1, message
            self.starts_expected = max(0, self.starts_expected - 1)
            self.workflow[wid] = message["workflow"]
            self.last[wid] = max(self.last.get(wid, 1), 1)
            return
        if kind == "subscribed" and "workflow_id" in message:
            self._subscribed(message)
            return
        if kind == "ack" and message["command"] == "unsubscribe" and "workflow_id" in message:
            self.detach(wid)  # the gateway answers in order: nothing of this run may follow
            return
        if "seq" not in message:
            return
        assert wid in self.last, f"an event of run {wid} that this client neither started nor subscribed to: {message}"
        expected = self.last[wid] + 1
        assert message["seq"] == expected, f"run {wid}: seq {message['seq']} where {expected} was due: {message}"
        self.last[wid] = message["seq"]
        if kind == "workflow_started":
            self.workflow[wid] = message["workflow"]
        elif kind == "input_request":
            self.requests[message["request_id"]] = (wid, message["node_id"], message.get("options"))
        elif kind == "input_answered":
            # A replay after a fresh subscribe repeats the same event (same seq); a second answer would not.
            rid = message["request_id"]
            assert self.answered.setdefault(rid, message["seq"]) == message["seq"], f"{rid} answered twice: {message}"
            assert rid not in self.closed, f"{rid} answered after it was closed unanswered: {message}"
        elif kind == "input_closed":
            rid = message["request_id"]
            assert self.closed.setdefault(rid, message["seq"]) == message["seq"], f"{rid} closed twice: {message}"
            assert rid not in self.answered, f"{rid} closed unanswered after it was answered: {message}"
        elif kind in TERMINAL:
            first = self.terminal.setdefault(wid, message)
            assert first["seq"] == message["seq"], f"run {wid}: a second terminal event {message} after {first}"
            workflow = self.workflow.get(wid, "")
            result_schema = _RESULTS.get(workflow)
            if kind == "workflow_completed" and result_schema is not None:
                errors = sorted(result_schema.iter_errors(message["data"]), key=str)
                if errors and not (self.known_gaps and known_result_gap(workflow, message["data"])):
                    raise AssertionError(
                        f"run {wid}: result breaks its workflow's schema: {errors[0].message}: {message}"
                    )
        if wid in self.terminal and message["seq"] > self.terminal[wid]["seq"]:
            raise AssertionError(f"run {wid}: an event after its terminal event: {message}")

    def _subscribed(self, message: dict[str, Any]) -> None:
        wid = message["workflow_id"]
        snapshot = message["snapshot"]
        self.workflow[wid] = snapshot["workflow"]
        since = message.get("since_seq", 0)
        base = max(since, self.last[wid]) if wid in self.last else since
        if message.get("log_truncated"):
            base = max(base, message["first_seq"] - 1)
        self.last[wid] = base
        for pending in snapshot["pending_inputs"]:
            self.requests.setdefault(pending["request_id"], (wid, pending["node_id"], pending.get("options")))
