"""Live fuzzing: every client message of the spec, valid and invalid, over a real socket.

One property per message and mode, parametrized from the spec at collection time (a new
message is fuzzed with no change here). Each example opens a socket to the contract
suite's ``graphwire serve``, optionally prepares a run for the message to hit (a run
waiting for input, a running one, a finished one), sends the one generated frame, and
reads everything up to the ``pong`` of a ping sent after it. Then:

- every frame was valid against the spec's ``ServerMessage`` and its channel, and kept
  the delivery promises (``WireClient``, ``RunView``);
- the answer is the one the spec promises for a valid or an invalid frame (``exchange``);
- the socket answered the ping, the gateway process is alive, ``/ws/health`` says ok and
  its RSS stayed within the bound (``GatewayProbe``).

Failures shrink to a minimal frame (hypothesis); the falsifying example prints the frame.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.catalog import SPEC, ClientMessage
from contract.exchange import Sockets, send_and_check
from contract.oracle import TERMINAL
from contract.profiles import contract_settings
from contract.strategies import build_strategies
from contract.wire import STATS, GatewayProbe, WireClient, connected
from harness import Server

STRATEGIES = build_strategies()
KEYS = sorted(STRATEGIES.messages)
# Channels on which a test can create the runs that generated messages then target, and cancel them.
CAN_START = {m.channel for m in STRATEGIES.messages.values() if m.type == "start_workflow"}
CAN_CANCEL = {m.channel for m in STRATEGIES.messages.values() if m.type == "cancel_workflow"}

# What an answer to a request may get when the run ended or stopped waiting a moment before.
WHILE_ENDING = frozenset({"no_pending_input", "run_finished", "unknown_request"})

# Runs an example may prepare before sending its frame; its `workflow_id`, `node_id`,
# `request_id` and `data` may then be pointed at that run.
SETUPS = ("none", "approval", "running", "finished")
SETUP_STARTS: dict[str, tuple[str, dict[str, Any]]] = {
    "approval": ("approval", {"message": "contract fuzz: approve?", "timeout": 60}),
    "running": ("tick", {"count": 10_000, "delay_ms": 50}),
    "finished": ("tick", {"count": 1, "delay_ms": 0}),
}


@dataclass
class Case:
    """One generated frame and what to point it at."""

    body: Any
    setup: str = "none"
    target_run: bool = False  # workflow_id ← the prepared run
    target_request: bool = False  # node_id, request_id ← the prepared run's open input request
    answer: str | None = None  # data ← {"value": answer}


@st.composite
def valid_cases(draw: st.DrawFn, message: ClientMessage, workflows: tuple[str, ...]) -> Case:
    body = copy.deepcopy(draw(STRATEGIES.valid[message.key]))
    case = Case(body)
    if not isinstance(body, dict):
        return case
    properties = SPEC["components"]["schemas"][message.schema].get("properties", {})
    if "workflow" in body and draw(st.booleans()):
        body["workflow"] = workflow = draw(st.sampled_from(workflows))
        if workflow in STRATEGIES.params and "params" in properties and draw(st.booleans()):
            body["params"] = draw(STRATEGIES.params[workflow])
    if message.channel in CAN_START:
        case.setup = draw(st.sampled_from(SETUPS))
    if case.setup != "none":
        case.target_run = "workflow_id" in body and draw(st.booleans())
        case.target_request = case.setup == "approval" and "node_id" in body and draw(st.booleans())
        if "data" in body and draw(st.booleans()):
            case.answer = draw(st.sampled_from(["yes", "no", "maybe"]))
    return case


def _aim(case: Case, run: str | None, request: dict[str, Any] | None) -> Any:
    body = case.body
    if not isinstance(body, dict):
        return body
    body = copy.deepcopy(body)
    if case.target_run and run is not None:
        body["workflow_id"] = run
    if case.target_request and request is not None:
        body["node_id"] = request["node_id"]
        if "request_id" in body:
            body["request_id"] = request["request_id"]
    if case.answer is not None:
        body["data"] = {"value": case.answer}
    return body


async def _prepare(client: WireClient, setup: str) -> tuple[str | None, dict[str, Any] | None]:
    if setup == "none":
        return None, None
    workflow, params = SETUP_STARTS[setup]
    started = await client.request({"type": "start_workflow", "workflow": workflow, "params": params})
    assert started["type"] == "workflow_started", started
    run = started["workflow_id"]
    request = None
    if setup == "approval":
        request = (await client.until(lambda m: m["type"] == "input_request" and m["workflow_id"] == run))[-1]
    elif setup == "finished":
        await client.until(lambda m: m["type"] in TERMINAL and m["workflow_id"] == run)
    return run, request


async def run_valid_case(server: Server, message: ClientMessage, case: Case) -> None:
    """A fresh socket per example: a valid command changes state, and a shrink must replay exactly."""
    client = await WireClient.connect(server, message.channel)
    try:
        run, request = await _prepare(client, case.setup)
        if case.setup != "none":
            await client.barrier()
        await send_and_check(client, _aim(case, run, request))
        # Leave nothing running: cancel every run this socket watches that has not ended.
        open_runs = sorted(client.view.attached - set(client.view.terminal)) if client.channel in CAN_CANCEL else []
        for wid in open_runs:
            answer = await client.request({"type": "cancel_workflow", "workflow_id": wid})
            assert answer["type"] == "ack" or answer.get("code") in ("run_finished", "unknown_run"), answer
    finally:
        await client.close()


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module")
def workflows(probe: GatewayProbe) -> tuple[str, ...]:
    return tuple(probe.health()["workflows"])


@pytest.mark.parametrize("key", KEYS)
@contract_settings(1.0)
@given(data=st.data())
def test_valid_message_gets_its_spec_reply(
    contract_server: Server,
    probe: GatewayProbe,
    runner: asyncio.Runner,
    workflows: tuple[str, ...],
    key: str,
    data: st.DataObject,
) -> None:
    message = STRATEGIES.messages[key]
    case = data.draw(valid_cases(message, workflows), label="case")
    runner.run(run_valid_case(contract_server, message, case))
    probe.check()


@pytest.fixture(scope="module")
def sockets(contract_server: Server, runner: asyncio.Runner) -> Iterator[Sockets]:
    pool = Sockets(contract_server)
    yield pool
    runner.run(pool.close())


@pytest.mark.parametrize("key", KEYS)
@contract_settings(1.0)
@given(data=st.data())
def test_invalid_message_gets_a_schema_error(
    probe: GatewayProbe, runner: asyncio.Runner, sockets: Sockets, key: str, data: st.DataObject
) -> None:
    message = STRATEGIES.messages[key]
    body = data.draw(STRATEGIES.invalid[key], label="body")
    runner.run(sockets.check(message.channel, body))
    probe.check()


def refused_by_design(workflow: str, params: dict[str, Any]) -> bool:
    """Params the schema allows that the spec says a workflow refuses at start.

    ``data_processing``: numbers whose sum passes the float range (JSON has no infinity).
    """
    if workflow != "data_processing":
        return False
    try:
        return not math.isfinite(math.fsum(params["data"]))
    except OverflowError:
        return True


async def run_workflow(server: Server, workflow: str, params: dict[str, Any]) -> dict[str, Any]:
    """Start a run with valid params, answer every input request with its first option; its end."""
    async with connected(server) as client:
        started = await client.request({"type": "start_workflow", "workflow": workflow, "params": params})
        if started["type"] == "error" and refused_by_design(workflow, params):
            return started
        assert started["type"] == "workflow_started", f"valid params refused: {params} → {started}"
        wid = started["workflow_id"]
        answers: set[str] = set()
        while True:
            message: dict[str, Any] = await client.recv(timeout=30)
            if message.get("reply_to") in answers:
                assert message["type"] == "ack" or message["code"] in WHILE_ENDING, message
            if message.get("workflow_id") != wid:
                continue
            if message["type"] == "input_request":
                options = message.get("options")
                answer_id = f"answer-{message['request_id']}"
                answers.add(answer_id)
                await client.send_json(
                    {
                        "type": "node_input",
                        "id": answer_id,
                        "workflow_id": wid,
                        "node_id": message["node_id"],
                        "request_id": message["request_id"],
                        "data": {"value": options[0] if options else "contract"},
                    }
                )
            if message["type"] in TERMINAL:
                STATS.cases += 1
                return message


@contract_settings(0.15)
@given(data=st.data())
def test_spec_workflows_end_once_with_a_spec_result(
    contract_server: Server, probe: GatewayProbe, runner: asyncio.Runner, data: st.DataObject
) -> None:
    """Every workflow of `x-graphwire-workflows`, with any valid (budgeted) params, runs to one end.

    A completed run's result keeps the workflow's result schema (``RunView`` checks it); a
    failed one may only have timed out waiting for input; no node of a built-in workflow raises;
    params the spec says a workflow refuses get `invalid_params` at start.
    """
    workflow = data.draw(st.sampled_from(sorted(STRATEGIES.params)), label="workflow")
    params = data.draw(STRATEGIES.params[workflow], label="params")
    end = runner.run(run_workflow(contract_server, workflow, params))
    if end["type"] == "error":
        assert (end["code"], end.get("path")) == ("invalid_params", "params.data"), end
    elif end["type"] == "workflow_failed":
        assert end["error"]["code"] == "input_timeout", end
    else:
        assert end["type"] == "workflow_completed", end
    probe.check()
