"""The offline mailbox: what is addressed to a user while none of their connections is open.

A user is the token's ``sub`` with auth on, else a client id (a client takes its id over
with ``?client_id=``). Three things are addressed to a user:

- the ``system_alert``s of groups they joined and did not leave (``POST /api/broadcast``),
  kept only while they are away;
- the ``input_request``s of their runs, kept only while they are away;
- ``direct_message``s (``POST /api/send``), always kept, and delivered at once to a user
  who is connected.

Each kept message gets the next ``mail_seq`` of its user and waits until the user
acknowledges it (``ack_mail {up_to}``), at most ``mailbox_ttl_seconds`` and at most
``mailbox_max_messages`` per user (the oldest go first). Waiting mail is delivered after
``connected`` on every new connection of the user until it is acknowledged.

``LocalMailbox`` keeps this in memory for one gateway; ``RedisMailbox`` keeps it in Redis
for many, where "away" means no connection on any gateway still alive (a gateway's
presence lapses with its ``graphwire:alive:<gateway>`` key when it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from graphwire.tasks import stop

log = logging.getLogger(__name__)

PREFIX = "graphwire:"
MAIL = "mail"  # the broker channel on which direct mail reaches the user's other gateways
# In memory: at most this many users' mailboxes (the least recently written go first),
# so addresses nobody comes back for cannot grow the gateway without bound.
MAX_LOCAL_BOXES = 100_000


class MailboxUnavailable(Exception):
    """Redis did not answer in time: the mailbox could not be read or written."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One kept message: its ``mail_seq``, when it was kept (epoch seconds) and its JSON."""

    mail_seq: int
    sent_at: float
    message: str


