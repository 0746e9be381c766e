"""The offline mailbox (issue 14), against a real ``graphwire serve``; plain websockets clients.

A user away (no connection open) while group alerts, an input request of their run and a
direct message arrive finds them, in order, on their next connection; what they
acknowledge never comes again, and a client that drops mid-delivery gets the rest. With
several gateways, the mailbox is in Redis: away on one gateway, back on another. Every
frame is checked against the spec (``harness.Client``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import websockets

from cluster import DEADLINE, fresh_cluster, post
from graphwire.mailbox import RedisMailbox
from harness import TERMINAL, Client, Server, connect, start_server, stop_server
from redis_proc import RedisServer

MAX = 5  # GRAPHWIRE_MAILBOX_MAX_MESSAGES here


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("mailbox"), env={"GRAPHWIRE_MAILBOX_MAX_MESSAGES": str(MAX)})
    yield running
    stop_server(running)
    assert "Traceback" not in running.log(), running.log()


async def reply(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    await client.send(frame)
    seen = await client.until(lambda m: m.get("reply_to") == frame["id"])
    return seen[-1]


async def mail_until_pong(client: Client) -> list[dict[str, Any]]:
    """Every ``mail`` that arrives before the answer to a ping sent now (waiting mail comes first)."""
    await asyncio.sleep(0.3)  # waiting mail is read in the background after `connected`
    await client.send({"type": "ping", "id": "end"})
    seen = await client.until(lambda m: m.get("reply_to") == "end")
    return [m for m in seen if m["type"] == "mail"]


async def back(server: Server, client_id: str) -> Client:
    client = await connect(server.ws() + f"?client_id={client_id}")
    assert client.hello["client_id"] == client_id
    assert client.hello.get("resumed") is True
    return client


async def wait_input_request(watcher: Client, workflow_id: str) -> dict[str, Any]:
    seen = await watcher.until(
        lambda m: m.get("workflow_id") == workflow_id and m["type"] == "input_request", timeout=DEADLINE
    )
    return seen[-1]


async def test_away_while_alerts_an_input_request_and_a_direct_message_arrive(gateway: Server) -> None:
    user = await connect(gateway.ws())
    me = user.hello["client_id"]
    assert (await reply(user, {"type": "join_group", "id": "j", "group": "ops-away"}))["type"] == "ack"
    started = await user.start("relay_ask", {"ticks": 3, "delay_ms": 100})
    run = started["workflow_id"]
    await user.close()  # away before the run asks anything

    watcher = await connect(gateway.ws())  # someone else: watching does not make the user present
    await reply(watcher, {"type": "subscribe", "id": "w", "workflow_id": run, "since_seq": 0})
    request = await wait_input_request(watcher, run)
    for i in range(3):
        status, body = post(gateway, "/api/broadcast", {"group": "ops-away", "message": f"alert {i}"})
        assert (status, body) == (200, {"delivered": 0, "kept": 1})
    status, body = post(gateway, "/api/send", {"user": me, "message": {"text": "your report is ready"}})
    assert status == 200
    assert body == {"mail_seq": 5, "delivered": 0}

    again = await back(gateway, me)
    mail = await mail_until_pong(again)
    assert [m["mail_seq"] for m in mail] == [1, 2, 3, 4, 5]
    kept_request = mail[0]["message"]
    assert kept_request["type"] == "input_request"
    assert (kept_request["request_id"], kept_request["workflow_id"], kept_request["seq"]) == (
        request["request_id"],
        run,
        request["seq"],
    )
    assert [(m["message"]["type"], m["message"].get("message")) for m in mail[1:4]] == [
        ("system_alert", f"alert {i}") for i in range(3)
    ]
    assert mail[4]["message"] == {"type": "direct_message", "data": {"text": "your report is ready"}}

    # The kept request is still open: answered from the mailbox, the run goes on.
    await again.answer(kept_request, "yes")
    done = await watcher.until(lambda m: m.get("workflow_id") == run and m["type"] in TERMINAL, timeout=DEADLINE)
    assert done[-1]["type"] == "workflow_completed"

    # Handled two, then dropped: the next connection gets the other three, once.
    assert await reply(again, {"type": "ack_mail", "id": "a", "up_to": 2}) == {
        "type": "ack",
        "reply_to": "a",
        "command": "ack_mail",
    }
    await again.close()
    third = await back(gateway, me)
    assert [m["mail_seq"] for m in await mail_until_pong(third)] == [3, 4, 5]
    assert (await reply(third, {"type": "ack_mail", "id": "b", "up_to": 5}))["type"] == "ack"
    await third.close()
    fourth = await back(gateway, me)
    assert await mail_until_pong(fourth) == []
    await fourth.close()
    await watcher.close()


async def test_a_connected_user_gets_direct_mail_at_once_and_a_left_group_keeps_nothing(gateway: Server) -> None:
    user = await connect(gateway.ws())
    me = user.hello["client_id"]
    await reply(user, {"type": "join_group", "id": "j", "group": "ops-left"})
    status, body = post(gateway, "/api/send", {"user": me, "message": {"n": 1}})
    assert (status, body) == (200, {"mail_seq": 1, "delivered": 1})
    live = await user.until(lambda m: m["type"] == "mail")
    assert live[-1]["message"] == {"type": "direct_message", "data": {"n": 1}}
    # Connected: a group alert arrives live and is not kept as well.
    assert post(gateway, "/api/broadcast", {"group": "ops-left", "message": "live"}) == (200, {"delivered": 1})
    await reply(user, {"type": "leave_group", "id": "l", "group": "ops-left"})
    await reply(user, {"type": "ack_mail", "id": "a", "up_to": 1})
    await user.close()
    # Left on purpose, then away: the group's alerts are not kept for them.
    assert post(gateway, "/api/broadcast", {"group": "ops-left", "message": "gone"}) == (200, {"delivered": 0})
    again = await back(gateway, me)
    assert await mail_until_pong(again) == []
    await again.close()


async def test_the_mailbox_is_bounded_and_keeps_the_newest(gateway: Server) -> None:
    user = await connect(gateway.ws())
    me = user.hello["client_id"]
    await user.close()
    for i in range(MAX + 2):
        status, body = post(gateway, "/api/send", {"user": me, "message": {"i": i}})
        assert (status, body["mail_seq"]) == (200, i + 1)
    again = await back(gateway, me)
    mail = await mail_until_pong(again)
    assert [m["mail_seq"] for m in mail] == list(range(3, MAX + 3))
    assert [m["message"]["data"]["i"] for m in mail] == list(range(2, MAX + 2))
    await again.close()


async def test_bad_ids_and_acks_get_clear_answers_and_change_nothing(gateway: Server) -> None:
    user = await connect(gateway.ws())
    me = user.hello["client_id"]
    post(gateway, "/api/send", {"user": me, "message": {"keep": True}})
    await user.until(lambda m: m["type"] == "mail")
    # Not a client id the gateway gives, or one in use: a new id, nothing taken over.
    for wanted in ("someone-else", "cl_" + "0" * 15, me):
        other = await connect(gateway.ws() + f"?client_id={wanted}")
        assert other.hello["client_id"] not in (wanted, me)
        assert "resumed" not in other.hello
        assert await mail_until_pong(other) == []
        await other.close()
    for bad in ({"up_to": 0}, {"up_to": "3"}, {}, {"up_to": 1, "extra": 1}):
        answer = await reply(user, {"type": "ack_mail", "id": "bad", **bad})
        assert (answer["type"], answer["code"]) == ("error", "invalid_message"), answer
    status, _ = post(gateway, "/api/send", {"user": "", "message": {}})
    assert status == 422
    deep: dict[str, Any] = {}
    for _ in range(200):
        deep = {"d": deep}
    status, _ = post(gateway, "/api/send", {"user": me, "message": deep})
    assert status == 422
    await user.close()
    again = await back(gateway, me)  # the refused acks removed nothing
    assert [m["message"]["data"] for m in await mail_until_pong(again)] == [{"keep": True}]
    await again.close()


# -- several gateways: the mailbox in Redis ---------------------------------------------------

CLUSTER_MAIL_ENV = {"GRAPHWIRE_REDIS_TIMEOUT": "1", "GRAPHWIRE_RUN_LEASE_SECONDS": "1"}


@pytest.fixture
def trio(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Server]]:
    with fresh_cluster(redis_server, tmp_path, 3, CLUSTER_MAIL_ENV) as servers:
        yield servers


async def test_away_on_a_alerts_and_an_input_request_arrive_back_on_c(trio: list[Server]) -> None:
    a, b, c = trio
    user = await connect(a.ws())
    me = user.hello["client_id"]
    await reply(user, {"type": "join_group", "id": "j", "group": "ops"})
    run = (await user.start("relay_ask", {"ticks": 3, "delay_ms": 100}))["workflow_id"]
    await user.close()

    watcher = await connect(b.ws())
    await reply(watcher, {"type": "subscribe", "id": "w", "workflow_id": run, "since_seq": 0})
    request = await wait_input_request(watcher, run)
    for i in range(3):
        # Sent to B: the user's mailbox is in Redis, whichever gateway they were on.
        assert post(b, "/api/broadcast", {"group": "ops", "message": f"alert {i}"})[1]["kept"] == 1

    again = await back(c, me)
    mail = await mail_until_pong(again)
    assert [m["mail_seq"] for m in mail] == [1, 2, 3, 4]
    assert mail[0]["message"]["request_id"] == request["request_id"]
    assert [m["message"].get("message") for m in mail[1:]] == ["alert 0", "alert 1", "alert 2"]
    await again.answer(mail[0]["message"], "yes")  # answered on C, applied on A, exactly once
    done = await watcher.until(lambda m: m.get("workflow_id") == run and m["type"] in TERMINAL, timeout=DEADLINE)
    assert done[-1]["type"] == "workflow_completed"
    events = [m for m in watcher.frames if m.get("workflow_id") == run]
    assert sum(1 for m in events if m["type"] == "input_answered") == 1

    assert (await reply(again, {"type": "ack_mail", "id": "a", "up_to": 4}))["type"] == "ack"
    # Present on C now: a direct message sent through A reaches it at once, through Redis.
    status, body = post(a, "/api/send", {"user": me, "message": {"text": "hello from A"}})
    assert (status, body) == (200, {"mail_seq": 5, "delivered": 0})
    live = await again.until(lambda m: m["type"] == "mail", timeout=DEADLINE)
    assert (live[-1]["mail_seq"], live[-1]["message"]["data"]) == (5, {"text": "hello from A"})
    await reply(again, {"type": "ack_mail", "id": "b", "up_to": 5})
    await again.close()
    on_b = await back(b, me)
    assert await mail_until_pong(on_b) == []
    await on_b.close()
    await watcher.close()


async def test_a_user_whose_gateway_was_killed_is_away_once_its_presence_lapses(
    trio: list[Server], redis_server: RedisServer
) -> None:
    a, b, _ = trio
    b_id = b.get_json("/ws/health")["gateway_id"]
    user = await connect(b.ws())
    me = user.hello["client_id"]
    await reply(user, {"type": "join_group", "id": "j", "group": "night"})
    assert post(a, "/api/broadcast", {"group": "night", "message": "here"})[1] == {"delivered": 0, "gateways": 1}
    b.process.send_signal(signal.SIGKILL)
    b.process.wait(10)
    # B never said goodbye: its connections count until its alive key lapses (one lease).
    deadline = time.monotonic() + DEADLINE
    with redis_server.client() as admin:
        while admin.exists(f"graphwire:alive:{b_id}"):
            assert time.monotonic() < deadline, "B's presence never lapsed"
            await asyncio.sleep(0.1)
    status, body = post(a, "/api/broadcast", {"group": "night", "message": "while you were gone"})
    assert (status, body.get("kept")) == (200, 1)
    with pytest.raises(websockets.ConnectionClosed):  # the socket died with its gateway
        await user.until(lambda m: False, timeout=5)
    assert [m["message"] for m in user.frames if m["type"] == "system_alert"] == ["here"]
    again = await back(a, me)
    mail = await mail_until_pong(again)
    assert [m["message"]["message"] for m in mail] == ["while you were gone"]
    await again.close()


async def test_in_redis_a_present_user_gets_nothing_kept_and_mail_expires_after_its_ttl(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    mailbox = RedisMailbox(lambda: client, "gw_here", timeout=2.0, max_messages=10, ttl=1.0, alive_seconds=5.0)
    await mailbox.start()
    try:
        await mailbox.opened("ann")
        await wait_until(lambda: client.exists("graphwire:alive:gw_here"))
        assert await mailbox.to_user("ann", "{}", if_away=True) is None  # here: nothing kept
        kept = await mailbox.to_user("ann", '{"x":1}', if_away=False)
        assert kept is not None
        assert kept.mail_seq == 1
        await mailbox.closed("ann")
        assert [letter.message for letter in await mailbox.opened("ann")] == ['{"x":1}']
        await mailbox.closed("ann")
        await asyncio.sleep(1.5)  # past the TTL: Redis dropped the keys
        assert await mailbox.opened("ann") == []
    finally:
        await mailbox.close()
        assert not await client.exists("graphwire:alive:gw_here")  # a clean stop says goodbye
        await client.aclose()


async def wait_until(probe: Callable[[], Awaitable[int]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await probe():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
