"""Runs shared through Redis (issue 13): Redis is the truth, pub/sub only a wake-up.

Keys of one run (one Redis; a Redis Cluster is not supported):

- ``graphwire:run:<id>``: a hash; ``epoch``, ``gateway`` (the owner), ``workflow``,
  ``owner`` (the ``sub`` that started it, or empty), ``last_seq``, ``state`` (the run's
  ``RunSnapshot`` JSON as of its last state change: status, open inputs, result, error);
- ``graphwire:run:<id>:log``: a Stream; entry ``<seq>-0`` holds the event's frame, byte
  for byte what the owner's watchers got; trimmed with ``MAXLEN ~ run_log_max_events``;
- ``graphwire:run:<id>:inbox``: a Stream of commands for the owner (answers, cancels)
  from clients on other gateways.

Channels: ``graphwire:run:<id>`` carries ``<gateway> <seq> <epoch> <frame>`` for each
event; ``graphwire:gateway:<id>`` carries ``inbox <run id>`` (a command waits) and
``reply <command id> <json>`` (its answer) to one gateway.

The owning gateway appends with one Lua script per run and batch (``APPEND``): it checks
the log's epoch, skips seqs already there (a retried batch writes nothing twice),
``XADD``s, sets the state and the time to live, and PUBLISHes each event on
``graphwire:run:<id>`` in the same step, so a gateway woken by a frame finds it in the
stream. A gateway watching the run from elsewhere repairs any gap from the stream by
``seq`` (a lost wake-up, a reconnect); the frames it delivers never have a hole.

A log Redis lost (a restart without persistence, a flush) is recreated by its owner from
the events it still holds, under a new epoch: a client resuming with the old epoch is
told (``recovered: false``) instead of getting a partial replay as if nothing happened.

Everything here waits at most ``timeout`` for Redis; writes that Redis did not take are
kept (they are the run's own bounded log) and retried, in order, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from graphwire.tasks import stop

__all__ = ["RedisRunStore", "RunRecord", "RunSource", "RunStore", "new_epoch"]

T = TypeVar("T")

log = logging.getLogger("graphwire.broker")

PREFIX = "graphwire:"
RUN = "run:"
GATEWAY = "gateway:"
# Runs written to Redis per pipeline round trip.
BATCH_RUNS = 256
# A run still in flight keeps its keys at least this long after its last event (an input
# may wait for hours); a finished one keeps them for run_retention_seconds.
LIVE_TTL_SECONDS = 86_400.0

# KEYS: meta, log, inbox. ARGV: epoch, create, maxlen, ttl_ms, channel, sender, state,
# gateway, workflow, owner, then seq/frame pairs. Returns the log's last seq, or -1 when
# the log is not this epoch's (lost, or recreated): the caller recreates it.
APPEND = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[2] == '1' then
  if epoch ~= ARGV[1] then
    local fence = redis.call('HGET', KEYS[1], 'fence')
    if fence and fence ~= ARGV[11] then
      return -2
    end
    redis.call('DEL', KEYS[1], KEYS[2])
    redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'gateway', ARGV[8], 'workflow', ARGV[9],
               'owner', ARGV[10], 'last_seq', '0', 'fence', ARGV[11])
    redis.call('SET', KEYS[4], ARGV[8] .. ' ' .. ARGV[11], 'PX', ARGV[12])
  end
elseif epoch ~= ARGV[1] then
  return -1
end
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[11] then
  return -2
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq'))
for i = 16, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], ARGV[i] .. '-0', 'f', ARGV[i + 1])
    redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. ARGV[i] .. ' ' .. ARGV[1] .. ' ' .. ARGV[i + 1])
    last = seq
  end
end
redis.call('HSET', KEYS[1], 'last_seq', last)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'state', ARGV[7])
end
if ARGV[14] ~= '' then
  redis.call('HSET', KEYS[1], 'checkpoint', ARGV[14])
end
if ARGV[13] == '1' then
  redis.call('HSET', KEYS[1], 'finished', '1')
  redis.call('SREM', KEYS[5], ARGV[15])
  if redis.call('GET', KEYS[4]) == ARGV[8] .. ' ' .. ARGV[11] then
    redis.call('DEL', KEYS[4])
  end
else
  redis.call('SADD', KEYS[5], ARGV[15])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return last
"""

# The owner's lease, renewed while its fence is the run's (KEYS: meta, lease; ARGV: value,
# fence, ms). 0: another gateway took the run; 2: the run is gone from Redis (the writer
# recreates it, lease included).
HEARTBEAT = """
local fence = redis.call('HGET', KEYS[1], 'fence')
if not fence then
  return 2
end
if fence ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return 1
"""

