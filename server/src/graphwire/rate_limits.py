"""Commands per connection, per user and per kind, with the ``limits`` package.

Moving windows in memory; with ``redis_url``, the per-user windows are also kept in Redis
(``graphwire.rate_limits_redis``), so a user's limit holds across gateways. A command is
first counted against the abuse bound, the per-connection limits times
``rate_limit_close_after``, whether it is then refused or not: a client that keeps sending
far past its limit is closed with 1008. Then it must fit every limit that applies to it;
only then is it counted against them, so refused commands do not use up the window.

The windows of one socket (per connection, per command, the abuse bound) are checked
here first, synchronously: a command they refuse never costs a Redis round trip. Only a
user's windows go to Redis. This gateway counts its own share of them too, and decides
with that alone while Redis fails (fail open: a per-gateway limit, never none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from graphwire.rate_limits_redis import RedisUserLimits, SharedLimitsUnavailable
from graphwire.settings import Settings

__all__ = ["ABUSE", "CommandLimits"]

ABUSE = -1.0
"""``CommandLimits.check``'s answer for a connection to close with 1008."""

# A window and the identifiers of its counter: ("c", client_id), ("k", client_id, kind), ("u", user).
Window = tuple[RateLimitItem, tuple[str, ...]]


def _scaled(item: RateLimitItem, factor: float) -> RateLimitItem:
    return type(item)(max(1, int(item.amount * factor)), item.multiples, "ABUSE")


class CommandLimits:
    def __init__(self, settings: Settings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.per_connection = parse_many(settings.rate_limit_per_connection)
        self.per_user = parse_many(settings.rate_limit_per_user)
        self.per_command = {kind: parse_many(spec) for kind, spec in settings.rate_limit_per_command.items()}
        self.abuse = [_scaled(item, settings.rate_limit_close_after) for item in self.per_connection]
        # Every gateway of the deployment counts a user's commands in Redis.
        self.shared: RedisUserLimits | None = None
        if settings.redis_url is not None and self.per_user:
            self.shared = RedisUserLimits(settings.redis_url, settings.redis_timeout)

    async def check(self, client_id: str, user: str | None, command: str) -> float | None:
        """``None``: go ahead (and counted). Seconds to wait when over a limit, or ``ABUSE``.

        Waits for Redis (at most ``redis_timeout``) only for a user's shared windows.
        """
        limiter = self._limiter
        for item in self.abuse:
            if not limiter.hit(item, "c", client_id):
                return ABUSE
        applicable: list[Window] = [(item, ("c", client_id)) for item in self.per_connection]
        applicable += [(item, ("k", client_id, command)) for item in self.per_command.get(command, ())]
        own: list[Window] = [(item, ("u", user)) for item in self.per_user] if user is not None else []
        shared = self.shared if self.shared is not None and self.shared.available else None
        wait = self._wait(applicable if shared is not None else applicable + own)
        if wait is not None:
            return wait
        if shared is not None and user is not None:
            try:
                wait = await shared.check(self.per_user, user)
            except SharedLimitsUnavailable:
                wait = self._wait(own)  # Redis failed just now: this gateway's share decides
            if wait is not None:
                return wait
        # The await above does not let another command in on this connection's windows:
        # a connection's commands are checked one after the other.
        for item, keys in applicable + own:
            limiter.hit(item, *keys)
        return None

    def _wait(self, windows: Sequence[Window]) -> float | None:
        """``None`` if a command fits every window; else seconds until it would."""
        limiter = self._limiter
        over = [(item, keys) for item, keys in windows if not limiter.test(item, *keys)]
        if not over:
            return None
        now = time.time()
        return max(max(0.0, limiter.get_window_stats(item, *keys).reset_time - now) for item, keys in over)

    async def close(self) -> None:
        """Close the connections to Redis, if any; never raises."""
        if self.shared is not None:
            await self.shared.close()
