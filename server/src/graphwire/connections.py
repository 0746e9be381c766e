"""Connections, their bounded send queues, groups and topic fan-out.

A frame reaches this module already serialised (once per event); fan-out only appends
the same ``str`` to each subscriber's queue. Each connection has one writer task that
drains its queue: when several frames wait, they leave as one spec'd ``batch`` frame,
built by joining the already-encoded frames, so a burst costs one system call per
connection instead of one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from graphwire._generated.messages import CloseCode, SystemAlert, TopicMessage
from graphwire.protocol import encode, now
from graphwire.settings import Settings

__all__ = ["Connection", "ConnectionManager", "SlowConsumer"]

log = logging.getLogger("graphwire.connections")

SendText = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]

_BATCH_HEAD = '{"type":"batch","messages":['


class SlowConsumer(Exception):
    """The connection's send queue is full; it is closed with 1013 and may resume."""


@dataclass(eq=False)
class Connection:
    """One socket: identity, membership and a bounded outbound queue."""

    client_id: str
    send_text: SendText
    close_socket: Close
    settings: Settings
    batching: bool = True
    claims: dict[str, Any] = field(default_factory=dict)
    groups: set[str] = field(default_factory=set)
    topics: set[str] = field(default_factory=set)
    # workflow_id -> last seq this connection was given; fan-out skips seq <= it,
    # which makes replay-then-live free of gaps and duplicates.
    runs: dict[str, int] = field(default_factory=dict)
    connected_at: float = field(default_factory=time.time)
    sent_frames: int = 0
    closed: bool = False
    _queue: deque[str] = field(default_factory=deque)
    _queued_bytes: int = 0
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    def enqueue(self, frame: str) -> None:
        """Queue one encoded frame; never blocks. A full queue closes the connection."""
        if self.closed:
            return
        self._queue.append(frame)
        self._queued_bytes += len(frame)
        if (
            len(self._queue) > self.settings.send_queue_max_messages
            or self._queued_bytes > self.settings.send_queue_max_bytes
        ):
            self._queue.clear()
            self._queued_bytes = 0
            self.closed = True
            log.warning("client %s is too slow; closing with 1013", self.client_id)
            asyncio.get_running_loop().create_task(
                self._close(CloseCode.try_again_later, "slow consumer: reconnect and resume")
            )
            return
        self._wakeup.set()

    def deliver_run_event(self, workflow_id: str, seq: int, frame: str) -> None:
        last = self.runs.get(workflow_id)
        if last is None or seq <= last:
            return
        self.runs[workflow_id] = seq
        self.enqueue(frame)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.close_socket(code, reason)

    def _take(self) -> str:
        queue = self._queue
        if not self.batching or len(queue) == 1:
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
        return _BATCH_HEAD + ",".join(parts) + "]}"

    async def _write_loop(self) -> None:
        try:
            while not self.closed:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue and not self.closed:
                    await self.send_text(self._take())
                    self.sent_frames += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # the socket went away; the reader notices and cleans up
            self.closed = True

    async def stop(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer


class ConnectionManager:
    """Every live connection of this gateway process, by client id, group and topic."""

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.groups: dict[str, set[Connection]] = {}
        self.topics: dict[str, set[Connection]] = {}
        self.started_at = time.time()
        self.total_messages = 0

    def add(self, conn: Connection) -> None:
        self.connections[conn.client_id] = conn

    async def remove(self, conn: Connection) -> None:
        self.connections.pop(conn.client_id, None)
        for group in list(conn.groups):
            self.leave_group(conn, group)
        for topic in list(conn.topics):
            self.unsubscribe_topic(conn, topic)
        conn.runs.clear()
        await conn.stop()

    def join_group(self, conn: Connection, group: str) -> None:
        self.groups.setdefault(group, set()).add(conn)
        conn.groups.add(group)

    def leave_group(self, conn: Connection, group: str) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.groups[group]
        conn.groups.discard(group)

    def subscribe_topic(self, conn: Connection, topic: str) -> None:
        self.topics.setdefault(topic, set()).add(conn)
        conn.topics.add(topic)

    def unsubscribe_topic(self, conn: Connection, topic: str) -> None:
        members = self.topics.get(topic)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.topics[topic]
        conn.topics.discard(topic)

    def broadcast_to_group(self, group: str, message: str, level: str = "info") -> int:
        """Send ``system_alert`` to the members of ``group`` only; returns how many got it."""
        members = self.groups.get(group, ())
        if not members:
            return 0
        frame = encode(SystemAlert(type="system_alert", group=group, message=message, level=level, timestamp=now()))
        for conn in members:
            conn.enqueue(frame)
        return len(members)

    def publish(self, topic: str, data: dict[str, Any]) -> int:
        """Send ``topic_message`` to the subscribers of ``topic``; returns how many got it."""
        members = self.topics.get(topic, ())
        if not members:
            return 0
        frame = encode(TopicMessage(type="topic_message", topic=topic, data=data, timestamp=now()))
        for conn in members:
            conn.enqueue(frame)
        return len(members)

    def metrics(self) -> dict[str, Any]:
        """The seed's ``/ws/metrics`` fields."""
        return {
            "active_connections": len(self.connections),
            "total_messages": self.total_messages,
            "uptime": time.time() - self.started_at,
            "clients": sorted(self.connections),
        }
