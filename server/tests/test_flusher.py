"""The flusher's choice per fan-out event: write now, or queue and write together later."""

from __future__ import annotations

import asyncio
import json

from graphwire.connections import Connection, Flusher
from graphwire.settings import Settings


class Wire:
    """Stands in for a socket: records each write, in order."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> bool:
        self.writes.append(text)
        return True

    async def send(self, text: str) -> None:
        raise AssertionError("the direct writer takes every frame here")

    async def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed with {code}: {reason}")

    def messages(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for text in self.writes:
            frame = json.loads(text)
            out.extend(frame["messages"] if frame["type"] == "batch" else [frame])
        return out


def watchers(flusher: Flusher, n: int) -> list[tuple[Connection, Wire]]:
    out = []
    for i in range(n):
        wire = Wire()
        conn = Connection(
            f"cl_{i}", wire.send, wire.close, Settings(), batching=True, flusher=flusher, write_now=wire.write
        )
        conn.runs["run_1"] = 0
        out.append((conn, wire))
    return out


def event(seq: int) -> str:
    return json.dumps({"type": "node_event", "workflow_id": "run_1", "seq": seq})


async def settle(flusher: Flusher) -> None:
    while flusher._timer is not None:
        await asyncio.sleep(0.001)


async def test_an_event_on_a_calm_loop_is_written_before_fan_out_returns() -> None:
    flusher = Flusher(quiet=0.001)
    pairs = watchers(flusher, 3)
    flusher.fan_out_run_event([c for c, _ in pairs], "run_1", 1, event(1))
    assert [w.writes for _, w in pairs] == [[event(1)]] * 3
    assert flusher._timer is None


async def test_back_to_back_events_leave_together_as_one_batch() -> None:
    # A generous busy gap: "back to back" must not depend on how loaded the machine is.
    flusher = Flusher(quiet=0.001, busy_gap=60.0)
    pairs = watchers(flusher, 3)
    conns = [c for c, _ in pairs]
    flusher.fan_out_run_event(conns, "run_1", 1, event(1))  # calm: at once
    for seq in range(2, 12):
        flusher.fan_out_run_event(conns, "run_1", seq, event(seq))
    assert [len(w.writes) for _, w in pairs] == [1, 1, 1], "queued while producers run"
    await settle(flusher)
    for _, wire in pairs:
        assert len(wire.writes) == 2
        assert json.loads(wire.writes[1])["type"] == "batch"
        assert [m["seq"] for m in wire.messages()] == list(range(1, 12))


async def test_a_producer_that_keeps_going_is_waited_for() -> None:
    # Quiet is long next to one loop turn, and the deadline far: only quiet ends the wait.
    flusher = Flusher(quiet=0.05, busy_gap=60.0)
    flusher.last_cost = 5.0
    ((conn, wire),) = watchers(flusher, 1)
    flusher.fan_out_run_event([conn], "run_1", 1, event(1))
    for seq in range(2, 40):
        flusher.fan_out_run_event([conn], "run_1", seq, event(seq))
        await asyncio.sleep(0)  # the producer yields between events, as run events do
    await settle(flusher)
    assert len(wire.writes) == 2, "all the queued events in one flush"
    assert [m["seq"] for m in wire.messages()] == list(range(1, 40))


async def test_quiet_zero_writes_every_event_at_once() -> None:
    flusher = Flusher(quiet=0, busy_gap=60.0)
    ((conn, wire),) = watchers(flusher, 1)
    for seq in range(1, 6):
        flusher.fan_out_run_event([conn], "run_1", seq, event(seq))
    assert wire.writes == [event(seq) for seq in range(1, 6)]


async def test_group_fan_out_counts_and_delivers() -> None:
    flusher = Flusher(quiet=0.001)
    pairs = watchers(flusher, 4)
    assert flusher.fan_out((c for c, _ in pairs), '{"type":"system_alert"}') == 4
    assert all(w.writes == ['{"type":"system_alert"}'] for _, w in pairs)
