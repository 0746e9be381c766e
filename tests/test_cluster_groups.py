"""Groups and topics across gateways (issue 13, step 1): 3 real ``graphwire serve`` on one Redis.

Clients connect through a round-robin balancer with no stickiness, so consecutive clients
land on gateways A, B and C; broadcasts are posted to one gateway directly. Every frame is
checked against the spec by ``harness.Client``; every receive has a timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster import Clients, apost, nothing_more, request, wait_for
from harness import Client, Server
from redis_proc import RedisServer


async def alerts_until(client: Client, message: str) -> list[dict[str, Any]]:
    """Every ``system_alert`` up to and including the one with ``message``."""
    seen = await client.until(lambda m: m["type"] == "system_alert" and m["message"] == message, timeout=10)
    return [m for m in seen if m["type"] == "system_alert"]


# Channels every gateway watches for itself (besides its own graphwire:gateway:<id>).
GATEWAYS_OWN = {"graphwire:runs", "graphwire:mail"}


def channels(redis_server: RedisServer, pattern: str = "graphwire:*") -> set[str]:
    """The channels subscribed for clients (not the gateways' own command channels)."""
    with redis_server.client() as admin:
        names = {c.decode() for c in admin.pubsub_channels(pattern)}
    return {name for name in names if not name.startswith("graphwire:gateway:") and name not in GATEWAYS_OWN}


def numsub(redis_server: RedisServer, channel: str) -> int:
    with redis_server.client() as admin:
        return int(dict(admin.pubsub_numsub(channel))[channel.encode()])


def subscriptions_per_gateway(redis_server: RedisServer) -> list[int]:
    """``sub=`` of every gateway's pub/sub connection (``CLIENT LIST``, named ``graphwire-<id>-sub``), sorted.

    Each gateway's own command channel (``graphwire:gateway:<id>``), ``graphwire:runs`` and ``graphwire:mail``
    are not counted.
    """
    with redis_server.client() as admin:
        listed = admin.client_list()
    names = [(c.get("name", ""), int(c["sub"])) for c in listed]
    return sorted(
        sub - 1 - len(GATEWAYS_OWN) for name, sub in names if name.startswith("graphwire-") and name.endswith("-sub")
    )


async def test_a_broadcast_on_b_reaches_every_member_on_a_b_and_c_once(cluster: list[Server], clients: Clients) -> None:
    members = await clients.one_per_gateway()
    outsiders = await clients.one_per_gateway()
    for i, member in enumerate(members):
        await request(member, {"type": "join_group", "id": f"j{i}", "group": "night-shift"})
    status, body = await apost(
        cluster[1], "/api/broadcast", {"group": "night-shift", "message": "db failover", "level": "critical"}
    )
    assert (status, body) == (200, {"delivered": 1, "gateways": 2})
    # A second broadcast from another gateway, after the first: had any member got the first
    # twice (an echo, a double subscription), it would sit between the two.
    status, body = await apost(cluster[0], "/api/broadcast", {"group": "night-shift", "message": "done"})
    assert (status, body) == (200, {"delivered": 1, "gateways": 2})
    for member in members:
        got = await alerts_until(member, "done")
        assert [(m["message"], m["level"], m["group"]) for m in got] == [
            ("db failover", "critical", "night-shift"),
            ("done", "info", "night-shift"),
        ]
        await nothing_more(member, "system_alert")
    for outsider in outsiders:
        await outsider.ping()
        assert [m["type"] for m in outsider.frames] == ["connected", "pong"]


async def test_topics_reach_subscribers_on_every_gateway(cluster: list[Server], clients: Clients) -> None:
    subscribers = await clients.one_per_gateway()
    bystanders = await clients.one_per_gateway()
    for i, subscriber in enumerate(subscribers):
        answer = await request(subscriber, {"type": "subscribe", "id": f"s{i}", "topics": ["prices", f"own-{i}"]})
        assert answer["topics"] == sorted(["prices", f"own-{i}"])
    await request(bystanders[0], {"type": "subscribe", "id": "other", "topics": ["weather"]})
    status, body = await apost(cluster[2], "/api/publish", {"topic": "prices", "data": {"eur": 1.08}})
    assert (status, body) == (200, {"delivered": 1, "gateways": 2})
    # A topic only A watches: posted on C, C has no subscriber and one gateway got it.
    status, body = await apost(cluster[2], "/api/publish", {"topic": "own-0", "data": {"n": 0}})
    assert (status, body) == (200, {"delivered": 0, "gateways": 1})
    for subscriber in subscribers:
        got = await subscriber.until(lambda m: m["type"] == "topic_message")
        assert (got[-1]["topic"], got[-1]["data"]) == ("prices", {"eur": 1.08})
    own = await subscribers[0].until(lambda m: m["type"] == "topic_message")
    assert (own[-1]["topic"], own[-1]["data"]) == ("own-0", {"n": 0})
    for client in [*subscribers, *bystanders]:
        await nothing_more(client, "topic_message")
    assert not [m for c in bystanders for m in c.frames if m["type"] == "topic_message"]


async def test_leaving_stops_delivery_and_the_gateway_unsubscribes(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    members = await clients.one_per_gateway()
    for i, member in enumerate(members):
        await request(member, {"type": "join_group", "id": f"j{i}", "group": "leavers"})
    assert "graphwire:group:leavers" in channels(redis_up)
    await request(members[0], {"type": "leave_group", "id": "bye", "group": "leavers"})
    await request(members[2], {"type": "leave_group", "id": "bye", "group": "leavers"})
    # Their deliveries stop at the ack; Redis drops A's and C's subscriptions a moment later.
    await wait_for(lambda: numsub(redis_up, "graphwire:group:leavers") == 1, "A and C unsubscribe")
    status, body = await apost(cluster[0], "/api/broadcast", {"group": "leavers", "message": "still here?"})
    assert (status, body) == (200, {"delivered": 0, "gateways": 1})  # only B still has a member
    got = await alerts_until(members[1], "still here?")
    assert [m["message"] for m in got] == ["still here?"]
    for gone in (members[0], members[2]):
        await gone.ping()
        assert not [m for m in gone.frames if m["type"] == "system_alert"]
    await request(members[1], {"type": "leave_group", "id": "bye", "group": "leavers"})
    await wait_for(lambda: "graphwire:group:leavers" not in channels(redis_up), "the last gateway unsubscribes")


async def test_each_gateway_subscribes_only_to_what_its_clients_watch(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    await wait_for(lambda: subscriptions_per_gateway(redis_up) == [0, 0, 0], "earlier tests' clients gone")
    on_a, on_b, _ = await clients.one_per_gateway()
    await request(on_a, {"type": "join_group", "id": "j", "group": "only-a"})
    await request(on_b, {"type": "subscribe", "id": "s", "topics": ["only-b", "also-b"]})
    assert channels(redis_up) == {"graphwire:group:only-a", "graphwire:topic:only-b", "graphwire:topic:also-b"}
    # One pub/sub connection per gateway: A watches one channel, B two, C none.
    assert subscriptions_per_gateway(redis_up) == [0, 1, 2]
    with redis_up.client() as admin:
        counts = dict(admin.pubsub_numsub("graphwire:group:only-a", "graphwire:topic:only-b"))
    assert counts == {b"graphwire:group:only-a": 1, b"graphwire:topic:only-b": 1}
    await on_a.close()  # a client that goes away leaves its groups: A unsubscribes
    await wait_for(lambda: "graphwire:group:only-a" not in channels(redis_up), "A unsubscribes")


async def everyone_gets_it_again(cluster: list[Server], members: list[Client], tag: str) -> None:
    """After a fault: poll until a broadcast on B reaches both other gateways; each member gets it once.

    Each try has its own message: under load a gateway's pub/sub connection may drop once
    more while it comes back, and a try it missed is simply not the one checked.
    """
    tries = 0
    reached: list[str] = []

    async def reaches_all() -> bool:
        nonlocal tries
        tries += 1
        message = f"{tag}-{tries}"
        status, body = await apost(cluster[1], "/api/broadcast", {"group": "survivors", "message": message})
        if status == 200 and body == {"delivered": 1, "gateways": 2}:
            reached.append(message)
        return bool(reached)

    await wait_for(reaches_all, f"a broadcast on B reaching A and C again after the {tag}")
    (final,) = reached
    for member in members:
        got = await alerts_until(member, final)
        assert [m["message"] for m in got].count(final) == 1
        await nothing_more(member, "system_alert")


async def test_killed_redis_connections_are_repaired(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    members = await clients.one_per_gateway()
    for i, member in enumerate(members):
        await request(member, {"type": "join_group", "id": f"j{i}", "group": "survivors"})
    killed = redis_up.client_kill_all()
    assert killed >= 3  # at least every gateway's pub/sub connection
    await everyone_gets_it_again(cluster, members, "kill")
    for member in members:  # the clients never noticed: same sockets, still answering
        await member.ping()
    assert channels(redis_up, "graphwire:group:*") == {"graphwire:group:survivors"}


async def test_redis_restarted_the_cluster_comes_back(
    cluster: list[Server], clients: Clients, redis_up: RedisServer
) -> None:
    members = await clients.one_per_gateway()
    for i, member in enumerate(members):
        await request(member, {"type": "join_group", "id": f"j{i}", "group": "survivors"})
    warned = [s.log().count("is unreachable") for s in cluster]
    await asyncio.to_thread(redis_up.stop)
    # Redis down: the broadcast reaches B's own member, the caller learns the rest did not.
    status, body = await apost(cluster[1], "/api/broadcast", {"group": "survivors", "message": "during"})
    assert status == 503
    assert body["delivered"] == 1
    assert [m["message"] for m in await alerts_until(members[1], "during")] == ["during"]
    for server in cluster:  # liveness is unchanged: the gateways serve their own clients
        assert (await asyncio.to_thread(server.get_json, "/ws/health"))["status"] == "ok"
    await asyncio.to_thread(redis_up.start)
    await everyone_gets_it_again(cluster, members, "restart")
    for member in (members[0], members[2]):  # lost for them while cut off: groups are live-only
        assert "during" not in [m.get("message") for m in member.frames]
    # One warning per gateway for the outage, however many reconnects it took.
    assert [s.log().count("is unreachable") for s in cluster] == [n + 1 for n in warned]
