"""Tokens: where the client gets one, when it renews it, and how long one lives.

The gateway takes a JWT as ``Authorization: Bearer <token>`` at the handshake (never the
``?token=`` query here: URLs land in proxies' logs), says in ``connected.expires_at``
when it expires, and takes a fresh one in band with ``refresh_token``. The client asks
its ``get_token`` at every connect, and ``keep_fresh`` (one task per connection) asks it
``refresh_delay`` seconds before expiry. The timing and the reading of ``exp`` are pure;
``keep_fresh`` sees the client only through the two callables it is given.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

__all__ = ["MIN_REFRESH_LEAD", "TokenProvider", "call_provider", "keep_fresh", "refresh_delay", "token_expiry"]

log = logging.getLogger("graphwire_client")

TokenProvider = Callable[[], str | Awaitable[str]]
"""``get_token``: returns a token, or an awaitable of one (an ``async def``)."""

MIN_REFRESH_LEAD = 1.0
"""Seconds: with less than this left, the client stops refreshing in band and lets the
server close with 4002 (it then reconnects with a token from ``get_token``)."""


def refresh_delay(remaining: float) -> float | None:
    """Seconds from now until the client refreshes a token that expires in ``remaining`` seconds.

    At 80 % of the remaining lifetime or 30 s before expiry, whichever is earlier, but
    never before half of it: a one-hour token is renewed after 48 min, a two-minute one
    30 s before it ends, a five-second one after 2.5 s (not at once, in a loop). A failed
    refresh asks again with what is then left, so the retries come at halving intervals.
    ``None`` when less than ``MIN_REFRESH_LEAD`` is left: too late to refresh in band.
    """
    if remaining < MIN_REFRESH_LEAD:
        return None
    return max(remaining / 2, min(remaining * 0.8, remaining - 30.0))


def token_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT (RFC 7519 §4.1.4), read without verifying it; ``None`` if absent.

    The client reads its own token only to know when to renew it; the gateway verifies.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


async def call_provider(provider: TokenProvider) -> str:
    """Call ``get_token`` (awaiting it if it returns an awaitable); it must give a non-empty str."""
    token = provider()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str) or not token:
        # The type only: the value may be a token after all (bytes), and this gets logged.
        raise TypeError(f"get_token must return a non-empty str, not {type(token).__name__}")
    return token


async def keep_fresh(
    provider: TokenProvider,
    expires_at: datetime,
    send: Callable[[str], Awaitable[None]],
    usable: Callable[[], bool],
    *,
    timeout: float,
) -> None:
    """Renew a connection's token before ``expires_at``, again and again, until cancelled.

    ``send`` presents a token (``refresh_token``) and returns once the gateway acked it;
    ``usable`` says whether the client still runs. A failure (``provider`` raised or took
    longer than ``timeout``, the gateway refused the token) is logged, never the token,
    and tried again with what is then left; too close to the end it stops, the gateway
    closes with 4002, and the client reconnects with a fresh token. The client cancels
    this task when the connection ends.
    """
    expiry: datetime | None = expires_at
    while expiry is not None:
        delay = refresh_delay((expiry - datetime.now(UTC)).total_seconds())
        if delay is None:
            log.info("the token expires before it could be refreshed; reconnecting after the 4002")
            return
        await asyncio.sleep(delay)
        try:
            async with asyncio.timeout(timeout):
                token = await call_provider(provider)
            await send(token)
        except Exception as exc:
            if not usable():
                return
            log.warning("refreshing the token failed, trying again: %s", exc)
            continue
        expiry = token_expiry(token)
        if expiry is None:
            log.info("the fresh token has no exp claim; the next one comes at the 4002")
