"""The broker seam and its in-process default; the Redis broker's tests against a real
``redis-server`` are in ``tests/test_broker_redis.py`` (they share the session's Redis)."""

from __future__ import annotations

import asyncio
import json

import pytest

from graphwire._generated.messages import JoinGroup, Subscribe
from graphwire.broker import (
    Broker,
    LocalBroker,
    RedisBroker,
    backoff_delay,
    create_broker,
    redacted,
)
from graphwire.connections import GROUP, TOPIC, ConnectionManager, alert_frame
from graphwire.router import Router
from graphwire.runs import RunManager
from graphwire.settings import Settings, SettingsProblem, load_settings
from inprocess import connection, eventually

# -- the seam and the in-process default ------------------------------------------------


def test_the_local_broker_is_the_default_and_redis_needs_a_url() -> None:
    assert isinstance(create_broker(Settings()), LocalBroker)
    broker = create_broker(Settings(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5))
    assert isinstance(broker, RedisBroker)
    assert (broker.timeout, broker.shared) == (0.5, True)


def test_a_redis_url_of_another_form_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHWIRE_REDIS_URL", "localhost:6379")
    with pytest.raises(SettingsProblem, match=r"GRAPHWIRE_REDIS_URL=.*expected a URL: redis://"):
        load_settings()


def test_logged_addresses_carry_no_password() -> None:
    assert redacted("redis://user:hunter2@db.internal:6380/2") == "redis://db.internal:6380/2"
    assert redacted("rediss://:hunter2@db.internal/0") == "rediss://db.internal/0"
    assert redacted("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_backoff_is_full_jitter_growing_to_a_cap() -> None:
    top = [backoff_delay(n, base=0.05, cap=2.0, rand=lambda: 1.0) for n in range(10)]
    assert top[:6] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    assert top[6:] == [2.0] * 4
    assert backoff_delay(3, rand=lambda: 0.0) == 0.0
    assert backoff_delay(10_000, rand=lambda: 1.0) == 2.0  # no overflow however long the outage


async def test_the_local_broker_keeps_everything_in_process() -> None:
    broker: Broker = LocalBroker()
    await broker.start(lambda channel, frame: pytest.fail("nothing arrives from elsewhere"))
    assert (broker.shared, broker.connected) == (False, True)
    assert broker.watch(GROUP + "ops") is None  # in force at once: the ack is not held
    broker.send(GROUP + "ops", "{}")
    assert await broker.publish(GROUP + "ops", "{}") == 0
    broker.unwatch(GROUP + "ops")
    await broker.close()


async def test_with_the_local_broker_fan_out_is_what_it_was() -> None:
    manager = ConnectionManager()
    member, wire = connection(manager, "cl_member")
    _, elsewhere = connection(manager, "cl_outsider")
    assert manager.join_group(member, "ops") is None
    assert manager.subscribe_topic(member, "news") is None
    assert manager.broadcast_to_group("ops", "deploy") == 1
    assert manager.publish("news", {"v": 1}) == 1
    reach = await manager.broadcast_to_group_everywhere("ops", alert_frame("ops", "again", "info"))
    assert (reach.delivered, reach.gateways) == (1, 0)
    await eventually(lambda: len(wire.frames) == 3)  # back-to-back frames leave together, a moment later
    assert [f["type"] for f in wire.frames] == ["system_alert", "topic_message", "system_alert"]
    assert elsewhere.frames == []
    await manager.remove(member)
    assert manager.broadcast_to_group("ops", "gone") == 0


class HeldBroker(LocalBroker):
    """A shared broker whose subscriptions complete only when the test says."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[str, asyncio.Future[None]] = {}
        self.sent: list[tuple[str, str]] = []

    def watch(self, channel: str) -> asyncio.Future[None] | None:
        return self.pending.setdefault(channel, asyncio.get_running_loop().create_future())

    def send(self, channel: str, frame: str) -> None:
        self.sent.append((channel, frame))


async def test_join_and_subscribe_are_answered_once_the_broker_has_them(settings: Settings) -> None:
    broker = HeldBroker()
    manager = ConnectionManager(broker=broker)
    router = Router(None, RunManager(settings, manager.flusher), manager)  # type: ignore[arg-type]
    conn, wire = connection(manager, "cl_1")
    router.handle(conn, JoinGroup(type="join_group", id="j", group="ops"))
    router.handle(conn, Subscribe(type="subscribe", id="s", topics=["a", "b"]))
    await asyncio.sleep(0)
    assert wire.frames == []  # membership is local already; the answer waits for the broker
    broker.pending[GROUP + "ops"].set_result(None)
    broker.pending[TOPIC + "a"].set_result(None)
    await asyncio.sleep(0)
    assert wire.frames == [{"type": "ack", "reply_to": "j", "command": "join_group"}]
    broker.pending[TOPIC + "b"].set_result(None)
    await eventually(lambda: len(wire.frames) == 2)
    assert wire.frames[1] == {"type": "subscribed", "reply_to": "s", "topics": ["a", "b"]}
    # A broadcast goes to the local member and, once, to the broker for the others.
    assert manager.broadcast_to_group("ops", "hi") == 1
    assert [channel for channel, _ in broker.sent] == [GROUP + "ops"]
    assert json.loads(broker.sent[0][1])["message"] == "hi"
