"""The broker: what the gateways of one deployment share, behind one seam (DESIGN.md, Broker).

``LocalBroker`` is the embedded default (``make run``): the gateway is the whole
deployment, so nothing leaves it. ``RedisBroker`` (``GRAPHWIRE_REDIS_URL``) joins any
number of gateways through one Redis:

- a gateway SUBSCRIBEs, on one pub/sub connection, to ``graphwire:<channel>`` only while
  one of its own clients is in that group or topic, or watches that run (``watch`` on
  the first, ``unwatch`` after the last), and always to its own ``gateway:<id>``;
- a broadcast is fanned out to this gateway's members by the caller and handed here once,
  already encoded: it is PUBLISHed behind the sender's gateway id, each other gateway
  fans the same string out to its members, and the sender skips its own echo;
- groups and topics are live-only: a gateway cut from Redis misses what was published
  meanwhile, as a client that was offline does. The pub/sub reader reconnects with
  capped, jittered backoff and subscribes again to every channel still watched
  (``on_watching`` tells the gateway each time Redis confirms one, so runs can catch up
  from their streams); a publish that Redis does not take within ``redis_timeout``
  raises ``BrokerUnavailable`` and is counted, never hangs the caller;
- runs (logs as Streams, state, inboxes) are ``runs``, a ``graphwire.run_store.RunStore``
  on the same Redis clients.

Channels are opaque names here; the connection manager owns ``group:<name>`` and
``topic:<name>``, the run manager ``run:<id>`` and ``gateway:<id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from graphwire.mailbox import MAIL, Mailbox, RedisMailbox
from graphwire.run_store import GATEWAY, RUNS, RedisRunStore, RunStore
from graphwire.settings import Settings
from graphwire.tasks import cancelled, stop

__all__ = [
    "Broker",
    "BrokerUnavailable",
    "LocalBroker",
    "OnFrame",
    "RedisBroker",
    "backoff_delay",
    "create_broker",
]

log = logging.getLogger("graphwire.broker")

# A frame another gateway sent on a channel this gateway watches: (channel, frame).
OnFrame = Callable[[str, str], None]
# Redis confirmed a subscription (the first time, and again after each reconnect): (channel).
OnWatching = Callable[[str], None]

PREFIX = "graphwire:"
# The pub/sub connection quiet this long gets a PING; no answer within the timeout: reconnect.
HEALTH_INTERVAL = 5.0
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
# Frames waiting for Redis; past it (Redis far behind or gone) new ones are dropped and counted.
OUTBOX_MAX = 10_000
PIPELINE_MAX = 512
# A publisher connection idle this long is PINGed first: one Redis dropped (a restart, an
# idle timeout) is replaced then, instead of failing the broadcast. A PUBLISH is never retried.
IDLE_CHECK = 0.1
SUBSCRIBE_CHUNK = 1_000


class BrokerUnavailable(Exception):
    """Redis did not take a publish within ``redis_timeout``: other gateways did not get it."""


def backoff_delay(
    attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before reconnect ``attempt`` (0 first): full jitter, uniform in [0, min(cap, base·2^attempt)].

    The jitter keeps the gateways of a deployment from reconnecting in lockstep after a
    Redis restart; the cap bounds how long a gateway stays cut off once Redis is back.
    """
    return rand() * min(cap, base * 2.0 ** min(attempt, 32))


