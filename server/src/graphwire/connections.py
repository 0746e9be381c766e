"""Connections, their bounded send queues, groups and topic fan-out.

Groups and topics span the deployment: this gateway fans a broadcast out to its own
members and hands the same encoded frame to the broker (``graphwire.broker``), which
brings it to the other gateways' members; frames they send arrive in ``deliver_remote``.
With the in-process broker (one gateway) nothing leaves the process.

A frame reaches this module already serialised (once per event); fan-out hands the same
``str`` to every subscriber. On a calm loop it is written at once; under flat-out load
(see ``Flusher``) it is queued, and when several frames wait for one connection they
leave as one spec'd ``batch`` frame, built by joining the already-encoded frames, so a
burst costs one system call per connection instead of one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from graphwire import _eager
from graphwire._generated.messages import CloseCode, ErrorCode, SystemAlert, TopicMessage
from graphwire.auth import Principal
from graphwire.broker import Broker, BrokerUnavailable, LocalBroker
from graphwire.metrics import OFF, Metrics
from graphwire.protocol import ProtocolError, encode, now
from graphwire.settings import Settings

__all__ = ["GROUP", "TOPIC", "Connection", "ConnectionManager", "Flusher", "Reach", "Ready", "ensure_room"]

log = logging.getLogger("graphwire.connections")

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

# Broker channels: a group's and a topic's.
GROUP = "group:"
TOPIC = "topic:"

# A membership change is in force on every gateway when this is done (None: already).
Ready = asyncio.Future[None] | None

_BATCH_HEAD = '{"type":"batch","messages":['
# New fan-out frames this soon after a write mean their producers never paused.
_BUSY_GAP = 0.002


class Flusher:
    """Decides, once per fan-out event, whether its frames leave now or together later.

    Writing each frame to each socket at once costs one socket write per event per
    subscriber, the ceiling of a plain send loop. But most of the time events are apart
    (a token every few ms, a tick every second): then waiting only adds latency, and an
    event is written to every subscriber at once.

    When an event comes within 2 ms of the previous write (producers running back to
    back: flat-out fan-out), its frames are queued and the connections marked dirty
    instead; one flush later writes each dirty connection once, with all that waits as
    one ``batch`` frame. The flush comes when the producers have been quiet for ``quiet``
    seconds, or at the latest as long after the first waiting event as the last write
    took (at most ``max_delay``): producers and writers then get equal time, and more
    frames share each write as load grows. A lone event after a write is held for
    ``quiet`` only, never for a whole write's time. ``quiet`` 0 turns coalescing off.
    """

    def __init__(
        self, quiet: float, max_delay: float = 0.2, busy_gap: float = _BUSY_GAP, metrics: Metrics = OFF
    ) -> None:
        self.quiet = quiet
        self.metrics = metrics
        self.max_delay = max_delay
        self.busy_gap = busy_gap
        self.last_cost = 0.0
        self._last_end = float("-inf")  # when the last write of every dirty connection ended
        self._last_event = 0.0  # when the last queued event finished fanning out
        self._started = 0.0
        self._deadline = 0.0
        self._dirty: list[Connection] = []
        self._timer: asyncio.TimerHandle | None = None

    # time.perf_counter, not loop.time(): uvloop's clock counts whole milliseconds.
    def begin(self) -> bool:
        """Called once before an event fans out. True: write it now; False: queue and mark."""
        if self._timer is not None:
            return False
        now = time.perf_counter()
        if self.quiet <= 0 or now - self._last_end >= self.busy_gap:
            self._started = now
            return True
        self._deadline = now + min(self.last_cost, self.max_delay)
        self._timer = asyncio.get_running_loop().call_later(self.quiet, self._look)
        return False

    def end(self, at_once: bool) -> None:
        """Called after an event fanned out; ``at_once`` is what ``begin`` returned."""
        now = time.perf_counter()
        if at_once:
            self._last_end = now
            self.last_cost = now - self._started
        else:
            self._last_event = now

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if self._timer is None:  # queued outside a fan-out: flush at the first look
            self._deadline = 0.0
            self._timer = asyncio.get_running_loop().call_later(self.quiet, self._look)

    def _look(self) -> None:
        # Timers run before ready callbacks, so a producer that yields between events
        # has not had its turn yet: quiet means no event for `quiet`, not none since the
        # last look.
        now = time.perf_counter()
        idle = now - self._last_event
        if now < self._deadline and idle < self.quiet:
            self._timer = asyncio.get_running_loop().call_later(self.quiet - idle, self._look)
            return
        self._timer = None
        self._started = now
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.marked = False
            conn.kick()
        self.end(True)

    def fan_out(self, conns: Iterable[Connection], frame: str) -> int:
        """Send one encoded frame to ``conns``; returns how many there were."""
        at_once = self.begin()
        count = taken = 0
        for conn in conns:
            taken += conn.put(frame, at_once)
            count += 1
        self.end(at_once)
        self.metrics.sent_frames(frame, taken)  # one label lookup per event, not per delivery
        return count

    def fan_out_run_event(self, conns: Iterable[Connection], workflow_id: str, seq: int, frame: str) -> None:
        """Send event ``seq`` of a run to its subscribers that do not have it yet."""
        at_once = self.begin()
        taken = 0
        for conn in conns:
            taken += conn.deliver_run_event(workflow_id, seq, frame, at_once)
        self.end(at_once)
        self.metrics.sent_frames(frame, taken)


@dataclass(eq=False, slots=True)
class Connection:
    """One socket: identity, membership and a bounded outbound queue.

    Idle connections are the common case (thousands of watchers between events), so a
    connection holds no task while it has nothing to send: ``kick`` starts a writer that
    drains the queue and ends. Slots and the lazily filled sets keep it small.
    """

    client_id: str
    send_text: SendText
    close_socket: Close
    settings: Settings
    batching: bool = False
    # /ws/chat: rewrites each frame into the seed's shape (see protocol.chat_frame).
    shape: Callable[[str], str] | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    # workflow_id -> last seq this connection was given; fan-out skips seq <= it,
    # which makes replay-then-live free of gaps and duplicates.
    runs: dict[str, int] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)
    runs_in_flight: int = 0  # runs this connection started that have not ended
    # With auth on: the verified token, and the timer that closes the socket at its expiry.
    principal: Principal | None = None
    expiry: asyncio.TimerHandle | None = None
    flusher: Flusher | None = None
    metrics: Metrics = OFF
    # The fast path (see graphwire._direct): True when the frame was written directly.
    write_now: Callable[[str], bool] | None = None
    sent_frames: int = 0
    closed: bool = False
    marked: bool = False  # waiting for the flusher's next cycle
    # Created when a frame has to wait, dropped once drained: idle sockets hold no deque.
    _queue: deque[str] | None = None
    _queued_bytes: int = 0
    _writer: asyncio.Task[None] | None = None

    def enqueue(self, frame: str, urgent: bool = True) -> None:
        """Queue one encoded frame; never blocks. A full queue closes the connection.

        ``urgent`` frames (direct replies, fan-out on a calm loop) are written now; the
        others wait for the flusher's next flush so that they leave together.
        """
        if not self.closed:
            self.metrics.sent_frame(frame)
            self.put(frame, urgent)

    def put(self, frame: str, urgent: bool = True) -> bool:
        """``enqueue`` without counting (fan-out counts once per event); False if not taken."""
        if self.closed:
            return False
        if self.shape is not None:
            frame = self.shape(frame)
        queue = self._queue
        if queue is None:
            # Nothing waits and no send is in flight: an urgent frame goes straight out.
            if urgent and self._writer is None and self.write_now is not None:
                try:
                    if self.write_now(frame):
                        self.sent_frames += 1
                        return True
                except Exception:  # the socket went away; the reader notices and cleans up
                    self.closed = True
                    return False
            queue = self._queue = deque()
        queue.append(frame)
        self._queued_bytes += len(frame)
        if (
            len(queue) > self.settings.send_queue_max_messages
            or self._queued_bytes > self.settings.send_queue_max_bytes
        ):
            queue.clear()
            self._queued_bytes = 0
            self.closed = True
            # Found by whichever task sent the frame (a run's, another client's): the record names this client.
            who = {"client_id": self.client_id, "user": self.principal.sub if self.principal is not None else None}
            log.warning("client %s is too slow; closing with 1013", self.client_id, extra=who)
            self.metrics.slow_consumer_closes.labels("queue").inc()
            asyncio.get_running_loop().create_task(
                self._close(CloseCode.try_again_later, "slow consumer: reconnect and resume")
            )
            return False
        if urgent or self.flusher is None:
            self.kick()
        elif not self.marked:
            self.marked = True
            self.flusher.mark(self)
        return True

    def deliver_run_event(self, workflow_id: str, seq: int, frame: str, at_once: bool) -> bool:
        last = self.runs.get(workflow_id)
        if last is None or seq <= last:
            return False
        self.runs[workflow_id] = seq
        return self.put(frame, at_once)

    def kick(self) -> None:
        """Send what waits now; a task takes over only if the socket pushes back."""
        if self._writer is not None:
            return  # a suspended send is in flight; its task drains the rest
        try:
            while self._queue and not self.closed:
                frame = self._take()
                self.sent_frames += 1
                if self.write_now is not None and self.write_now(frame):
                    continue
                writer = _eager.start(self.send_text(frame))
                if writer is not None:
                    self._writer = asyncio.get_running_loop().create_task(self._write(writer))
                    return
        except Exception:  # the socket went away; the reader notices and cleans up
            self.closed = True
        if not self._queue:
            self._queue = None

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.close_socket(code, reason)

    def _take(self) -> str:
        queue = self._queue
        assert queue is not None  # callers check that frames wait
        # A few waiting frames go one by one (cheap, and simplest for plain clients); a
        # backlog, which is what fan-out under load builds, leaves as one batch frame.
        single = not self.batching or len(queue) < self.settings.batch_min_messages
        self.metrics.wrote_from_queue(self._queued_bytes)
        if single:
            frame = queue.popleft()
            self._queued_bytes -= len(frame)
            return frame
        parts: list[str] = []
        size = 0
        while queue and len(parts) < self.settings.batch_max_messages:
            if parts and size + len(queue[0]) > self.settings.batch_max_bytes:
                break
            frame = queue.popleft()
            parts.append(frame)
            size += len(frame)
        self._queued_bytes -= size
        if len(parts) == 1:
            return parts[0]
        self.metrics.batch_sent()
        return _BATCH_HEAD + ",".join(parts) + "]}"

    async def _write(self, in_flight: asyncio.Future[Any]) -> None:
        """Slow path: wait for the suspended send, then keep draining with awaits."""
        try:
            await in_flight
            # No await between the emptiness check and the end of the loop, so a frame
            # queued while a send is in flight is always picked up by this writer.
            while self._queue and not self.closed:
                await self.send_text(self._take())
                self.sent_frames += 1
        except asyncio.CancelledError:
            in_flight.cancel()
            raise
        except Exception:  # the socket went away; the reader notices and cleans up
            self.closed = True
        finally:
            self._writer = None
            if not self._queue:
                self._queue = None

    @property
    def subscriptions(self) -> int:
        """What ``max_subscriptions_per_connection`` counts: runs watched, topics, groups."""
        return len(self.runs) + len(self.topics) + len(self.groups)

    @property
    def drained(self) -> bool:
        """Nothing waits to be written (or the connection is gone)."""
        return self.closed or (self._queue is None and self._writer is None)

    def expire_at(self, principal: Principal) -> None:
        """Hold ``principal``; at its ``exp`` the socket closes with 4002 unless refreshed."""
        self.principal = principal
        if self.expiry is not None:
            self.expiry.cancel()
        self.expiry = asyncio.get_running_loop().call_later(max(0.0, principal.expires_at - time.time()), self._expired)

    def close_soon(self, code: int, reason: str) -> None:
        """Close with ``code`` (e.g. 1013: reconnect and resume); nothing more is sent."""
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().create_task(self._close(code, reason))

    def _expired(self) -> None:
        self.expiry = None
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().create_task(
                self._close(CloseCode.token_expired, "token expired: get a fresh token, reconnect and resume")
            )

    async def stop(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.closed = True
        writer = self._writer
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer


def ensure_room(conn: Connection, adding: int, reply_to: str | None) -> None:
    """Refuse, changing nothing, ``adding`` more subscriptions past the connection's limit."""
    limit = conn.settings.max_subscriptions_per_connection
    if conn.subscriptions + adding > limit:
        raise ProtocolError(
            ErrorCode.too_many_subscriptions,
            f"this connection watches {conn.subscriptions} runs, topics and groups; its limit is {limit}"
            " (max_subscriptions_per_connection)",
            None,
            reply_to,
        )


