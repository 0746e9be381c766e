/**
 * Reconnect backoff: exponential, capped, with full jitter.
 *
 * "Full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015): the delay
 * before retry `n` is uniform in `[0, min(cap, base · 2ⁿ)]`, so many clients dropped at
 * once do not come back in lockstep. The same function as the Python SDK's `backoff_delay`.
 * A server that refused the handshake with a `Retry-After` (HTTP 503 when the gateway is
 * full, RFC 9110 §10.2.3) sets a floor: the delay is then `floorMs` plus the jitter, never
 * earlier than asked, still spread out.
 */

/** How `GraphwireClient` retries `connect()` and reconnects after a drop. */
export interface ReconnectPolicy {
  /** Consecutive failed connection attempts before giving up (at least 1). Default 8. */
  maxAttempts: number;
  /** Milliseconds; the ceiling of the n-th delay is `baseDelayMs · 2ⁿ`. Default 250. */
  baseDelayMs: number;
  /** Milliseconds; no delay is longer. Default 5000. */
  maxDelayMs: number;
}

export const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = Object.freeze({
  maxAttempts: 8,
  baseDelayMs: 250,
  maxDelayMs: 5000,
});

/**
 * Milliseconds to wait before retry number `attempt` (0 for the first retry).
 * `random` returns a number in `[0, 1)`; inject it to make the delay deterministic.
 * `floorMs` (the server's `Retry-After`) is added to the jittered delay.
 */
export function backoffDelay(
  attempt: number,
  policy: Pick<ReconnectPolicy, "baseDelayMs" | "maxDelayMs">,
  random: () => number = Math.random,
  floorMs = 0,
): number {
  if (!Number.isInteger(attempt) || attempt < 0) {
    throw new RangeError("attempt must be an integer >= 0");
  }
  // 2 ** attempt overflows past ~1024; the cap is reached long before.
  const ceiling = attempt >= 64 ? policy.maxDelayMs : Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
  return Math.max(floorMs, 0) + random() * ceiling;
}

/** A complete policy from the user's partial one; throws on impossible values. */
export function reconnectPolicy(options: Partial<ReconnectPolicy> = {}): ReconnectPolicy {
  const policy = { ...DEFAULT_RECONNECT, ...options };
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 1) {
    throw new RangeError("reconnect.maxAttempts must be an integer >= 1");
  }
  if (!(policy.baseDelayMs >= 0) || !(policy.maxDelayMs >= 0)) {
    throw new RangeError("reconnect delays must be >= 0");
  }
  return policy;
}

/**
 * Milliseconds to wait before sending a command the server refused with `rate_limited`
 * again: its `retry_after` (`retryAfterMs`), never less, plus up to a quarter of it (at
 * most a second) of jitter, so that commands refused together do not return together.
 */
export function rateLimitDelay(retryAfterMs: number, random: () => number = Math.random): number {
  const floor = Math.max(retryAfterMs, 0);
  return floor + random() * Math.min(floor / 4, 1000);
}