class Broker(Protocol):
    """The one seam between a gateway and the rest of its deployment.

    The connection manager calls it; nothing above it touches Redis. Synchronous methods
    never block (the router is synchronous); only ``publish`` waits, and at most the
    broker's timeout.
    """

    gateway_id: str
    # True when other gateways may exist: broadcasts must be handed on.
    shared: bool

    @property
    def runs(self) -> RunStore | None:
        """Runs in Redis (logs, state, inboxes); ``None`` when this gateway is the whole deployment."""
        ...

    @property
    def mailbox(self) -> Mailbox | None:
        """Mailboxes in Redis; ``None`` when this gateway keeps its own in memory."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the deployment is reachable now (always, for the local broker)."""
        ...

    async def start(self, on_frame: OnFrame, on_watching: OnWatching | None = None) -> None:
        """Begin; ``on_frame`` is called with each frame another gateway sent on a watched channel.

        ``on_watching`` is called each time Redis confirms a subscription: after it, what
        was published on the channel while it was not confirmed must be read from Redis.
        """

    async def close(self) -> None:
        """Stop, after this gateway's connections are closed; frames still waiting get a short grace."""

    def watch(self, channel: str) -> asyncio.Future[None] | None:
        """This gateway needs ``channel``; ``None`` if it already gets it, else a future done once it does.

        The future is never an error: it is also done when the broker gives up waiting
        (Redis slow or gone; the subscription is made when Redis is back).
        """

    def unwatch(self, channel: str) -> None:
        """This gateway's last member of ``channel`` left."""

    def send(self, channel: str, frame: str) -> None:
        """Hand ``frame`` to the other gateways watching ``channel``, in order, without waiting."""

    async def publish(self, channel: str, frame: str) -> int:
        """Like ``send``, and wait: how many other gateways got it. Raises ``BrokerUnavailable``."""
        ...


class LocalBroker:
    """The embedded default: this gateway is the whole deployment, so nothing leaves it."""

    shared = False
    runs: RunStore | None = None
    mailbox: Mailbox | None = None  # the gateway keeps its own (graphwire.mailbox.LocalMailbox)

    def __init__(self) -> None:
        self.gateway_id = "local"

    @property
    def connected(self) -> bool:
        return True

    async def start(self, on_frame: OnFrame, on_watching: OnWatching | None = None) -> None:
        pass

    async def close(self) -> None:
        pass

    def watch(self, channel: str) -> asyncio.Future[None] | None:
        return None

    def unwatch(self, channel: str) -> None:
        pass

    def send(self, channel: str, frame: str) -> None:
        pass

    async def publish(self, channel: str, frame: str) -> int:
        return 0


def create_broker(settings: Settings) -> Broker:
    """``RedisBroker`` when ``redis_url`` is set, else the in-process ``LocalBroker``."""
    if settings.redis_url is None:
        return LocalBroker()
    return RedisBroker(
        settings.redis_url,
        timeout=settings.redis_timeout,
        run_log_max_events=settings.run_log_max_events,
        run_retention=settings.run_retention_seconds,
        run_lease_seconds=settings.run_lease_seconds,
        mailbox_max_messages=settings.mailbox_max_messages,
        mailbox_ttl=settings.mailbox_ttl_seconds,
    )


