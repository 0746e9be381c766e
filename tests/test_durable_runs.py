"""Runs that survive their gateway (issue 14): 3 real gateways on a real Redis, owners killed.

The owner of a run is killed with SIGKILL (or stopped with SIGTERM) while watchers on the
other gateways stream it: another gateway takes the run over once its lease lapses (at
once on SIGTERM), resumes it from its last checkpoint, and the watchers see it go on
with ``seq`` gap-free, one ``run_resumed``, and no finished node run twice. Every frame
is checked against the spec (``harness.Client``); every run is compared with its Redis log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from cluster import DEADLINE, fresh_cluster, request, wait_for
from harness import TERMINAL, Client, Server, assert_gap_free, connect
from redis_proc import RedisServer

# Short leases, so a dead owner's runs move within about a second.
DURABLE_ENV = {"GRAPHWIRE_REDIS_TIMEOUT": "1", "GRAPHWIRE_RUN_LEASE_SECONDS": "1", "GRAPHWIRE_SHUTDOWN_GRACE": "5"}


@pytest.fixture
def trio(redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Server]]:
    """Three fresh gateways (the tests kill some)."""
    monkeypatch.delenv("GRAPHWIRE_FAULT_SEED", raising=False)  # the tests' own: a gateway refuses unknown settings
    with fresh_cluster(redis_server, tmp_path, 3, DURABLE_ENV) as servers:
        yield servers


def run_events(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for frame in client.frames:
        messages.extend(frame["messages"] if frame["type"] == "batch" else [frame])
    events = [dict(m) for m in messages if m.get("workflow_id") == workflow_id and "seq" in m]
    for event in events:
        event.pop("reply_to", None)
    return events


async def until_done(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    if not any(e["type"] in TERMINAL for e in run_events(client, workflow_id)):
        await client.until(lambda m: m.get("workflow_id") == workflow_id and m["type"] in TERMINAL, timeout=DEADLINE)
    return run_events(client, workflow_id)


def redis_log(redis_server: RedisServer, workflow_id: str) -> list[dict[str, Any]]:
    with redis_server.client() as admin:
        return [json.loads(f[b"f"]) for _id, f in admin.xrange(f"graphwire:run:{workflow_id}:log")]


def stages(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["name"] for e in events if e["type"] == "node_event" and e["event"] == "stage"]


async def watchers(servers: list[Server], workflow_id: str) -> list[Client]:
    out = []
    for server in servers:
        client = await connect(server.ws())
        await request(client, {"type": "subscribe", "id": "w", "workflow_id": workflow_id, "since_seq": 0})
        out.append(client)
    return out


async def test_the_owner_killed_mid_run_another_gateway_finishes_it(
    trio: list[Server], redis_server: RedisServer
) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wid = (await starter.start("relay", {"ticks": 12, "delay_ms": 25}))["workflow_id"]
    await starter.close()  # the run goes on without its starter
    b, c = await watchers(others, wid)
    await b.until(lambda m: m.get("type") == "node_event" and m["data"].get("name") == "second", timeout=DEADLINE)
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait()
    on_b, on_c = await until_done(b, wid), await until_done(c, wid)
    assert_gap_free(on_b)
    assert on_c == on_b  # 0 lost, 0 duplicated, on both gateways
    resumed = [e for e in on_b if e["type"] == "run_resumed"]
    assert len(resumed) == 1
    # The checkpoint was taken before `second`: `first` never runs again, `second` does.
    assert stages(on_b) == ["first", "second", "second", "third"]
    assert on_b[resumed[0]["from_seq"]]["type"] == "node_update"  # `second` starting, after the checkpoint
    assert on_b[-1]["type"] == "workflow_completed"
    assert on_b[-1]["data"] == {"done": ["first", "second", "third"]}
    assert redis_log(redis_server, wid) == on_b
    for client in (b, c):
        await client.close()


async def test_an_answer_sent_while_nobody_holds_the_run_is_applied_once(
    trio: list[Server], redis_server: RedisServer
) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wid = (await starter.start("relay_ask", {"ticks": 2, "delay_ms": 5}))["workflow_id"]
    await starter.close()
    (b,) = await watchers(others[:1], wid)
    asked = (await b.until(lambda m: m["type"] == "input_request", timeout=DEADLINE))[-1]
    owner.process.send_signal(signal.SIGKILL)
    owner.process.wait()
    # Sent during the gap: it waits in the run's inbox for the gateway that takes the run over.
    await b.send(
        {
            "type": "node_input",
            "id": "yes",
            "workflow_id": wid,
            "node_id": asked["node_id"],
            "request_id": asked["request_id"],
            "data": {"value": "yes"},
            "idempotency_key": "answer-1",
        }
    )
    answered = (await b.until(lambda m: m.get("reply_to") == "yes", timeout=DEADLINE))[-1]
    assert answered["type"] == "ack", answered
    events = await until_done(b, wid)
    assert_gap_free(events)
    assert [e["request_id"] for e in events if e["type"] == "input_request"] == [asked["request_id"]]
    assert [e["request_id"] for e in events if e["type"] == "input_answered"] == [asked["request_id"]]
    assert events[-1]["data"] == {"done": ["first", "ask", "second"]}
    assert redis_log(redis_server, wid) == events
    await b.close()


async def test_sigterm_hands_ten_runs_over_at_once(trio: list[Server], redis_server: RedisServer) -> None:
    owner, *others = trio
    starter = await connect(owner.ws())
    wids = []
    for i in range(10):
        wids.append((await starter.start("relay", {"ticks": 30, "delay_ms": 20}, id_=f"s{i}"))["workflow_id"])
    await starter.close()
    clients = [await connect(others[i % 2].ws()) for i in range(10)]
    for client, wid in zip(clients, wids, strict=True):
        await request(client, {"type": "subscribe", "id": "w", "workflow_id": wid, "since_seq": 0})
    await clients[0].until(lambda m: m.get("type") == "node_event" and m["data"].get("i") == 5, timeout=DEADLINE)
    owner.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal it handled once its shutdown is done.
    assert await asyncio.to_thread(owner.process.wait, 15) in (0, -signal.SIGTERM)
    assert "handed over" in owner.log()
    for client, wid in zip(clients, wids, strict=True):
        events = await until_done(client, wid)
        assert_gap_free(events)
        assert events[-1]["type"] == "workflow_completed", json.dumps(events[-4:])
        assert sum(e["type"] == "run_resumed" for e in events) == 1
        assert not any(e["type"] == "workflow_failed" for e in events)
        assert redis_log(redis_server, wid) == events
        await client.close()


# -- owners killed at random moments ------------------------------------------------------

# GRAPHWIRE_FAULT_SEED=<n> replays a failure: every assertion message names the seed it ran with.
FAULT_SEED = int(os.environ.get("GRAPHWIRE_FAULT_SEED", "1414"))
# When the first owner dies: right after its runs started, between two nodes, or while a run waits.
FIRST_KILL = ("at_start", "between_nodes", "waiting")
NODES = {"relay": ["first", "second", "third"], "relay_ask": ["first", "ask", "second"]}


def holder(redis_server: RedisServer, workflow_id: str) -> tuple[str, bool]:
    """The gateway that holds the run in Redis, and whether the run has ended."""
    with redis_server.client() as admin:
        gateway, finished = admin.hmget(f"graphwire:run:{workflow_id}", ["gateway", "finished"])
    return gateway.decode(), finished == b"1"


def nodes(events: list[dict[str, Any]], status: str) -> list[str]:
    return [e["node_id"] for e in events if e["type"] == "node_update" and e["data"]["status"] == status]


def check_checkpoints(events: list[dict[str, Any]], order: list[str], strict: bool, why: str) -> None:
    """Each attempt (from the start, then from each ``run_resumed``) runs the nodes from its checkpoint on.

    A node finished by the checkpoint (``from_seq``) never runs again; with ``strict`` (no checkpoint
    was late), the checkpoint resumed from is the last one taken, so only the node that was running
    when its owner died runs again. The last attempt runs to the end.
    """
    cuts = [i for i, e in enumerate(events) if e["type"] == "run_resumed"]
    attempts = [events[start:end] for start, end in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    ran: list[str] = []
    for k, attempt in enumerate(attempts):
        first = 0
        if k:
            from_seq = attempt[0]["from_seq"]
            done = list(dict.fromkeys(nodes(events[:from_seq], "completed")))  # seqs 1..from_seq
            assert done == order[: len(done)], (why, k, done)
            first = len(done)
            before = nodes(attempts[k - 1], "running")
            if strict and before:
                assert first >= order.index(before[-1]), (why, k, from_seq, before)
        ran, finished = nodes(attempt, "running"), nodes(attempt, "completed")
        assert ran == order[first : first + len(ran)], (why, k, first, ran)
        if k == len(attempts) - 1:
            assert finished == ran, (why, k, ran, finished)
        else:
            assert finished in (ran, ran[:-1]), (why, k, ran, finished)
    assert ran[-1:] == order[-1:], (why, ran)


def check_inputs(events: list[dict[str, Any]], why: str) -> list[str]:
    """Each request answered once, and one open at a time: a request open across a move keeps its request_id."""
    open_: str | None = None
    asked: list[str] = []
    answered: list[str] = []
    for event in events:
        assert event["type"] != "input_closed", (why, event)
        if event["type"] == "input_request":
            assert open_ is None, (why, "a second request while one is open", event)
            open_ = event["request_id"]
            asked.append(event["request_id"])
        elif event["type"] == "input_answered":
            assert event["request_id"] == open_, (why, event)
            open_ = None
            answered.append(event["request_id"])
    assert answered == asked, (why, asked, answered)
    assert len(set(asked)) == len(asked), (why, asked)
    return asked


async def follow(client: Client, workflow_id: str) -> None:
    """Read the run until it ends, or until the client's gateway dies."""
    with contextlib.suppress(websockets.ConnectionClosed):
        await until_done(client, workflow_id)


