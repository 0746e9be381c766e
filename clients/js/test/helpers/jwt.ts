/** HS256 JWTs for the tests (RFC 7519; HMAC-SHA256 over base64url `header.payload`). */

import { createHmac } from "node:crypto";

export interface Claims {
  sub: string;
  /** Seconds since the epoch; default `now + ttlS`. */
  exp?: number;
  scope?: string;
  [claim: string]: unknown;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** A token signed with `secret`, expiring `ttlS` seconds from now unless `claims.exp` says otherwise. */
export function mintToken(secret: string, claims: Claims, ttlS = 3600): string {
  const body = { exp: Math.floor(Date.now() / 1000) + ttlS, ...claims };
  const signing = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${base64url(JSON.stringify(body))}`;
  return `${signing}.${createHmac("sha256", secret).update(signing).digest("base64url")}`;
}
