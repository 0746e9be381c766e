/**
 * Where the client's JWT comes from and when it is renewed: a static `token`, or a
 * `getToken` provider asked at every connection attempt (so after a 4002 too) and before
 * the token expires, for the in-band `refresh_token`. Sans-I/O but for calling the provider.
 *
 * The refresh comes at 80 % of the token's remaining life or `refreshMarginMs` (default
 * 30 s) before its expiry, whichever is earlier, but never before half of it: a one-hour
 * token is renewed after 48 min, a two-minute one 30 s before it ends, a five-second one
 * after 2.5 s (not at once, in a loop). The same rule as the Python SDK's `refresh_delay`.
 * The expiry is the greeting's `expires_at`, then each fresh token's `exp` (RFC 7519
 * §4.1.4, read, not verified: the gateway verifies), both read on the client's clock: a
 * clock so far behind the gateway's that the refresh comes too late ends the connection
 * with 4002 instead, and the client reconnects with a fresh token and resumes every run,
 * losing nothing.
 */

import { Unauthorized } from "./errors.js";

/** Returns a JWT, sync or async; called at every connection attempt and before expiry. */
export type TokenProvider = () => string | Promise<string>;

export const DEFAULT_REFRESH_MARGIN_MS = 30_000;

/** A token with less left than this is not refreshed in band (the 4002 and reconnect follow). */
const MIN_REFRESH_MS = 1_000;

// A JWS or JWE in compact serialization (RFC 7515 §7.1): base64url parts joined by dots.
// Exactly the characters that both carriers take: a header value, and a subprotocol
// (an RFC 9110 token) in browsers, whose `WebSocket` throws on anything else.
const COMPACT_JWT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*)+$/;

/** The token's `exp` in milliseconds since the epoch; undefined when it is not a JWT with a numeric `exp`. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (payload === undefined || !COMPACT_JWT.test(token)) {
    return undefined;
  }
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    const exp = typeof claims === "object" && claims !== null ? (claims as { exp?: unknown }).exp : undefined;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Milliseconds from `nowMs` until the in-band refresh of a token expiring at
 * `expiresAtMs`: at 80 % of the remaining time or `marginMs` before the expiry, whichever
 * is earlier, never before half of it; undefined when less than a second is left. A
 * failed refresh asks again with what is then left: the retries come at halving intervals.
 */
export function refreshDelay(expiresAtMs: number, nowMs: number, marginMs: number): number | undefined {
  const remaining = expiresAtMs - nowMs;
  if (!(remaining >= MIN_REFRESH_MS)) {
    return undefined;
  }
  return Math.max(remaining / 2, Math.min(remaining * 0.8, remaining - marginMs));
}

/** `token` if it can be sent (a compact JWT); throws `Unauthorized` otherwise, as the gateway would refuse it. */
export function checkedToken(token: unknown): string {
  if (typeof token !== "string" || !COMPACT_JWT.test(token)) {
    const what = typeof token === "string" ? "a string that is not a compact JWT" : typeof token;
    throw new Unauthorized({ type: "error", code: "unauthorized", message: `the token is ${what}` });
  }
  return token;
}

/** The client's token: the static one, or a new one from the provider each time. */
export class TokenSource {
  constructor(
    private readonly fixed: string | undefined,
    private readonly provider: TokenProvider | undefined,
  ) {
    if (fixed !== undefined && provider !== undefined) {
      throw new TypeError("pass `token` or `getToken`, not both");
    }
  }

  /** Whether a fresh token can be had: the client refreshes in band and survives a 4002. */
  get refreshable(): boolean {
    return this.provider !== undefined;
  }

  /** The token for a connection attempt (undefined without one); throws what the provider throws. */
  async forConnect(): Promise<string | undefined> {
    if (this.provider === undefined) {
      return this.fixed === undefined ? undefined : checkedToken(this.fixed);
    }
    return this.fresh();
  }

  /** A new token from the provider. */
  async fresh(): Promise<string> {
    if (this.provider === undefined) {
      throw new TypeError("no getToken to ask for a fresh token");
    }
    return checkedToken(await this.provider());
  }
}