class Answerer:
    """Answers ``yes`` to every input request in the runs' Redis logs, from gateways still alive.

    The requests already open when it starts are answered at once; later ones after a random
    delay each (so an owner may die while a run waits). An answer is sent again, under the same
    idempotency key, when its gateway died before answering, on ``run_unavailable``, and when the
    run moved after the ``ack`` without its ``input_answered`` in the log.
    """

    def __init__(
        self, redis_server: RedisServer, wids: list[str], alive: list[Server], delays: list[float], why: str
    ) -> None:
        self.redis_server, self.wids, self.alive, self.delays, self.why = redis_server, wids, alive, delays, why
        self.answers: dict[str, asyncio.Task[None]] = {}
        self.resent: list[str] = []
        self.in_gap: list[str] = []

    async def run(self, nobody: str) -> None:
        """``nobody``: the dead owner's gateway id (an answer sent while Redis still names it is sent in the gap)."""
        at_once = True
        while True:
            for wid in self.wids:
                for event in redis_log(self.redis_server, wid):
                    if event["type"] == "input_request" and event["request_id"] not in self.answers:
                        delay = 0.0 if at_once else self.delays[len(self.answers) % len(self.delays)]
                        self.answers[event["request_id"]] = asyncio.create_task(self.answer(event, delay, nobody))
            at_once = False
            await asyncio.sleep(0.05)

    async def answer(self, request: dict[str, Any], delay: float, nobody: str) -> None:
        await asyncio.sleep(delay)
        wid, rid = request["workflow_id"], request["request_id"]
        acked_at, attempt = -1, 0  # acked_at: how many moves the log showed after the ack
        while True:
            log = redis_log(self.redis_server, wid)
            if any(e["type"] == "input_answered" and e["request_id"] == rid for e in log):
                return
            if acked_at < sum(e["type"] == "run_resumed" for e in log):
                if acked_at >= 0:
                    self.resent.append(rid)
                if holder(self.redis_server, wid)[0] == nobody:
                    self.in_gap.append(rid)
                attempt += 1
                reply = await self.send(self.alive[attempt % len(self.alive)], request, f"{rid}-{attempt}")
                if reply is not None and reply["type"] == "ack":
                    log = redis_log(self.redis_server, wid)
                    acked_at = sum(e["type"] == "run_resumed" for e in log)
                else:
                    assert reply is None or reply["code"] == "run_unavailable", (self.why, reply)
            await asyncio.sleep(0.05)

    @staticmethod
    async def send(server: Server, request: dict[str, Any], id_: str) -> dict[str, Any] | None:
        """The answer from a new client on ``server``; None if the gateway died first."""
        try:
            client = await connect(server.ws())
        except (OSError, websockets.WebSocketException):
            return None
        try:
            await client.send(
                {
                    "type": "node_input",
                    "id": id_,
                    "workflow_id": request["workflow_id"],
                    "node_id": request["node_id"],
                    "request_id": request["request_id"],
                    "data": {"value": "yes"},
                    "idempotency_key": f"key-{request['request_id']}",
                }
            )
            return (await client.until(lambda m: m.get("reply_to") == id_, timeout=DEADLINE))[-1]
        except websockets.ConnectionClosed:
            return None
        finally:
            await client.close()