def alert_frame(group: str, message: str, level: str) -> str:
    return encode(SystemAlert(type="system_alert", group=group, message=message, level=level, timestamp=now()))


def _topic_message(topic: str, data: dict[str, Any]) -> str:
    return encode(TopicMessage(type="topic_message", topic=topic, data=data, timestamp=now()))


@dataclass(frozen=True, slots=True)
class Reach:
    """Who a broadcast or publish reached: this gateway's connections, and how many other gateways.

    ``gateways`` is ``None`` when the broker could not take the frame (Redis out of reach):
    only this gateway's members got it.
    """

    delivered: int
    gateways: int | None


class ConnectionManager:
    """Every live connection of this gateway process, by client id, group and topic."""

    def __init__(self, flush_quiet: float = 0.001, broker: Broker | None = None, metrics: Metrics = OFF) -> None:
        self.metrics = metrics
        self.flusher = Flusher(flush_quiet, metrics=metrics)
        self.broker: Broker = broker if broker is not None else LocalBroker()
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, set[Connection]] = {}
        self.topics: dict[str, set[Connection]] = {}
        self.started_at = time.time()
        self.total_messages = 0

    def add(self, conn: Connection) -> None:
        conn.flusher = self.flusher
        conn.metrics = self.metrics
        self.connections[conn.client_id] = conn

    async def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.client_id, None)
        for group in list(conn.groups):
            self.leave_group(conn, group)
        for topic in list(conn.topics):
            self.unsubscribe_topic(conn, topic)
        conn.runs.clear()
        await conn.stop()

    def join_group(self, conn: Connection, group: str) -> Ready:
        """Add ``conn`` to ``group``; the result says when broadcasts from any gateway reach it."""
        self.groups.setdefault(group, set()).add(conn)
        conn.groups.add(group)
        return self.broker.watch(GROUP + group)

    def leave_group(self, conn: Connection, group: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.groups[group]
                self.broker.unwatch(GROUP + group)
        conn.groups.discard(group)

    def subscribe_topic(self, conn: Connection, topic: str) -> Ready:
        """Subscribe ``conn`` to ``topic``; the result says when publishes from any gateway reach it."""
        self.topics.setdefault(topic, set()).add(conn)
        conn.topics.add(topic)
        return self.broker.watch(TOPIC + topic)

    def unsubscribe_topic(self, conn: Connection, topic: str) -> None:
        members = self.topics.get(topic)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.topics[topic]
                self.broker.unwatch(TOPIC + topic)
        conn.topics.discard(topic)

    def broadcast_to_group(self, group: str, message: str, level: str = "info") -> int:
        """Send ``system_alert`` to the members of ``group`` only, on every gateway.

        Returns how many of this gateway's connections got it; the other gateways get it
        through the broker, in order, without waiting (``broadcast_to_group_everywhere``
        waits and counts them).
        """
        return self._send(self.groups.get(group, ()), GROUP + group, lambda: alert_frame(group, message, level))

    def publish(self, topic: str, data: dict[str, Any]) -> int:
        """Send ``topic_message`` to the subscribers of ``topic`` on every gateway; as ``broadcast_to_group``."""
        return self._send(self.topics.get(topic, ()), TOPIC + topic, lambda: _topic_message(topic, data))

    async def broadcast_to_group_everywhere(self, group: str, frame: str) -> Reach:
        """``broadcast_to_group`` of a built ``frame`` (``alert_frame``), waiting (at most the
        broker's timeout) to count the other gateways."""
        return await self._everywhere(self.groups.get(group, ()), GROUP + group, frame)

    async def publish_everywhere(self, topic: str, data: dict[str, Any]) -> Reach:
        """``publish``, waiting (at most the broker's timeout) to count the other gateways."""
        return await self._everywhere(self.topics.get(topic, ()), TOPIC + topic, _topic_message(topic, data))

    def _send(self, members: Collection[Connection], channel: str, frame: Callable[[], str]) -> int:
        # The frame is only built when someone, here or on another gateway, may get it.
        if not members and not self.broker.shared:
            return 0
        text = frame()
        if self.broker.shared:
            self.broker.send(channel, text)
        return self.flusher.fan_out(members, text) if members else 0

    async def _everywhere(self, members: Collection[Connection], channel: str, frame: str) -> Reach:
        delivered = self.flusher.fan_out(members, frame) if members else 0
        if not self.broker.shared:
            return Reach(delivered, 0)
        try:
            return Reach(delivered, await self.broker.publish(channel, frame))
        except BrokerUnavailable:
            return Reach(delivered, None)

    def deliver_remote(self, channel: str, frame: str) -> None:
        """A frame another gateway broadcast on ``channel``: to this gateway's members of it."""
        if channel.startswith(GROUP):
            members = self.groups.get(channel[len(GROUP) :])
        elif channel.startswith(TOPIC):
            members = self.topics.get(channel[len(TOPIC) :])
        else:
            return
        if members:
            self.flusher.fan_out(members, frame)

    async def drain(self, budget: float) -> None:
        """Wait, at most ``budget`` seconds, until no connection has frames waiting."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if all(conn.drained for conn in self.connections.values()):
                return
            await asyncio.sleep(0.01)

    def seed_metrics(self) -> dict[str, Any]:
        """The seed's ``/ws/metrics`` fields."""
        return {
            "active_connections": len(self.connections),
            "total_messages": self.total_messages,
            "uptime": time.time() - self.started_at,
            "clients": sorted(self.connections),
        }
