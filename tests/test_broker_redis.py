"""The Redis broker against the session's real ``redis-server`` (``tests/conftest.py``).

Two ``RedisBroker``s (two gateways, as far as Redis can tell) run in one event loop, so
each assertion sees both sides; ``test_cluster_groups.py`` does the same with real
``graphwire serve`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import pytest

from graphwire._generated.messages import NodeEvent, WorkflowStarted
from graphwire.broker import (
    BrokerUnavailable,
    RedisBroker,
)
from graphwire.connections import GROUP, ConnectionManager, Flusher, alert_frame
from graphwire.runs import Run, RunManager
from graphwire.settings import Settings
from harness import ROOT, free_port
from redis_proc import RedisServer

# The in-process test helpers live with the server's tests (server/tests/inprocess.py).
sys.path.append(str(ROOT / "server" / "tests"))
from inprocess import connection, eventually

TIMEOUT = 1.0  # the brokers' redis_timeout here: faults are noticed fast


# -- the Redis broker against a real Redis -------------------------------------------------


class Inbox:
    """What one broker's ``on_frame`` received."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, str]] = []

    def __call__(self, channel: str, frame: str) -> None:
        self.frames.append((channel, frame))


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisBroker, Inbox, RedisBroker, Inbox]]:
    a, b = RedisBroker(redis_url, timeout=TIMEOUT), RedisBroker(redis_url, timeout=TIMEOUT)
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a)
    await b.start(inbox_b)
    assert a.connected
    assert b.connected
    yield a, inbox_a, b, inbox_b
    await a.close()
    await b.close()


def channels(redis_server: RedisServer) -> set[str]:
    """What the gateways subscribe to for their clients (each also has its own command channel)."""
    with redis_server.client() as admin:
        names = {c.decode() for c in admin.pubsub_channels("graphwire:*")}
    return {
        name
        for name in names
        if not name.startswith("graphwire:gateway:") and name not in ("graphwire:runs", "graphwire:mail")
    }


def watched(broker: RedisBroker) -> frozenset[str]:
    """``broker.subscribed`` without its own command channel."""
    return broker.subscribed - {broker.inbox_channel, "runs", "mail"}


async def test_a_gateway_subscribes_only_while_its_clients_watch(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox], redis_server: RedisServer
) -> None:
    a = pair[0]
    assert channels(redis_server) == set()
    ready = a.watch(GROUP + "ops")
    assert ready is not None
    await asyncio.wait_for(ready, 5)
    assert watched(a) == {GROUP + "ops"}
    assert channels(redis_server) == {"graphwire:group:ops"}
    assert a.watch(GROUP + "ops") is None  # already subscribed: a second member is answered at once
    a.unwatch(GROUP + "ops")
    await eventually(lambda: channels(redis_server) == set(), what="the UNSUBSCRIBE")
    assert watched(a) == frozenset()


async def test_a_frame_reaches_the_other_gateways_once_and_not_its_sender(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox],
) -> None:
    a, inbox_a, b, inbox_b = pair
    await asyncio.wait_for(asyncio.gather(*(f for f in (a.watch("group:ops"), b.watch("group:ops")) if f)), 5)
    assert await b.publish("group:ops", '{"n":1}') == 1  # a, not b itself
    b.send("group:ops", '{"n":2}')
    await eventually(lambda: len(inbox_a.frames) == 2)
    assert inbox_a.frames == [("group:ops", '{"n":1}'), ("group:ops", '{"n":2}')]  # in order
    assert inbox_b.frames == []  # the sender skips its own echo
    assert await a.publish("group:nobody", "{}") == 0


async def test_left_and_joined_again_is_subscribed_again(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox], redis_server: RedisServer
) -> None:
    a, inbox_a, b, _ = pair
    for _ in range(3):  # quick flaps: the last SUBSCRIBE's confirmation is the one that counts
        first = a.watch("topic:t")
        a.unwatch("topic:t")
        assert first is None or first.done()
    again = a.watch("topic:t")
    if again is not None:
        await asyncio.wait_for(again, 5)
    assert channels(redis_server) == {"graphwire:topic:t"}
    assert await b.publish("topic:t", "{}") == 1
    await eventually(lambda: inbox_a.frames == [("topic:t", "{}")])