@pytest.mark.parametrize("round_", range(3))
async def test_owners_killed_at_random_moments_lose_and_repeat_nothing(
    trio: list[Server], redis_server: RedisServer, round_: int
) -> None:
    """Five runs owned by A (some ask a question nobody answers while A lives), watched on B and C.

    A is killed at a random moment (round 0: right after the starts, 1: between nodes, 2: while
    a run waits), and the open requests are answered at once, while nobody holds the runs. Once
    every run is held again, the gateway holding most of them is killed at another random moment,
    and the last gateway finishes them all. Its watchers get each run's Redis log, whole.
    """
    seed = FAULT_SEED + round_
    rng = random.Random(seed)
    moment = FIRST_KILL[round_ % len(FIRST_KILL)]
    plan = ["relay_ask", "relay_ask", "relay_ask", "relay", "relay"]
    rng.shuffle(plan)
    params = [{"ticks": rng.randint(8, 20), "delay_ms": rng.choice([15, 25, 35])} for _ in plan]
    jitter, second_delay = rng.uniform(0, 0.08), rng.uniform(0, 0.8)
    delays = [rng.uniform(0, 0.6) for _ in range(16)]
    why = f"GRAPHWIRE_FAULT_SEED={FAULT_SEED} round {round_} (seed {seed}): first kill {moment} (+{jitter:.3f} s)"
    by_id = {server.get_json("/ws/health")["gateway_id"]: server for server in trio}
    a_id = next(gateway for gateway, server in by_id.items() if server is trio[0])
    a, alive = trio[0], trio[1:]
    clients: list[Client] = []
    watching: list[tuple[Server, str, Client, asyncio.Task[None]]] = []
    answering: asyncio.Task[None] | None = None
    answerer: Answerer | None = None

    def logs() -> list[dict[str, Any]]:
        return [e for wid in wids for e in redis_log(redis_server, wid)]

    async def watch() -> None:
        for wid in wids:
            for server in alive:
                (client,) = await watchers([server], wid)
                clients.append(client)
                watching.append((server, wid, client, asyncio.create_task(follow(client, wid))))

    try:
        starter = await connect(a.ws())
        clients.append(starter)
        wids = []
        for i, (workflow, p) in enumerate(zip(plan, params, strict=True)):
            wids.append((await starter.start(workflow, p, id_=f"s{i}"))["workflow_id"])
        await starter.close()
        why += f"; runs {list(zip(wids, plan, params, strict=True))}"
        print(why)  # shown with any failure, even a timeout
        if moment != "at_start":
            await watch()
        if moment == "between_nodes":
            await wait_for(
                lambda: any(e["type"] == "node_update" and e["data"]["status"] == "completed" for e in logs()), why
            )
        elif moment == "waiting":
            await wait_for(lambda: any(e["type"] == "input_request" for e in logs()), why)
        await asyncio.sleep(jitter)
        a.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(a.process.wait)
        # Nobody holds A's runs until their leases lapse: the open requests are answered now.
        answerer = Answerer(redis_server, wids, alive, delays, why)
        answering = asyncio.create_task(answerer.run(a_id))
        if moment == "at_start":
            await watch()  # subscribed during the gap

        await wait_for(lambda: all(g != a_id or done for g, done in (holder(redis_server, w) for w in wids)), why)
        await asyncio.sleep(second_delay)
        held = dict.fromkeys((server.port for server in alive), 0)
        for wid in wids:
            gateway, finished = holder(redis_server, wid)
            if not finished:
                held[by_id[gateway].port] += 1
        victim = max(alive, key=lambda server: (held[server.port], rng.random())) if any(held.values()) else None
        if victim is not None:
            victim.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(victim.process.wait)
            alive.remove(victim)  # the answerer's list too
        why += f"; second kill after {second_delay:.2f} s: {victim and held[victim.port]} of the runs held"

        for server, *_, task in watching:
            if server in alive:
                await task
        answering.cancel()
        await asyncio.wait_for(asyncio.gather(*answerer.answers.values()), DEADLINE)
        why += f"; answered in the gap {answerer.in_gap}, sent again {answerer.resent}"
        print(why)

        strict = not any("did not take its checkpoint in time" in server.log() for server in trio)
        for wid, workflow in zip(wids, plan, strict=True):
            log = redis_log(redis_server, wid)
            assert_gap_free(log)
            assert log[-1]["type"] == "workflow_completed", (why, wid, log[-3:])
            assert log[-1]["data"] == {"done": NODES[workflow]}, (why, wid)
            assert sum(e["type"] == "run_resumed" for e in log) <= 2, (why, wid)
            check_checkpoints(log, NODES[workflow], strict, f"{why}; {wid}")
            asked = check_inputs(log, f"{why}; {wid}")
            assert (len(asked) >= 1) if workflow == "relay_ask" else (asked == []), (why, wid, asked)
            for server, watched, client, _task in watching:
                if watched != wid:
                    continue
                events = run_events(client, wid)
                if server in alive:
                    assert events == log, (why, wid, server.port)
                else:
                    # Its gateway died. Not compared with the log: a gateway that holds the run
                    # sends its own watchers events before Redis has them, and the ones Redis
                    # never got are lost with it (the new owner logs others under their seqs).
                    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), (why, wid)
    finally:
        if answering is not None:
            answering.cancel()
        for task in answerer.answers.values() if answerer is not None else ():
            task.cancel()
        for *_, task in watching:
            task.cancel()
        for client in clients:
            await client.close()