# Take over a run whose lease lapsed (KEYS: meta, lease; ARGV: gateway, ms): its new fence, or 0.
CLAIM = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('HGET', KEYS[1], 'finished') == '1' then
  return 0
end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. fence, 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'gateway', ARGV[1])
return fence
"""

# Runs in flight whose lease lapsed (KEYS: the live set; ARGV: key prefix, most to return);
# members whose run ended or is gone are dropped on the way.
ORPHANS = """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local meta = ARGV[1] .. id
  if redis.call('EXISTS', meta) == 0 or redis.call('HGET', meta, 'finished') == '1' then
    redis.call('SREM', KEYS[1], id)
  elseif redis.call('EXISTS', meta .. ':lease') == 0 then
    table.insert(out, id)
    if #out >= tonumber(ARGV[2]) then
      break
    end
  end
end
return out
"""

# Give a lease up (SIGTERM): another gateway may take the run at once.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


APPEND_SHA = hashlib.sha1(APPEND.encode(), usedforsecurity=False).hexdigest()  # what Redis names it


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


def meta_key(workflow_id: str) -> str:
    return f"{PREFIX}{RUN}{workflow_id}"


def log_key(workflow_id: str) -> str:
    return f"{PREFIX}{RUN}{workflow_id}:log"


def inbox_key(workflow_id: str) -> str:
    return f"{PREFIX}{RUN}{workflow_id}:inbox"


def lease_key(workflow_id: str) -> str:
    return f"{PREFIX}{RUN}{workflow_id}:lease"


# Every run in flight (with Redis): where gateways look for runs whose owner went away.
LIVE = f"{PREFIX}runs:live"
# Wake-ups for every gateway: "released" (a gateway handed its runs over on SIGTERM).
RUNS = "runs"


def start_key(idempotency_key: str) -> str:
    """Where a start's (user-scoped) ``idempotency_key`` is claimed; hashed, so no user id shows."""
    return f"{PREFIX}start:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


