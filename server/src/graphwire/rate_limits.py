"""Commands per connection, per user and per kind, with the ``limits`` package.

Moving windows in memory (the Redis issue moves the storage to Redis, so a user's limit
holds across gateways). A command is first counted against the abuse bound, the
per-connection limits times ``rate_limit_close_after``, whether it is then refused or not:
a client that keeps sending far past its limit is closed with 1008. Then it must fit every
limit that applies to it; only then is it counted against them, so refused commands do
not use up the window.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from graphwire.settings import Settings

__all__ = ["ABUSE", "CommandLimits"]

ABUSE = -1.0
"""``CommandLimits.check``'s answer for a connection to close with 1008."""


def _scaled(item: RateLimitItem, factor: float) -> RateLimitItem:
    return type(item)(max(1, int(item.amount * factor)), item.multiples, "ABUSE")


class CommandLimits:
    def __init__(self, settings: Settings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self.per_connection = parse_many(settings.rate_limit_per_connection)
        self.per_user = parse_many(settings.rate_limit_per_user)
        self.per_command = {kind: parse_many(spec) for kind, spec in settings.rate_limit_per_command.items()}
        self.abuse = [_scaled(item, settings.rate_limit_close_after) for item in self.per_connection]

    def check(self, client_id: str, user: str | None, command: str) -> float | None:
        """``None``: go ahead (and counted). Seconds to wait when over a limit, or ``ABUSE``."""
        limiter = self._limiter
        for item in self.abuse:
            if not limiter.hit(item, "c", client_id):
                return ABUSE
        applicable: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (item, ("c", client_id)) for item in self.per_connection
        ]
        applicable += [(item, ("k", client_id, command)) for item in self.per_command.get(command, ())]
        if user is not None:
            applicable += [(item, ("u", user)) for item in self.per_user]
        over = [(item, keys) for item, keys in applicable if not limiter.test(item, *keys)]
        if over:
            now = time.time()
            return max(max(0.0, limiter.get_window_stats(item, *keys).reset_time - now) for item, keys in over)
        for item, keys in applicable:
            limiter.hit(item, *keys)
        return None
