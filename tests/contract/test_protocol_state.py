"""Stateful protocol test: several clients start, watch, answer, cancel, leave and resume runs.

A hypothesis ``RuleBasedStateMachine`` drives three client slots against the contract
suite's ``graphwire serve`` in random orders: start runs (the built-in workflows and the
harness's ``tick``/``boom``, some with an ``idempotency_key`` that another slot repeats),
subscribe with ``since_seq``, unsubscribe, answer input requests (right and wrong),
cancel, drop the socket (cleanly or not) and reconnect to resume. Every message each
socket receives goes through its ``RunView``, which fails at once on an event of a run
the client neither started nor subscribed to, a ``seq`` that skips or repeats within
what the client asked for (across a disconnect and a ``subscribe {since_seq}`` resume
too), a second terminal event, or a request answered twice (or answered and closed). The
rules check the answers the spec promises (a second answer to a request gets
``input_already_answered``, an answer to one closed unanswered ``unknown_request`` or
``run_finished``). At the
end of each run of the machine every run is read again from ``seq`` 0 by a fresh client:
its log must be gap-free with exactly one terminal event, last, each request answered at
most once, every acknowledged answer logged, and every event any client saw must be
the logged event with that ``seq``.

Each machine has its own event loop (``asyncio.Runner``); every rule runs one coroutine
on it, so hypothesis drives a sync object and the sockets stay on one loop.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule, run_state_machine_as_test

from contract.oracle import TERMINAL, RunView
from contract.profiles import PROFILE, contract_settings
from contract.wire import STATS, GatewayProbe, WireClient, connected
from harness import Server

SLOTS = st.sampled_from([0, 1, 2])
WORKFLOWS = st.one_of(
    st.builds(lambda t: ("approval", {"message": "ship it?", "timeout": t}), st.sampled_from([0.3, 30.0])),
    st.builds(lambda n, d: ("tick", {"count": n, "delay_ms": d}), st.integers(1, 6), st.sampled_from([0, 5, 30])),
    st.builds(lambda d: ("chat", {"message": "hello there", "delay_ms": d}), st.sampled_from([0, 5])),
    st.builds(lambda d: ("data_processing", {"data": [1, 2, 3], "delay_ms": d}), st.sampled_from([0, 5])),
    st.just(("boom", {})),
    st.just(("ticker", {"count": 3, "payload_bytes": 8, "wait_for_go": True})),
)
# Answers an input_request may get: refused while it is open, the first valid one wins.
NOT_YET = frozenset({"invalid_input", "no_pending_input", "unknown_request", "run_finished"})
_keys = itertools.count()


@dataclass
class Slot:
    client: WireClient | None = None
    # Where this slot's last socket stood in each run, for a resume after reconnecting.
    resume: dict[str, int] = field(default_factory=dict)


class ProtocolMachine(RuleBasedStateMachine):
    server: ClassVar[Server]
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.Runner()
        self.slots = [Slot() for _ in range(3)]
        self.sockets: list[WireClient] = []  # every socket of this machine, closed ones included
        self.started: dict[str, tuple[str, dict[str, Any], str]] = {}  # run → workflow, params, key
        self.answered: set[str] = set()  # request ids whose answer was acknowledged

    # -- helpers ---------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        STATS.state_steps += 1
        return self.loop.run(asyncio.wait_for(coro, 30))

    async def _client(self, slot: int) -> WireClient:
        current = self.slots[slot].client
        if current is None:
            current = await WireClient.connect(self.server)
            self.slots[slot].client = current
            self.sockets.append(current)
        return current

    @property
    def views(self) -> list[RunView]:
        return [client.view for client in self.sockets]

    def requests(self, run: str) -> dict[str, tuple[str, str, list[str] | None]]:
        """Every input request of ``run`` any socket has seen: id → (run, node, options)."""
        found: dict[str, tuple[str, str, list[str] | None]] = {}
        for view in self.views:
            found.update({rid: req for rid, req in view.requests.items() if req[0] == run})
        return found

    # -- rules -----------------------------------------------------------------

    @rule(target=runs, slot=SLOTS, workflow=WORKFLOWS, keyed=st.booleans())
    def start(self, slot: int, workflow: tuple[str, dict[str, Any]], keyed: bool) -> str:
        name, params = workflow
        key = f"key-{next(_keys)}" if keyed else ""

        async def go() -> str:
            client = await self._client(slot)
            command: dict[str, Any] = {"type": "start_workflow", "workflow": name, "params": params}
            if key:
                command["idempotency_key"] = key
            answer = await client.request(command)
            assert answer["type"] == "workflow_started", answer
            assert answer["seq"] == 1
            return str(answer["workflow_id"])

        wid: str = self.run(go())
        self.started[wid] = (name, params, key)
        return wid

    @rule(slot=SLOTS, run=runs)
    def start_same_key_again(self, slot: int, run: str) -> None:
        """The same idempotency key and params return the same run, and the caller watches it."""
        name, params, key = self.started[run]
        if not key:
            return

        async def go() -> None:
            client = await self._client(slot)
            command = {"type": "start_workflow", "workflow": name, "params": params, "idempotency_key": key}
            answer = await client.request(command)
            assert answer["type"] == "workflow_started", answer
            assert answer["workflow_id"] == run, answer

        self.run(go())

    @rule(slot=SLOTS, run=runs, since=st.integers(0, 12), resume=st.booleans())
    def subscribe(self, slot: int, run: str, since: int, resume: bool) -> None:
        async def go() -> None:
            client = await self._client(slot)
            since_seq = client.view.last.get(run, since) if resume else since
            answer = await client.request({"type": "subscribe", "workflow_id": run, "since_seq": since_seq})
            if answer["type"] == "error":
                # A since_seq past the run's last seq is refused; the run has at least what this client saw.
                assert answer["code"] == "since_seq_ahead", answer
                assert since_seq > client.view.last.get(run, 0), answer
                return
            assert answer["type"] == "subscribed", answer
            assert answer["snapshot"]["workflow_id"] == run

        self.run(go())

    @rule(slot=SLOTS, run=runs)
    def unsubscribe(self, slot: int, run: str) -> None:
        async def go() -> None:
            client = await self._client(slot)
            answer = await client.request({"type": "unsubscribe", "workflow_id": run})
            assert (answer["type"], answer["command"]) == ("ack", "unsubscribe"), answer
            assert run not in client.view.attached

        self.run(go())

    @rule(slot=SLOTS, run=runs, pick=st.integers(0, 3), value=st.sampled_from(["first option", "maybe"]))
    def answer_input(self, slot: int, run: str, pick: int, value: str) -> None:
        requests = self.requests(run)
        if not requests:
            return
        rid = sorted(requests)[pick % len(requests)]
        _run, node, options = requests[rid]
        data = {"value": options[0] if options and value == "first option" else value}

        async def go() -> None:
            client = await self._client(slot)
            answer = await client.request(
                {"type": "node_input", "workflow_id": run, "node_id": node, "request_id": rid, "data": data}
            )
            if rid in self.answered:
                assert answer.get("code") == "input_already_answered", f"{rid} answered twice: {answer}"
            elif any(rid in view.closed for view in self.views):
                assert answer.get("code") in ("unknown_request", "run_finished"), f"{rid} was closed: {answer}"
            elif answer["type"] == "ack":
                self.answered.add(rid)
            else:
                assert answer["code"] in NOT_YET, answer

        self.run(go())

    @rule(slot=SLOTS, run=runs)
    def cancel(self, slot: int, run: str) -> None:
        async def go() -> None:
            client = await self._client(slot)
            answer = await client.request({"type": "cancel_workflow", "workflow_id": run})
            assert answer["type"] == "ack" or answer["code"] == "run_finished", answer

        self.run(go())

    @rule(slot=SLOTS)
    def sync(self, slot: int) -> None:
        """Read everything the gateway has sent this socket so far (each message is checked)."""
        client = self.slots[slot].client
        if client is not None:
            self.run(client.barrier())

    @rule(slot=SLOTS, abort=st.booleans())
    def disconnect(self, slot: int, abort: bool) -> None:
        """Leave, cleanly or by dropping the TCP connection; remember where each run stood."""
        client = self.slots[slot].client
        if client is None:
            return
        self.slots[slot] = Slot(resume=dict(client.view.last))
        if abort:
            client.ws.transport.abort()
        self.run(client.close())

    @rule(slot=SLOTS)
    def reconnect_and_resume(self, slot: int) -> None:
        """A new socket resumes every run the old one watched: exactly the events after what it had."""
        resume = self.slots[slot].resume
        if self.slots[slot].client is not None or not resume:
            return

        async def go() -> None:
            client = await self._client(slot)
            for wid, last in sorted(resume.items()):
                client.view.last[wid] = last  # what the old socket had; the replay must continue from it
                answer = await client.request({"type": "subscribe", "workflow_id": wid, "since_seq": last})
                assert answer["type"] == "subscribed", answer

        self.run(go())

    # -- the end: every run's whole log, against what every client saw ----------

    def teardown(self) -> None:
        try:
            if self.started:
                self.run(self._check_logs())
        finally:
            for slot in self.slots:
                if slot.client is not None:
                    self.run(slot.client.close())
            self.loop.close()

    async def _check_logs(self) -> None:
        for slot in self.slots:
            if slot.client is not None:
                await slot.client.barrier()
        async with connected(self.server) as reader:
            for wid in sorted(self.started):
                if not any(wid in view.terminal for view in self.views):
                    await reader.request({"type": "cancel_workflow", "workflow_id": wid})
            for wid in sorted(self.started):
                answer = await reader.request({"type": "subscribe", "workflow_id": wid, "since_seq": 0})
                assert answer["type"] == "subscribed", answer
                await reader.seen_or_until(lambda m, w=wid: m["type"] in TERMINAL and m.get("workflow_id") == w)
            await reader.barrier()
            logs: dict[str, dict[int, dict[str, Any]]] = {}
            for message in reader.received:
                if "seq" in message:
                    logs.setdefault(message["workflow_id"], {})[message["seq"]] = message
        for wid in self.started:
            log = logs[wid]
            assert sorted(log) == list(range(1, len(log) + 1)), f"run {wid}: the log has gaps: {sorted(log)}"
            terminal = [seq for seq, event in log.items() if event["type"] in TERMINAL]
            assert terminal == [len(log)], f"run {wid}: terminal events at {terminal} of {len(log)}"
            answered = [event["request_id"] for event in log.values() if event["type"] == "input_answered"]
            assert len(answered) == len(set(answered)), f"run {wid}: a request answered twice: {answered}"
            requested = {event["request_id"] for event in log.values() if event["type"] == "input_request"}
            assert set(answered) <= requested, f"run {wid}: an answer to a request it never made"
            closed = [event["request_id"] for event in log.values() if event["type"] == "input_closed"]
            assert len(closed) == len(set(closed)), f"run {wid}: a request closed twice: {closed}"
            assert set(closed) <= requested, f"run {wid}: a close of a request it never made"
            assert not set(closed) & set(answered), f"run {wid}: answered and closed unanswered: {closed}"
            acknowledged = {rid for rid in self.answered if self.requests(wid).get(rid)}
            assert acknowledged <= set(answered), f"run {wid}: acknowledged answers missing from the log"
        for view in self.views:
            for wid, terminal_event in view.terminal.items():
                assert terminal_event["seq"] == len(logs[wid]), f"run {wid}: a client saw another end"
        for client in self.sockets:
            for message in client.received:
                if "seq" not in message or message["workflow_id"] not in logs:
                    continue
                logged = logs[message["workflow_id"]][message["seq"]]
                seen = {k: v for k, v in message.items() if k != "reply_to"}
                assert seen == logged, f"a client saw {seen}, the log says {logged}"


@pytest.fixture
def machine_server(contract_server: Server, probe: GatewayProbe) -> Server:
    ProtocolMachine.server = contract_server
    return contract_server


def test_protocol_state_machine(machine_server: Server, probe: GatewayProbe) -> None:
    steps = 50 if PROFILE == "bounded" else 100
    run_state_machine_as_test(ProtocolMachine, settings=contract_settings(0.2, stateful_step_count=steps))
    probe.check()