# Delete a claim only if it is still ours.
UNCLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RunSource(Protocol):
    """What the owner's store writes from: a run (``graphwire.runs.Run``)."""

    workflow_id: str
    workflow: str
    owner: str | None
    epoch: str
    last_seq: int
    # The seq of the run's last state change (status, open inputs, result, error).
    state_seq: int
    # This gateway's fencing token for the run: a write under an older one is refused.
    fence: int
    # The last checkpoint (JSON) and its version; "" before the first.
    checkpoint: str
    checkpoint_version: int

    @property
    def first_seq(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def events_after(self, seq: int) -> list[tuple[int, str]]: ...

    def state(self) -> str:
        """The run's snapshot as JSON."""
        ...


@dataclass(slots=True)
class RunRecord:
    """A run as Redis holds it: who owns it, its state and (some of) its log."""

    workflow_id: str
    epoch: str
    gateway: str
    workflow: str
    owner: str | None
    last_seq: int
    state: str | None
    events: list[tuple[int, str]] = field(default_factory=list)
    checkpoint: str | None = None
    fence: int = 0


@dataclass(slots=True)
class _Written:
    epoch: str
    seq: int
    state_seq: int
    checkpoint_version: int = 0


class RunStore(Protocol):
    """The broker's half of shared runs (``RedisBroker.runs``); ``None`` on the local broker."""

    # Batches of writes Redis did not take (graphwire_broker_errors_total{kind="run_write_failed"}).
    write_failures: int

    def changed(self, run: RunSource) -> None:
        """``run`` logged events or changed state: write them to Redis, in order, soon."""

    def forget(self, workflow_id: str) -> None:
        """The run is gone from this gateway's memory; whatever was not written yet is dropped."""

    async def read(self, workflow_id: str, after: int | None = None) -> RunRecord | None:
        """The run's record and its logged events after ``after`` (``None``: no events)."""
        ...

    async def command(self, workflow_id: str, gateway: str, body: dict[str, Any]) -> dict[str, Any]:
        """Hand a command to the run's owner (``gateway``); its answer, or ``TimeoutError``."""
        ...

    async def inbox(self, workflow_id: str, after: str) -> list[tuple[str, dict[str, Any]]]:
        """Commands for the owned run after the entry id ``after`` (``"0"``: all)."""
        ...

    def reply(self, gateway: str, command_id: str, body: dict[str, Any]) -> None:
        """Send a command's answer back to the gateway it came from."""

    def done_with(self, workflow_id: str, entry_id: str) -> None:
        """The owner applied the inbox entries up to ``entry_id``: drop them."""

    async def claim(self, key: str, value: str) -> str | None:
        """Claim a start's idempotency ``key`` with ``value``; ``None`` if now ours, else the value that holds it."""
        ...

    def unclaim(self, key: str, value: str) -> None:
        """Give up a claim (the start was refused after all), unless another holds it by now."""

    on_fenced: Callable[[str], None] | None
    on_inbox: Callable[[str], None] | None

    async def flush(self, run: RunSource, timeout: float) -> bool:
        """Wait (at most ``timeout``) until Redis has the run up to its last seq and checkpoint."""
        ...

    def hold(self, run: RunSource) -> None:
        """This gateway runs ``run``: renew its lease until it ends (or is let go)."""

    def let_go(self, workflow_id: str) -> None:
        """Stop renewing the run's lease."""

    async def orphans(self, most: int = 100) -> list[str]:
        """Runs in flight whose owner's lease lapsed."""
        ...

    async def claim_run(self, workflow_id: str) -> int:
        """Take the run over: its new fencing token, or 0."""
        ...

    async def release(self, runs: list[RunSource]) -> int:
        """Write what is left of ``runs``, give up their leases, wake the other gateways."""
        ...


class RedisRunStore:
    """The owner's ordered writer, and the reads and commands of any gateway, on one client."""

    def __init__(
        self,
        client: Callable[[], aioredis.Redis],
        gateway_id: str,
        timeout: float,
        send: Callable[[str, str], None],
        max_events: int,
        retention: float,
        backoff: Callable[[int], float],
        command_timeout: float,
        lease_seconds: float = 5.0,
    ) -> None:
        self._client = client
        self.gateway_id = gateway_id
        self.timeout = timeout
        self._send = send  # the broker's ordered pub/sub send (replies, inbox wake-ups)
        self.max_events = max_events
        self.retention = retention
        self._backoff = backoff
        self.command_timeout = command_timeout
        self.lease_ms = max(1, int(lease_seconds * 1000))
        # Runs this gateway holds the lease of; flushes waiting for Redis to have a run's events.
        self._held: dict[str, RunSource] = {}
        self._flushes: dict[str, list[tuple[int, int, asyncio.Future[None]]]] = {}
        # Called with a run's id when another gateway took it over (its writes are fenced off).
        self.on_fenced: Callable[[str], None] | None = None
        # Called with a run's id when a command waits in the inbox of a run this gateway holds.
        self.on_inbox: Callable[[str], None] | None = None
        self._dirty: dict[str, RunSource] = {}
        # Since when each dirty run has waited for Redis, and who is told how long it took
        # once written and published (graphwire_broker_publish_lag_seconds).
        self._dirty_at: dict[str, float] = {}
        self.on_published: Callable[[float], None] | None = None
        self._written: dict[str, _Written] = {}
        self._wake = asyncio.Event()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._trims: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._loaded = False  # APPEND is in Redis's script cache (emptied by a restart)
        self._failing = False
        # For operators (and the fault tests): batches Redis did not take, logs recreated.
        self.write_failures = 0
        self.recreated = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._writer())
        self._beat = loop.create_task(self._heartbeat())

    async def close(self) -> None:
        """Give what is still unwritten a short grace, then stop."""
        if not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._idle.wait()
        # The heartbeat stops last: leases stay held while the writer finishes.
        await stop([self._task])
        await stop([self._beat])
        self._task = self._beat = None
        for future in self._replies.values():
            if not future.done():
                future.set_exception(TimeoutError("the gateway is shutting down"))
        self._replies.clear()

    # -- the owner's writer ------------------------------------------------------------

    def changed(self, run: RunSource) -> None:
        self._dirty[run.workflow_id] = run
        self._dirty_at.setdefault(run.workflow_id, time.monotonic())
        if not self._wake.is_set():
            self._wake.set()
            self._idle.clear()

    def forget(self, workflow_id: str) -> None:
        self._dirty.pop(workflow_id, None)
        self._dirty_at.pop(workflow_id, None)
        self._written.pop(workflow_id, None)

    async def _writer(self) -> None:
        attempt = 0
        while True:
            if not self._dirty:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            self._idle.clear()
            batch = [self._dirty.pop(wid) for wid in list(self._dirty)[:BATCH_RUNS]]
            began = time.monotonic()
            since = [self._dirty_at.pop(run.workflow_id, began) for run in batch]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone, slow or refusing: keep the runs for the next try
                self.write_failures += 1
                for run, at in zip(batch, since, strict=True):
                    self._dirty.setdefault(run.workflow_id, run)
                    self._dirty_at[run.workflow_id] = min(at, self._dirty_at.get(run.workflow_id, at))
                if not self._failing:
                    self._failing = True
                    log.error(
                        "could not write run logs to Redis (%s: %s): kept in memory and retried; "
                        "watchers on other gateways wait meanwhile",
                        type(exc).__name__,
                        exc or "timed out",
                    )
                await asyncio.sleep(self._backoff(attempt))
                attempt += 1
                continue
            if self.on_published is not None:
                done = time.monotonic()
                for at in since:
                    self.on_published(done - at)
            if self._failing:
                self._failing = False
                log.warning("writing run logs to Redis again")
            attempt = 0

    async def _write(self, batch: list[RunSource]) -> None:
        if not self._loaded:
            async with asyncio.timeout(self.timeout):
                await self._client().script_load(APPEND)
            self._loaded = True
        pipe = self._client().pipeline(transaction=False)
        sent: list[tuple[RunSource, _Written]] = []
        for run in batch:
            wid = run.workflow_id
            written = self._written.get(wid)
            create = written is None or written.epoch != run.epoch
            if not create and written is not None and run.first_seq > written.seq + 1:
                # Redis lacks events this gateway no longer holds: the log cannot be completed,
                # only recreated from what is here, under a new epoch.
                run.epoch = new_epoch()
                self.recreated += 1
                create = True
            events = run.events_after(0 if create or written is None else written.seq)
            state_seq, version = run.state_seq, run.checkpoint_version
            fresh = create or written is None
            state = run.state() if fresh or written is None or state_seq > written.state_seq else ""
            checkpoint = run.checkpoint if fresh or written is None or version > written.checkpoint_version else ""
            finished = run.finished
            ttl = self.retention if finished else max(self.retention, LIVE_TTL_SECONDS)
            args: list[Any] = [
                run.epoch,
                "1" if create else "0",
                self.max_events,
                max(1, int(ttl * 1000)),
                f"{PREFIX}{RUN}{wid}",
                self.gateway_id,
                state,
                self.gateway_id,
                run.workflow,
                run.owner or "",
                run.fence,
                self.lease_ms,
                "1" if finished else "0",
                checkpoint,
                wid,
            ]
            for seq, frame in events:
                args += (seq, frame)
            keys = (meta_key(wid), log_key(wid), inbox_key(wid), lease_key(wid), LIVE)
            pipe.evalsha(APPEND_SHA, len(keys), *keys, *args)
            sent.append((run, _Written(run.epoch, run.last_seq, state_seq, version)))
        async with asyncio.timeout(self.timeout):
            results: list[Any] = await pipe.execute(raise_on_error=False)
        for (run, attempt), result in zip(sent, results, strict=True):
            wid = run.workflow_id
            if isinstance(result, NoScriptError):
                self._loaded = False  # Redis restarted: load APPEND again, then write
                self._dirty.setdefault(wid, run)
                continue
            if isinstance(result, Exception):
                log.error("writing run %s to Redis failed: %s", wid, result)
                self._dirty.setdefault(wid, run)
                continue
            if int(result) == -2:
                # Another gateway holds the run now (our lease lapsed): stop, write nothing more.
                log.warning("run %s was taken over by another gateway; it stops here", wid)
                self.forget(wid)
                if self.on_fenced is not None:
                    self.on_fenced(wid)
                continue
            if int(result) < 0:
                # Redis lost the log (or it is another epoch's): recreate it, under a new epoch.
                log.warning("the log of run %s is gone from Redis; recreating it from this gateway's memory", wid)
                self.recreated += 1
                run.epoch = new_epoch()
                self._written.pop(wid, None)
                self._dirty.setdefault(wid, run)
                continue
            attempt.seq = int(result)
            self._written[wid] = attempt
            self._settle_flushes(wid, attempt)
            if run.last_seq > attempt.seq or attempt.state_seq != run.state_seq:
                self._dirty.setdefault(wid, run)  # changed while this batch was on its way
            elif attempt.checkpoint_version != run.checkpoint_version:
                self._dirty.setdefault(wid, run)
            elif run.finished:
                self._written.pop(wid, None)  # all written, with its final time to live
                self._held.pop(wid, None)

    async def flush(self, run: RunSource, timeout: float) -> bool:
        """Wait (at most ``timeout``) until Redis has the run up to its last seq and checkpoint."""
        written = self._written.get(run.workflow_id)
        seq, version = run.last_seq, run.checkpoint_version
        if written is not None and written.seq >= seq and written.checkpoint_version >= version:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.setdefault(run.workflow_id, []).append((seq, version, future))
        self.changed(run)
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False

    def _settle_flushes(self, workflow_id: str, written: _Written) -> None:
        waiting = self._flushes.get(workflow_id)
        if not waiting:
            return
        left = []
        for seq, version, future in waiting:
            if written.seq >= seq and written.checkpoint_version >= version:
                if not future.done():
                    future.set_result(None)
            else:
                left.append((seq, version, future))
        if left:
            self._flushes[workflow_id] = left
        else:
            del self._flushes[workflow_id]

    # -- leases: who runs a run ------------------------------------------------------------

    def hold(self, run: RunSource) -> None:
        """This gateway runs ``run``: renew its lease until it ends (or is let go)."""
        self._held[run.workflow_id] = run

    def let_go(self, workflow_id: str) -> None:
        self._held.pop(workflow_id, None)

    async def _heartbeat(self) -> None:
        """Renew every held lease each third of its time; a run another gateway took is stopped."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            held = [run for run in self._held.values() if not run.finished]
            if not held:
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    pipe = self._client().pipeline(transaction=False)
                    for run in held:
                        wid = run.workflow_id
                        value = f"{self.gateway_id} {run.fence}"
                        pipe.eval(HEARTBEAT, 2, meta_key(wid), lease_key(wid), value, run.fence, self.lease_ms)
                    answers: list[Any] = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis out: the leases may lapse; the fence keeps writes safe
                log.warning("could not renew %d run leases in Redis: %s", len(held), exc)
                continue
            for run, answer in zip(held, answers, strict=True):
                if answer == 0:
                    log.warning("run %s: another gateway holds its lease now; it stops here", run.workflow_id)
                    self.forget(run.workflow_id)
                    if self.on_fenced is not None:
                        self.on_fenced(run.workflow_id)

    async def orphans(self, most: int = 100) -> list[str]:
        """Runs in flight whose owner's lease lapsed (it died, or was cut off for longer than a lease)."""
        found: Any = await self._once_more(lambda: self._client().eval(ORPHANS, 1, LIVE, f"{PREFIX}{RUN}", most))
        return [item.decode() for item in found]

    async def claim_run(self, workflow_id: str) -> int:
        """Take the run over: its new fencing token, or 0 if another gateway was first (or it ended)."""
        fence: Any = await self._once_more(
            lambda: self._client().eval(
                CLAIM, 2, meta_key(workflow_id), lease_key(workflow_id), self.gateway_id, self.lease_ms
            )
        )
        return int(fence)

    async def release(self, runs: list[RunSource]) -> int:
        """SIGTERM: write what is left of ``runs``, give up their leases, wake the other gateways."""
        for run in runs:
            self._held.pop(run.workflow_id, None)
        deadline = asyncio.get_running_loop().time() + self.timeout
        for run in runs:
            await self.flush(run, max(0.05, deadline - asyncio.get_running_loop().time()))
        pipe = self._client().pipeline(transaction=False)
        for run in runs:
            pipe.eval(RELEASE, 1, lease_key(run.workflow_id), f"{self.gateway_id} {run.fence}")
        released = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                released = sum(int(n) for n in await pipe.execute())
        self._send(RUNS, "released")
        return released

    # -- any gateway ---------------------------------------------------------------------

    async def _once_more(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, and once more if the pooled connection was dead (Redis restarted, ``CLIENT KILL``).

        Only for what may safely run twice: reads, and an inbox entry (a second copy of a
        command is refused by the owner like any repeat, and answered under the same id).
        """
        async with asyncio.timeout(self.timeout):
            try:
                return await call()
            except (RedisConnectionError, OSError, RuntimeError):
                # RuntimeError: asyncio's "the handler is closed" on a transport Redis reset.
                return await call()

    async def read(self, workflow_id: str, after: int | None = None) -> RunRecord | None:
        def transaction() -> Awaitable[list[Any]]:
            pipe = self._client().pipeline(transaction=True)
            pipe.hgetall(meta_key(workflow_id))
            if after is not None:
                pipe.xrange(log_key(workflow_id), f"({after}-0" if after > 0 else "-", "+")
            return pipe.execute()

        replies = await self._once_more(transaction)
        meta: dict[bytes, bytes] = replies[0]
        if not meta or b"epoch" not in meta:
            return None
        owner = meta.get(b"owner", b"").decode()
        state = meta.get(b"state")
        record = RunRecord(
            workflow_id,
            meta[b"epoch"].decode(),
            meta.get(b"gateway", b"").decode(),
            meta.get(b"workflow", b"").decode(),
            owner or None,
            int(meta.get(b"last_seq", b"0")),
            state.decode() if state is not None else None,
        )
        checkpoint = meta.get(b"checkpoint")
        record.checkpoint = checkpoint.decode() if checkpoint is not None else None
        record.fence = int(meta.get(b"fence", b"0"))
        if after is not None:
            record.events = [
                (int(entry_id.split(b"-", 1)[0]), fields[b"f"].decode()) for entry_id, fields in replies[1]
            ]
        return record

    async def command(self, workflow_id: str, gateway: str, body: dict[str, Any]) -> dict[str, Any]:
        command_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[command_id] = future
        entry = orjson.dumps({**body, "gateway": self.gateway_id, "command_id": command_id})
        try:
            await self._once_more(lambda: self._client().xadd(inbox_key(workflow_id), {"c": entry}))
            # The owner reads its inbox when woken, when its pub/sub reconnects, and when it
            # takes a run over. Who owns the run is read again after the XADD: a gateway that
            # took the run over before it is woken here; one that takes it over after it
            # finds the entry when it reads the inbox.
            now_owner: Any = await self._once_more(lambda: self._client().hget(meta_key(workflow_id), "gateway"))
            owners = {gateway, now_owner.decode() if now_owner else gateway}
            for owner in owners:
                if owner == self.gateway_id:  # this gateway took the run over meanwhile
                    if self.on_inbox is not None:
                        self.on_inbox(workflow_id)
                else:
                    self._send(GATEWAY + owner, f"inbox {workflow_id}")
            async with asyncio.timeout(self.command_timeout):
                return await future
        finally:
            self._replies.pop(command_id, None)

    def answered(self, payload: str) -> None:
        """``<command_id> <json>`` from an owner: the answer to one of our commands."""
        command_id, _, body = payload.partition(" ")
        future = self._replies.get(command_id)
        if future is not None and not future.done():
            future.set_result(orjson.loads(body))

    async def inbox(self, workflow_id: str, after: str) -> list[tuple[str, dict[str, Any]]]:
        first = f"({after}" if after != "0" else "-"
        entries: Any = await self._once_more(lambda: self._client().xrange(inbox_key(workflow_id), first, "+"))
        return [(entry_id.decode(), orjson.loads(fields[b"c"])) for entry_id, fields in entries]

    def reply(self, gateway: str, command_id: str, body: dict[str, Any]) -> None:
        if gateway == self.gateway_id:  # our own command, sent before this gateway took the run over
            future = self._replies.get(command_id)
            if future is not None and not future.done():
                future.set_result(body)
            return
        self._send(GATEWAY + gateway, f"reply {command_id} {orjson.dumps(body).decode()}")

    async def claim(self, key: str, value: str) -> str | None:
        name = start_key(key)
        ttl = max(1, int(max(self.retention, LIVE_TTL_SECONDS) * 1000))

        def transaction() -> Awaitable[list[Any]]:
            pipe = self._client().pipeline(transaction=True)
            pipe.set(name, value, nx=True, px=ttl)
            pipe.get(name)
            return pipe.execute()

        _set, held = await self._once_more(transaction)
        # Ours if the SET took, or if a first try took it and only its reply was lost.
        if held is None or held.decode() == value:
            return None
        return str(held.decode())

    def unclaim(self, key: str, value: str) -> None:
        self._later(self._client().eval(UNCLAIM, 1, start_key(key), value))

    def _later(self, call: Awaitable[Any]) -> None:
        """A write nobody waits for (trimming, giving up a claim); a failure is only a leftover key."""

        async def bounded() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout):
                    await call

        task = asyncio.get_running_loop().create_task(bounded())
        self._trims.add(task)
        task.add_done_callback(self._trims.discard)

    def done_with(self, workflow_id: str, entry_id: str) -> None:
        # MINID drops every entry below the next id: those up to entry_id.
        ms, _, n = entry_id.partition("-")
        self._later(self._client().xtrim(inbox_key(workflow_id), minid=f"{ms}-{int(n or 0) + 1}"))