async def test_killed_connections_are_reconnected_and_subscribed_again(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, inbox_a, b, _ = pair
    ready = a.watch("group:ops")
    if ready is not None:
        await asyncio.wait_for(ready, 5)
    with caplog.at_level(logging.INFO, logger="graphwire.broker"):
        assert redis_server.client_kill_all() >= 2
        await eventually(lambda: a.outages == 1, what="noticing the kill")
        await eventually(lambda: watched(a) == {"group:ops"}, what="subscribing again")
        # The publisher's pooled connection was killed too: it is replaced, not failed on.
        assert await b.publish("group:ops", '{"after":"kill"}') == 1
        await eventually(lambda: ("group:ops", '{"after":"kill"}') in inbox_a.frames)
    assert a.outages == 1
    lost = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    assert len(lost) == 2  # one per broker and outage
    assert channels(redis_server) == {"graphwire:group:ops"}


async def reaches(sender: RedisBroker, inbox: Inbox, channel: str, timeout: float = 15.0) -> None:
    """Publish until a frame reaches ``inbox``: after a fault, reconnecting takes a moment."""
    deadline = asyncio.get_running_loop().time() + timeout
    n = 0
    while True:
        n += 1
        probe = (channel, f'{{"probe":{n}}}')
        with_count = 0
        with contextlib.suppress(BrokerUnavailable):
            with_count = await sender.publish(*probe)
        if with_count:
            await eventually(lambda: probe in inbox.frames, timeout=5)  # noqa: B023 - awaited here
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no frame reached the other broker within {timeout} s")
        await asyncio.sleep(0.05)


async def test_redis_restarted_the_brokers_come_back(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox],
    redis_server: RedisServer,
) -> None:
    a, inbox_a, b, _ = pair
    ready = a.watch("topic:news")
    if ready is not None:
        await asyncio.wait_for(ready, 5)
    await asyncio.to_thread(redis_server.restart)
    await eventually(lambda: a.outages == 1, what="noticing the restart")
    await eventually(lambda: watched(a) == {"topic:news"}, what="subscribing again")
    assert channels(redis_server) == {"graphwire:topic:news"}
    await reaches(b, inbox_a, "topic:news")


async def test_with_redis_down_publishing_fails_fast_and_joining_is_not_held(
    pair: tuple[RedisBroker, Inbox, RedisBroker, Inbox],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, _, b, _ = pair
    await asyncio.to_thread(redis_server.kill)
    await eventually(lambda: not a.connected, what="noticing the outage")
    assert a.watch("group:later") is None  # local at once; subscribed when Redis is back
    with caplog.at_level(logging.ERROR, logger="graphwire.broker"):
        started = asyncio.get_running_loop().time()
        with pytest.raises(BrokerUnavailable):
            await a.publish("group:later", "{}")
        a.send("group:later", "{}")  # never raises into a client's command
        with pytest.raises(BrokerUnavailable):
            await a.publish("group:later", "{}")
        assert asyncio.get_running_loop().time() - started < 3 * TIMEOUT + 1
    assert a.publish_failures >= 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # one line per outage
    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: watched(a) == {"group:later"}, timeout=10, what="subscribing after the outage")
    assert await b.publish("group:later", "{}") == 1


async def test_an_unreachable_redis_is_logged_once_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    broker = RedisBroker(f"redis://user:hunter2@127.0.0.1:{free_port()}/0", timeout=0.3)
    with caplog.at_level(logging.DEBUG, logger="graphwire.broker"):
        await broker.start(Inbox())  # gives up waiting after the timeout; the gateway still starts
        assert not broker.connected
        await asyncio.sleep(0.5)  # a few reconnect attempts
        with pytest.raises(BrokerUnavailable):
            await broker.publish("group:g", "{}")
        await broker.close()
    assert "hunter2" not in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "redis://127.0.0.1:" in warnings[0].getMessage()


async def test_two_managers_on_redis_deliver_to_each_others_members(redis_url: str) -> None:
    """The connection manager over the seam: what the cluster tests check across processes."""
    managers = []
    for _ in range(2):
        broker = RedisBroker(redis_url, timeout=TIMEOUT)
        manager = ConnectionManager(broker=broker)
        await broker.start(manager.deliver_remote)
        managers.append(manager)
    here, there = managers
    member, wire = connection(there, "cl_there")
    local, local_wire = connection(here, "cl_here")
    for ready in (there.join_group(member, "ops"), here.join_group(local, "ops"), there.subscribe_topic(member, "t")):
        if ready is not None:
            await asyncio.wait_for(ready, 5)
    reach = await here.broadcast_to_group_everywhere("ops", alert_frame("ops", "failover", "critical"))
    assert (reach.delivered, reach.gateways) == (1, 1)
    assert here.publish("t", {"v": 1}) == 0  # no subscriber here; there has one
    await eventually(lambda: len(wire.frames) == 2)
    assert [(f["type"], f.get("message"), f.get("data")) for f in wire.frames] == [
        ("system_alert", "failover", None),
        ("topic_message", None, {"v": 1}),
    ]
    assert [f["type"] for f in local_wire.frames] == ["system_alert"]  # exactly once, not echoed
    await there.remove(member)  # its last member gone, the gateway unsubscribes
    assert isinstance(there.broker, RedisBroker)
    await eventually(lambda: watched(there.broker) == frozenset(), what="the UNSUBSCRIBE")
    for manager in managers:
        await manager.broker.close()


