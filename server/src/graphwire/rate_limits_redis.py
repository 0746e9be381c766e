"""Per-user rate limits shared by every gateway of a deployment, in Redis (issue 13).

With ``redis_url`` set, a user's moving windows (``rate_limit_per_user``) are kept in Redis
through the ``limits`` package's async ``RedisStorage`` on ``redis.asyncio`` (its
``redispy`` implementation), under ``graphwire:limits:``, so a user with connections on
three gateways has one budget, not three. The per-connection, per-command and abuse
windows stay in ``CommandLimits``' memory: they are about one socket, which one gateway
serves.

Redis slow or gone never holds a command up (fail open): each check is bounded by
``redis_timeout``; after a failure, ``check`` raises ``SharedLimitsUnavailable`` at once,
without asking Redis, and ``CommandLimits`` decides with this gateway's own per-user
windows, until a PING every ``RETRY_INTERVAL`` shows Redis answering again. One warning
when that begins, one when it ends; ``failures`` and ``outages`` count them.

The windows are timed by each gateway's clock (``limits`` sends ``time.time()`` to its
scripts): gateways on hosts whose clocks disagree shift each other's windows by as much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from graphwire.broker import redacted
from graphwire.tasks import stop

__all__ = ["KEY_PREFIX", "RETRY_INTERVAL", "RedisUserLimits", "SharedLimitsUnavailable"]

log = logging.getLogger("graphwire.rate_limits")

KEY_PREFIX = "graphwire:limits"
# While Redis fails, how often it is PINGed to find out whether it is back.
RETRY_INTERVAL = 0.5
# Connections to Redis for the checks; a command waiting for one is still bounded by the timeout.
POOL_SIZE = 64


class SharedLimitsUnavailable(Exception):
    """Redis failed, timed out, or has not answered since: decide with this gateway's own windows."""


class RedisUserLimits:
    """A user's moving windows, counted in Redis by every gateway."""

    def __init__(self, url: str, timeout: float) -> None:
        self.where = redacted(url)
        self.timeout = timeout
        # For metrics: checks that failed or timed out, and outages (each begins with one).
        self.failures = 0
        self.outages = 0
        # redis-py parses the URL (limits' own parser wants a port, redis-py does not).
        # One immediate retry replaces a pooled connection Redis dropped while idle (a
        # restart, CLIENT KILL); at worst it counts one command twice.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            client_name="graphwire-limits",
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        options: dict[str, Any] = {"connection_pool": self._pool}
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix=KEY_PREFIX, **options)
        self._limiter = MovingWindowRateLimiter(storage)
        self._failing_since: float | None = None
        self._probe: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        """Whether Redis is believed to answer; when not, ``check`` would raise at once."""
        return self._failing_since is None

    async def check(self, items: Sequence[RateLimitItem], user: str) -> float | None:
        """``None``: ``user``'s command fits every window and is counted in each; else seconds to wait.

        Raises ``SharedLimitsUnavailable`` when Redis fails or takes over ``timeout``, and
        at once while it has not answered since.
        """
        if self._failing_since is not None:
            raise SharedLimitsUnavailable(f"Redis at {self.where} is not answering")
        try:
            async with asyncio.timeout(self.timeout):
                return await self._check(items, ("u", user))
        except Exception as exc:  # Redis gone, slow or refusing: the command must not wait
            self._failed(exc)
            raise SharedLimitsUnavailable(f"Redis at {self.where}: {type(exc).__name__}") from exc

    async def _check(self, items: Sequence[RateLimitItem], keys: tuple[str, str]) -> float | None:
        limiter = self._limiter
        if len(items) > 1:
            # Counted only if it fits them all (CommandLimits' rule); with a single window,
            # the hit below is that test, done atomically by Redis.
            over = [item for item in items if not await limiter.test(item, *keys)]
            if over:
                return await self._wait(over, keys)
        for item in items:
            if not await limiter.hit(item, *keys):
                # Filled since the test, by the user's commands on other gateways: refused,
                # though the windows hit before this one keep their entry.
                return await self._wait([item], keys)
        return None

    async def _wait(self, over: Sequence[RateLimitItem], keys: tuple[str, str]) -> float:
        now = time.time()
        waits = [max(0.0, (await self._limiter.get_window_stats(item, *keys)).reset_time - now) for item in over]
        return max(waits)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self._failing_since is not None:
            return  # another check in flight when Redis went: the same outage
        loop = asyncio.get_running_loop()
        self._failing_since = loop.time()
        self.outages += 1
        log.warning(
            "Redis at %s failed a rate-limit check (%s: %s): each gateway counts per-user limits "
            "on its own until Redis answers again",
            self.where,
            type(exc).__name__,
            str(exc) or f"no answer within {self.timeout} s",
        )
        self._probe = loop.create_task(self._until_back())

    async def _until_back(self) -> None:
        while True:
            await asyncio.sleep(RETRY_INTERVAL)
            try:
                async with asyncio.timeout(self.timeout):
                    await self._client.ping()
                break
            except Exception as exc:
                log.debug("Redis at %s still not answering rate-limit checks: %r", self.where, exc)
        assert self._failing_since is not None
        down = asyncio.get_running_loop().time() - self._failing_since
        self._failing_since = None
        self._probe = None
        log.warning(
            "Redis at %s is back after %.1f s: per-user rate limits are shared by all gateways again "
            "(%d checks failed so far)",
            self.where,
            down,
            self.failures,
        )

    async def close(self) -> None:
        """Stop probing and close the connections; never raises."""
        if self._probe is not None:
            await stop([self._probe])
            self._probe = None
        with contextlib.suppress(Exception):
            await self._pool.aclose()