class Mailbox(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def opened(self, user: str) -> list[Letter]:
        """A connection of ``user`` opened: they are here; the mail waiting for them, in order."""
        ...

    async def closed(self, user: str) -> None:
        """A connection of ``user`` closed."""

    async def joined(self, user: str, group: str) -> None:
        """``user`` joined ``group``: its alerts are kept for them while they are away."""

    async def left(self, user: str, group: str) -> None:
        """``user`` left ``group`` on purpose (a closed socket is not leaving)."""

    async def to_group(self, group: str, message: str) -> int:
        """Keep ``message`` for each member of ``group`` who is away; how many got it."""
        ...

    async def to_user(self, user: str, message: str, if_away: bool, key: str | None = None) -> Letter | None:
        """Keep ``message`` for ``user`` (only if away, with ``if_away``); ``None`` if not kept.

        A ``key`` already used for this user keeps nothing (one request, one mail).
        """
        ...

    async def ack(self, user: str, up_to: int) -> None:
        """``user`` has every message up to ``up_to``: they are not delivered again."""


@dataclass(slots=True)
class _Box:
    next_seq: int = 1
    letters: deque[Letter] = field(default_factory=deque)
    keys: dict[str, float] = field(default_factory=dict)  # key -> when it was used
    touched: float = 0.0


class LocalMailbox:
    """One gateway's mailbox, in memory; it ends with the process (as in-memory runs do)."""

    def __init__(self, max_messages: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_messages = max_messages
        self.ttl = ttl
        self._clock = clock
        self._online: dict[str, int] = {}
        self._boxes: dict[str, _Box] = {}
        self._members: dict[str, dict[str, float]] = {}  # group -> user -> when they joined

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _box(self, user: str, create: bool) -> _Box | None:
        box = self._boxes.get(user)
        now = self._clock()
        if box is not None and now - box.touched > self.ttl:
            # Nothing written for a whole TTL: every letter and key has expired. The box (and
            # its mail_seq) starts again; a client may only skip mail it has not acked yet.
            del self._boxes[user]
            box = None
        if box is None:
            if not create:
                return None
            box = self._boxes[user] = _Box()
            while len(self._boxes) > MAX_LOCAL_BOXES:
                del self._boxes[next(iter(self._boxes))]
        oldest = now - self.ttl
        while box.letters and box.letters[0].sent_at < oldest:
            box.letters.popleft()
        return box

    async def opened(self, user: str) -> list[Letter]:
        self._online[user] = self._online.get(user, 0) + 1
        box = self._box(user, create=False)
        return list(box.letters) if box is not None else []

    async def closed(self, user: str) -> None:
        left = self._online.get(user, 0) - 1
        if left > 0:
            self._online[user] = left
        else:
            self._online.pop(user, None)

    async def joined(self, user: str, group: str) -> None:
        members = self._members.setdefault(group, {})
        members.pop(user, None)
        members[user] = self._clock()

    async def left(self, user: str, group: str) -> None:
        members = self._members.get(group)
        if members is not None:
            members.pop(user, None)
            if not members:
                del self._members[group]

    async def to_group(self, group: str, message: str) -> int:
        members = self._members.get(group)
        if not members:
            return 0
        oldest = self._clock() - self.ttl
        for user in [u for u, at in members.items() if at < oldest]:
            del members[user]  # joined a TTL ago and never came back: forgotten
        kept = 0
        for user in list(members):
            if await self.to_user(user, message, if_away=True) is not None:
                kept += 1
        return kept

    async def to_user(self, user: str, message: str, if_away: bool, key: str | None = None) -> Letter | None:
        if if_away and self._online.get(user):
            return None
        box = self._box(user, create=True)
        assert box is not None
        now = self._clock()
        if key is not None:
            if key in box.keys:
                return None
            box.keys[key] = now
        letter = Letter(box.next_seq, now, message)
        box.next_seq += 1
        box.letters.append(letter)
        while len(box.letters) > self.max_messages:
            box.letters.popleft()
        box.touched = now
        self._boxes[user] = self._boxes.pop(user)  # most recently written last
        return letter

    async def ack(self, user: str, up_to: int) -> None:
        self.drop(user, up_to)

    def drop(self, user: str, up_to: int) -> None:
        """``ack``, for callers that cannot wait (nothing here does)."""
        box = self._box(user, create=False)
        if box is None:
            return
        while box.letters and box.letters[0].mail_seq <= up_to:
            box.letters.popleft()


# KEYS: the user's stream, counter, keys hash and presence hash. ARGV: message, now (ms),
# ttl (ms), max messages, if_away ('1'/'0'), key ('' for none), the alive-key prefix.
# The new mail_seq, or 0 when nothing was kept.
POST = """
if ARGV[5] == '1' then
  local here = redis.call('HGETALL', KEYS[4])
  for i = 1, #here, 2 do
    if tonumber(here[i + 1]) > 0 and redis.call('EXISTS', ARGV[7] .. here[i]) == 1 then
      return 0
    end
  end
end
if ARGV[6] ~= '' then
  if redis.call('HSETNX', KEYS[3], ARGV[6], ARGV[2]) == 0 then
    return 0
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[4], seq .. '-0', 'm', ARGV[1], 't', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return seq
"""

# The same for each member of a group (KEYS: the group's members set; ARGV: message, now,
# ttl, max, the alive-key prefix, the key prefix). How many members got the message.
POST_GROUP = """
local kept = 0
for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local base = ARGV[6] .. 'mail:' .. user
  local away = true
  local here = redis.call('HGETALL', ARGV[6] .. 'presence:' .. user)
  for i = 1, #here, 2 do
    if tonumber(here[i + 1]) > 0 and redis.call('EXISTS', ARGV[5] .. here[i]) == 1 then
      away = false
    end
  end
  if away then
    local seq = redis.call('INCR', base .. ':seq')
    redis.call('XADD', base, 'MAXLEN', ARGV[4], seq .. '-0', 'm', ARGV[1], 't', ARGV[2])
    redis.call('PEXPIRE', base, ARGV[3])
    redis.call('PEXPIRE', base .. ':seq', ARGV[3])
    kept = kept + 1
  end
end
return kept
"""

# KEYS: presence hash; ARGV: gateway, +1 or -1, ttl (ms).
PRESENCE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return n
"""


class RedisMailbox:
    """Mailboxes in Redis, shared by every gateway.

    ``graphwire:mail:<user>`` is a stream with entry ids ``<mail_seq>-0`` (fields ``m``, the
    message, and ``t``, when it was kept in ms), ``:seq`` its counter and ``:keys`` the keys
    used; ``graphwire:presence:<user>`` counts the user's connections per gateway, and only
    gateways whose ``graphwire:alive:<gateway>`` key lives count; ``graphwire:members:<group>``
    holds who joined a group. Every key expires after the mailbox TTL without a write.
    """

    def __init__(
        self,
        client: Callable[[], aioredis.Redis],
        gateway_id: str,
        timeout: float,
        max_messages: int,
        ttl: float,
        alive_seconds: float,
    ) -> None:
        self._client = client
        self.gateway_id = gateway_id
        self.timeout = timeout
        self.max_messages = max_messages
        self.ttl = ttl
        self.ttl_ms = max(1, int(ttl * 1000))
        self.alive_ms = max(1, int(alive_seconds * 1000))
        self._alive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._alive = asyncio.get_running_loop().create_task(self._stay_alive())

    async def close(self) -> None:
        await stop([self._alive])
        self._alive = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await self._client().delete(f"{PREFIX}alive:{self.gateway_id}")

    async def _stay_alive(self) -> None:
        """This gateway's connections count as presence while this key lives."""
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._client().set(f"{PREFIX}alive:{self.gateway_id}", "1", px=self.alive_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis out: our users may look away meanwhile (mail is kept)
                log.debug("could not renew this gateway's presence in Redis: %s", exc)
            await asyncio.sleep(self.alive_ms / 3000)

    async def _call(self, what: Callable[[aioredis.Redis], Any]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await what(self._client())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise MailboxUnavailable(f"{type(exc).__name__}: {exc or 'timed out'}") from exc

    def _now_ms(self) -> int:
        return int(time.time() * 1000)

    async def opened(self, user: str) -> list[Letter]:
        # Here first, then read: mail kept before is read; after, it is not kept (or is pushed).
        await self._call(lambda r: r.eval(PRESENCE, 1, f"{PREFIX}presence:{user}", self.gateway_id, 1, self.ttl_ms))
        entries: list[Any] = await self._call(lambda r: r.xrange(f"{PREFIX}mail:{user}"))
        oldest = self._now_ms() - self.ttl_ms
        letters = []
        for entry_id, fields in entries:
            at = int(fields[b"t"])
            if at >= oldest:
                seq = int(entry_id.split(b"-")[0])
                letters.append(Letter(seq, at / 1000, fields[b"m"].decode()))
        return letters

    async def closed(self, user: str) -> None:
        await self._call(lambda r: r.eval(PRESENCE, 1, f"{PREFIX}presence:{user}", self.gateway_id, -1, self.ttl_ms))

    async def joined(self, user: str, group: str) -> None:
        key = f"{PREFIX}members:{group}"

        async def add(r: aioredis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.sadd(key, user)
            pipe.pexpire(key, self.ttl_ms)
            await pipe.execute()

        await self._call(add)

    async def left(self, user: str, group: str) -> None:
        await self._call(lambda r: r.srem(f"{PREFIX}members:{group}", user))

    async def to_group(self, group: str, message: str) -> int:
        kept: Any = await self._call(
            lambda r: r.eval(
                POST_GROUP,
                1,
                f"{PREFIX}members:{group}",
                message,
                self._now_ms(),
                self.ttl_ms,
                self.max_messages,
                f"{PREFIX}alive:",
                PREFIX,
            )
        )
        return int(kept)

    async def to_user(self, user: str, message: str, if_away: bool, key: str | None = None) -> Letter | None:
        now = self._now_ms()
        base = f"{PREFIX}mail:{user}"
        seq: Any = await self._call(
            lambda r: r.eval(
                POST,
                4,
                base,
                f"{base}:seq",
                f"{base}:keys",
                f"{PREFIX}presence:{user}",
                message,
                now,
                self.ttl_ms,
                self.max_messages,
                "1" if if_away else "0",
                key or "",
                f"{PREFIX}alive:",
            )
        )
        return Letter(int(seq), now / 1000, message) if int(seq) else None

    async def ack(self, user: str, up_to: int) -> None:
        await self._call(lambda r: r.xtrim(f"{PREFIX}mail:{user}", minid=f"{up_to + 1}-0"))