# -- run logs in Redis: the owner's writer and a mirror's repair ----------------------------


def stream_seqs(redis_server: RedisServer, workflow_id: str) -> list[int]:
    with redis_server.client() as admin:
        return [int(entry_id.split(b"-")[0]) for entry_id, _ in admin.xrange(f"graphwire:run:{workflow_id}:log")]


def tick(run: Run, i: int) -> None:
    run.append(NodeEvent, node_id="n", event="tick", data={"i": i})


async def test_an_outage_longer_than_the_memory_log_recreates_the_log_under_a_new_epoch(
    redis_server: RedisServer, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url, run_log_max_events=10)
    broker = RedisBroker(redis_url, timeout=0.3, run_log_max_events=10)
    await broker.start(lambda _c, _f: None)
    try:
        run = Run("run_outage", "ticker", settings, Flusher(0.001))
        run.store = broker.runs
        run.append(WorkflowStarted, workflow="ticker", epoch=run.epoch)
        for i in range(4):
            tick(run, i)
        await eventually(lambda: stream_seqs(redis_server, run.workflow_id) == [1, 2, 3, 4, 5], what="the first writes")
        epoch = run.epoch
        with redis_server.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")  # Redis takes no write for 1.5 s
        for i in range(4, 24):
            tick(run, i)  # the memory log keeps only the last 10 (seqs 16-25)
        await eventually(lambda: stream_seqs(redis_server, run.workflow_id) == list(range(16, 26)), what="the rewrite")
        assert run.epoch != epoch  # seqs 6-15 are nowhere: a new log, not one with a hole
        with redis_server.client() as admin:
            assert admin.hget(f"graphwire:run:{run.workflow_id}", "epoch").decode() == run.epoch
    finally:
        await broker.close()


async def test_a_mirror_that_cannot_fill_its_hole_closes_its_watchers_to_resume(
    redis_server: RedisServer, redis_url: str
) -> None:
    settings = Settings(redis_url=redis_url)
    owner, there = (RedisBroker(redis_url, timeout=TIMEOUT) for _ in range(2))
    runs_there = RunManager(settings, Flusher(0.001), there)
    await owner.start(lambda _c, _f: None)
    await there.start(lambda channel, frame: runs_there.deliver_run_frame(channel[4:], frame), runs_there.watching)
    try:
        run = Run("run_hole", "ticker", settings, Flusher(0.001))
        run.store = owner.runs
        run.append(WorkflowStarted, workflow="ticker", epoch=run.epoch)
        tick(run, 0)
        await eventually(lambda: stream_seqs(redis_server, run.workflow_id) == [1, 2], what="the owner's writes")
        mirror = await runs_there.mirror(run.workflow_id, None)
        assert mirror is not None
        assert mirror.mirror
        assert mirror.last_seq == 2
        watcher, wire = connection(ConnectionManager(), "w")
        runs_there.subscribe(watcher, mirror, 0, "s")
        for i in range(1, 4):
            tick(run, i)
        await eventually(lambda: mirror.last_seq == 5, what="live events")
        # Seqs 6-8 vanish from the stream before the mirror sees them (trimmed, say); 9 wakes it.
        there.unwatch("run:" + run.workflow_id)
        for i in range(4, 7):
            tick(run, i)
        await eventually(lambda: stream_seqs(redis_server, run.workflow_id)[-1] == 8, what="the owner's writes")
        with redis_server.client() as admin:
            admin.xtrim(f"graphwire:run:{run.workflow_id}:log", minid="9-0")
        await asyncio.wait_for(there.watch("run:" + run.workflow_id) or asyncio.sleep(0), 5)
        tick(run, 7)
        await eventually(lambda: wire.closed_with is not None, what="the watcher closed to resume")
        assert wire.closed_with is not None
        assert wire.closed_with[0] == 1013
        assert [f["seq"] for f in wire.frames if "seq" in f] == [1, 2, 3, 4, 5]  # no hole delivered
        assert run.workflow_id not in runs_there.runs  # the mirror is dropped
    finally:
        await owner.close()
        await there.close()
