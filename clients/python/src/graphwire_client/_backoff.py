"""Reconnect backoff: exponential, capped, with full jitter.

"Full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015): the delay
before retry ``n`` is uniform in ``[0, min(cap, base · 2ⁿ)]``, so many clients dropped at
once do not come back in lockstep. A server that refused the handshake with a
``Retry-After`` (HTTP 503 when the gateway is full, RFC 9110 §10.2.3) sets a floor: the
delay is then ``floor`` plus the jitter, never earlier than asked, still spread out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ReconnectPolicy", "backoff_delay"]


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random, floor: float = 0.0
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry).

    ``rand`` returns a float in ``[0, 1)``; inject it to make the delay deterministic.
    ``floor`` (seconds, the server's ``Retry-After``) is added to the jittered delay.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # 2 ** attempt overflows a float past ~1024; the cap is reached long before.
    ceiling = cap if attempt >= 64 else min(cap, base * 2.0**attempt)
    return max(floor, 0.0) + rand() * ceiling


@dataclass(frozen=True)
class ReconnectPolicy:
    """How ``GraphwireClient`` reconnects after a drop.

    The client waits ``delay(n)`` before its n-th consecutive attempt (n = 0 right after a
    drop; the very first connection does not wait); after a handshake refused with a
    ``Retry-After`` (HTTP 503: the gateway is at ``max_connections``) it waits that long
    plus ``delay(n)``. After ``max_attempts`` consecutive failed attempts it gives up:
    pending commands and open runs raise ``ConnectionLost``.
    """

    max_attempts: int = 8
    """Consecutive failed connection attempts before giving up (at least 1)."""
    base_delay: float = 0.25
    """Seconds; the ceiling of the n-th delay is ``base_delay · 2ⁿ``."""
    max_delay: float = 5.0
    """Seconds; no delay is longer."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")

    def delay(self, attempt: int, rand: Callable[[], float] = random.random, floor: float = 0.0) -> float:
        """The full-jitter delay before retry ``attempt`` (0-based), above ``floor`` (a ``Retry-After``)."""
        return backoff_delay(attempt, self.base_delay, self.max_delay, rand, floor)