def redacted(url: str) -> str:
    """``url`` without its user and password, for logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(slots=True)
class _Outgoing:
    channel: bytes
    payload: bytes
    queued_at: float
    reply: asyncio.Future[int] | None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RedisBroker:
    """Gateways joined by Redis pub/sub: one subscriber connection, one ordered publisher.

    Bookkeeping of the subscriber connection, per channel (names without ``PREFIX``):
    ``_wanted`` is what this gateway's clients watch; ``_requested`` what SUBSCRIBE was
    sent for on the current connection; ``_confirmed`` what Redis confirmed (and no
    UNSUBSCRIBE was sent since); ``_unconfirmed`` counts (UN)SUBSCRIBEs still unanswered,
    so a channel left and joined again is confirmed by its last SUBSCRIBE, not its first.
    """

    shared = True

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        gateway_id: str | None = None,
        health_interval: float = HEALTH_INTERVAL,
        run_log_max_events: int = 100_000,
        run_retention: float = 3600.0,
        run_lease_seconds: float = 5.0,
        mailbox_max_messages: int = 100,
        mailbox_ttl: float = 86_400.0,
    ) -> None:
        self.url = url
        self.where = redacted(url)
        self.gateway_id = gateway_id or f"gw_{uuid.uuid4().hex[:12]}"
        self.timeout = timeout
        self.health_interval = health_interval
        # For operators (and, next, /ready): outages seen, frames Redis did not take.
        self.outages = 0
        self.publish_failures = 0
        # Told each published frame's lag (queued to acknowledged): graphwire_broker_publish_lag_seconds.
        self.on_published: Callable[[float], None] | None = None
        self._connected = False
        self._down_since: float | None = None
        self._publish_failing = False
        self._published_at = float("-inf")
        self._on_frame: OnFrame | None = None
        self._on_watching: OnWatching | None = None
        self._client: aioredis.Redis | None = None
        self._sub_client: aioredis.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wanted: set[str] = set()
        self._requested: set[str] = set()
        self._confirmed: set[str] = set()
        self._unconfirmed: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()
        self._up = asyncio.Event()
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._drained = asyncio.Event()  # nothing waits for Redis, nothing is on its way
        self._drained.set()
        self._sender = self.gateway_id.encode()
        self._sender_head = self._sender + b" "
        # Commands and their answers for this gateway: a channel of its own, always watched.
        self.inbox_channel = GATEWAY + self.gateway_id
        self._runs = RedisRunStore(
            self._pub,
            self.gateway_id,
            timeout,
            self.send,
            run_log_max_events,
            run_retention,
            backoff_delay,
            # The owner may be reconnecting to Redis itself: a few of its backoff periods.
            command_timeout=2 * timeout + 2 * BACKOFF_CAP,
            lease_seconds=run_lease_seconds,
        )
        # A gateway's presence lives as long as a run lease would without a heartbeat.
        self._mailbox = RedisMailbox(
            self._pub, self.gateway_id, timeout, mailbox_max_messages, mailbox_ttl, run_lease_seconds
        )

    @property
    def runs(self) -> RunStore | None:
        return self._runs

    @property
    def mailbox(self) -> Mailbox | None:
        return self._mailbox

    def _pub(self) -> aioredis.Redis:
        assert self._client is not None, "the broker is not started"
        return self._client

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def subscribed(self) -> frozenset[str]:
        """The channels Redis confirmed this gateway is subscribed to."""
        return frozenset(self._confirmed)

    async def start(self, on_frame: OnFrame, on_watching: OnWatching | None = None) -> None:
        """Connect; waits for Redis at most ``timeout``, then keeps trying in the background."""
        self._on_frame = on_frame
        self._on_watching = on_watching
        self._wanted.add(self.inbox_channel)
        self._wanted.add(RUNS)  # "released": runs handed over by a gateway that stops
        self._wanted.add(MAIL)  # direct mail for users connected here
        # Two clients, named for CLIENT LIST: the pub/sub connection, and the publishers' pool.
        self._sub_client = self._connect("sub")
        self._client = self._connect("pub")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._subscriber()), loop.create_task(self._publisher())]
        self._runs.start()
        await self._mailbox.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._up.wait()

    def _connect(self, role: str) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # Reconnecting is ours (the subscriber's backoff); a PUBLISH is never retried,
            # so a frame is never sent twice.
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            client_name=f"graphwire-{self.gateway_id}-{role}",
        )

    async def close(self) -> None:
        await self._runs.close()
        await self._mailbox.close()
        if self._connected and not self._drained.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._drained.wait()
        await stop(self._tasks)
        self._tasks = []
        while self._outbox:
            self._fail(self._outbox.popleft(), "the gateway is shutting down")
        self._end_session()
        for client in (self._sub_client, self._client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._sub_client = self._client = None

    # -- subscriptions ---------------------------------------------------------------

    def watch(self, channel: str) -> asyncio.Future[None] | None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._changed.set()
        # Still subscribed (an unwatch the writer has not sent yet is simply undone), or
        # Redis is out: membership is local until the subscriber is back.
        if channel in self._confirmed or not self._connected:
            return None
        waiter = self._waiters.get(channel)
        if waiter is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiters[channel] = loop.create_future()
            loop.call_later(self.timeout, _settle, waiter)
        return waiter

    def unwatch(self, channel: str) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._changed.set()
        waiter = self._waiters.pop(channel, None)
        if waiter is not None:
            _settle(waiter)

    async def _subscriber(self) -> None:
        """One pub/sub connection at a time; a new one after any failure, with backoff."""
        attempt = 0
        while True:
            assert self._sub_client is not None
            pubsub = self._sub_client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                if cancelled():
                    raise asyncio.CancelledError
                self._began()
                attempt = 0
                await self._session(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke the connection: Redis, the network, a timeout
                if cancelled():  # the error may be a cancel redis-py turned into another one
                    raise asyncio.CancelledError from exc
                self._lost(exc)
            finally:
                self._end_session()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff_delay(attempt))
            attempt += 1

    async def _session(self, pubsub: PubSub) -> None:
        """Read and (un)subscribe side by side until either fails."""
        tasks = {asyncio.create_task(self._read(pubsub)), asyncio.create_task(self._write(pubsub))}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await stop(tasks)
        raise ConnectionError("the pub/sub session ended")  # pragma: no cover - both loops only raise

    async def _write(self, pubsub: PubSub) -> None:
        """Make Redis's subscriptions follow ``_wanted``."""
        while True:
            self._changed.clear()
            add = sorted(self._wanted - self._requested)
            drop = sorted(self._requested - self._wanted)
            for channel in add:
                self._requested.add(channel)
                self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
            for channel in drop:
                self._requested.discard(channel)
                self._confirmed.discard(channel)
                self._unconfirmed[channel] = self._unconfirmed.get(channel, 0) + 1
            for i in range(0, len(add), SUBSCRIBE_CHUNK):
                await pubsub.subscribe(*(PREFIX + c for c in add[i : i + SUBSCRIBE_CHUNK]))
            for i in range(0, len(drop), SUBSCRIBE_CHUNK):
                await pubsub.unsubscribe(*(PREFIX + c for c in drop[i : i + SUBSCRIBE_CHUNK]))
            if not self._changed.is_set():
                await self._changed.wait()

    async def _read(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.timeout if pinged else self.health_interval)
            if message is None:
                if pinged:
                    raise ConnectionError(f"no answer to PING within {self.timeout} s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False  # anything at all shows the connection is alive
            kind = message["type"]
            if kind == "message":
                self._arrived(message["channel"], message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                self._answered(message["channel"])

    def _arrived(self, channel: bytes, data: bytes) -> None:
        sender, _, frame = data.partition(b" ")
        if sender == self._sender or self._on_frame is None:
            return  # our own broadcast: its local members already have it
        name = channel.decode()[len(PREFIX) :]
        if name not in self._wanted:
            return  # left while the frame was on its way
        if name == self.inbox_channel and frame.startswith(b"reply "):
            self._runs.answered(frame[6:].decode())
            return
        try:
            self._on_frame(name, frame.decode())
        except Exception:
            log.exception("delivering a frame from channel %r failed", name)

    def _answered(self, channel: bytes) -> None:
        name = channel.decode()[len(PREFIX) :]
        left = self._unconfirmed.get(name, 0) - 1
        if left > 0:
            self._unconfirmed[name] = left
            return
        self._unconfirmed.pop(name, None)
        if name in self._requested:
            self._confirmed.add(name)
            waiter = self._waiters.pop(name, None)
            if waiter is not None:
                _settle(waiter)
            if self._on_watching is not None:
                try:
                    self._on_watching(name)
                except Exception:
                    log.exception("catching up on channel %r failed", name)

    def _began(self) -> None:
        self._connected = True
        self._up.set()
        self._changed.set()  # subscribe again to everything still wanted
        if self._down_since is not None:
            down = asyncio.get_running_loop().time() - self._down_since
            log.info(
                "Redis at %s is back after %.1f s; subscribing again to %d channels",
                self.where,
                down,
                len(self._wanted),
            )
        self._down_since = None

    def _lost(self, exc: BaseException) -> None:
        if self._down_since is not None:
            log.debug("Redis at %s still unreachable: %s", self.where, exc)
            return
        self._down_since = asyncio.get_running_loop().time()
        self.outages += 1
        log.warning(
            "Redis at %s is unreachable (%s: %s): groups and topics reach only this gateway's clients, "
            "and what other gateways publish meanwhile is lost for them; reconnecting",
            self.where,
            type(exc).__name__,
            exc,
        )

    def _end_session(self) -> None:
        self._connected = False
        self._up.clear()
        self._requested.clear()
        self._confirmed.clear()
        self._unconfirmed.clear()
        for waiter in self._waiters.values():
            _settle(waiter)
        self._waiters.clear()

    # -- publishing ------------------------------------------------------------------

    def send(self, channel: str, frame: str) -> None:
        self._queue(channel, frame, None)

    async def publish(self, channel: str, frame: str) -> int:
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue(channel, frame, reply)
        receivers = await reply
        # PUBLISH counts subscribed connections, ours included when we watch the channel.
        return max(0, receivers - (channel in self._confirmed))

    def _queue(self, channel: str, frame: str, reply: asyncio.Future[int] | None) -> None:
        item = _Outgoing(
            (PREFIX + channel).encode(),
            self._sender_head + frame.encode(),
            asyncio.get_running_loop().time(),
            reply,
        )
        if not self._tasks:
            self._fail(item, "the broker is not running")
        elif len(self._outbox) >= OUTBOX_MAX:
            self._fail(item, f"{OUTBOX_MAX} frames already wait for Redis")
        else:
            self._outbox.append(item)
            self._outbox_ready.set()
            self._drained.clear()

    def _fail(self, item: _Outgoing, why: str) -> None:
        self.publish_failures += 1
        if item.reply is not None and not item.reply.done():
            item.reply.set_exception(BrokerUnavailable(f"Redis at {self.where} did not take the frame: {why}"))

    async def _publisher(self) -> None:
        """PUBLISH what waits, in order, pipelined; each batch bounded by ``timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._outbox:
                self._drained.set()
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            batch = [self._outbox.popleft() for _ in range(min(PIPELINE_MAX, len(self._outbox)))]
            oldest = loop.time() - self.timeout
            fresh: list[_Outgoing] = []
            for item in batch:
                if item.queued_at < oldest:
                    self._fail(item, f"it waited over {self.timeout} s")
                else:
                    fresh.append(item)
            if fresh:
                await self._publish_batch(fresh)

    async def _fresh_connection(self) -> None:
        """PING on the pooled connection; a dead one is dropped by redis-py, and a new one PINGed."""
        assert self._client is not None
        try:
            await self._client.ping()
        except (RedisConnectionError, RedisTimeoutError):
            await self._client.ping()

    async def _publish_batch(self, batch: list[_Outgoing]) -> None:
        assert self._client is not None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                if loop.time() - self._published_at > IDLE_CHECK:
                    await self._fresh_connection()
                pipe = self._client.pipeline(transaction=False)
                for item in batch:
                    pipe.publish(item.channel, item.payload)
                counts: list[Any] = await pipe.execute()
        except asyncio.CancelledError:
            for item in batch:
                self._fail(item, "the gateway is shutting down")
            raise
        except Exception as exc:  # Redis gone, slow or refusing: the caller must not hang
            for item in batch:
                self._fail(item, f"{type(exc).__name__}: {exc}")
            if not self._publish_failing:
                self._publish_failing = True
                log.error(
                    "could not publish to Redis at %s (%s: %s): other gateways miss these broadcasts; "
                    "failures are counted until it takes them again",
                    self.where,
                    type(exc).__name__,
                    exc or "timed out",
                )
            return
        self._published_at = loop.time()
        if self._publish_failing:
            self._publish_failing = False
            log.warning("publishing to Redis at %s again (%d frames failed so far)", self.where, self.publish_failures)
        if self.on_published is not None:
            done = loop.time()
            for item in batch:
                self.on_published(done - item.queued_at)
        for item, count in zip(batch, counts, strict=True):
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(int(count))
