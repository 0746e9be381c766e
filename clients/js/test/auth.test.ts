/**
 * Auth and rate limits against real gateways: one with `GRAPHWIRE_AUTH_JWT_SECRET` (the
 * token in the `Authorization` header, as `ws` sends it), one with a small per-connection
 * rate limit. A token that expires mid-run is refreshed in band with no reconnect; when
 * the refresh never reaches the server, its 4002 brings a reconnect with a fresh token and
 * a resume: either way every event arrives once, in seq order. A bad token ends the
 * client at once; a rate-limited command that is safe to repeat is sent again.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  ConnectionUnauthorized,
  Forbidden,
  GraphwireClient,
  type GraphwireError,
  RateLimited,
  type RunEvent,
  SocketOpenFailed,
  type StateChange,
  TokenExpired,
  type Transport,
  webSocketTransport,
} from "@graphwire/client";

import { mintToken } from "./helpers/jwt.js";
import { type Gateway, sleep, startGateway } from "./helpers/server.js";

const SECRET = "graphwire-js-sdk-tests-hs256-secret-0123456789";
const SCOPE = "workflows:start runs:read";
// `tick` with these params runs for about 5 s: past the life of the 3 s tokens below.
const LONG_RUN = { count: 50, delay_ms: 100 };

/** The default transport, counting attempts; `drop` frames are never written (lost on the way). */
function transport(drop?: string): { transport: Transport; attempts: () => number } {
  const real = webSocketTransport();
  let attempts = 0;
  return {
    transport: async (url, events, options) => {
      attempts++;
      const socket = await real(url, events, options);
      return {
        send: (text) => (drop !== undefined && text.includes(drop) ? undefined : socket.send(text)),
        close: (code, reason) => socket.close(code, reason),
      };
    },
    attempts: () => attempts,
  };
}

/** A provider of tokens for `sub` that live `ttlS` seconds; `calls()` counts them. */
function provider(sub: string, ttlS: number): { getToken: () => string; calls: () => number } {
  let calls = 0;
  return {
    getToken: () => mintToken(SECRET, { sub, scope: SCOPE, jti: `${sub}-${++calls}` }, ttlS),
    calls: () => calls,
  };
}

/** The seqs are 1..n, each once, in order. */
function assertGapFree(events: readonly RunEvent[]): void {
  assert.deepEqual(
    events.map((event) => event.seq),
    events.map((_, index) => index + 1),
  );
}

async function until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${what}`);
    }
    await sleep(20);
  }
}

describe("auth on", () => {
  let gateway: Gateway;
  /** The run's whole log, read by an admin straight from the gateway. */
  let serverLog: (workflowId: string) => Promise<RunEvent[]>;

  before(async () => {
    gateway = await startGateway({ GRAPHWIRE_AUTH_JWT_SECRET: SECRET });
    serverLog = async (workflowId) => {
      const reader = new GraphwireClient(gateway.ws, { token: mintToken(SECRET, { sub: "ops", scope: "admin" }) });
      await reader.connect();
      const run = await reader.attach(workflowId);
      await run.result();
      const events = [...run.events];
      await reader.close();
      return events;
    };
  });

  after(async () => {
    await gateway.stop();
  });

  it("connects with the token in the Authorization header: connected names the user and the expiry", async () => {
    const exp = Math.floor(Date.now() / 1000) + 600;
    const client = new GraphwireClient(gateway.ws, { token: mintToken(SECRET, { sub: "alice", scope: SCOPE, exp }) });
    const hello = await client.connect();
    assert.equal(hello.user, "alice");
    assert.equal(Date.parse(hello.expires_at ?? ""), exp * 1000);
    const run = await client.startWorkflow("chat", { message: "hi" });
    assert.match((await run.result()).reply, /hi/);
    await client.close();
  });

  it("a junk token: close 4001, ConnectionUnauthorized at once, no retry even with a provider", async () => {
    const counted = transport();
    let calls = 0;
    const client = new GraphwireClient(gateway.ws, {
      transport: counted.transport,
      getToken: () => (calls++, mintToken("another-secret-entirely-0123456789abcdef", { sub: "eve" })),
      reconnect: { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 50 },
    });
    await assert.rejects(
      client.connect(),
      (error: unknown) => error instanceof ConnectionUnauthorized && error.closeCode === 4001,
    );
    await sleep(200); // no attempt comes later either
    assert.deepEqual([counted.attempts(), calls], [1, 1]);
    assert.equal(client.state, "disconnected");
    await client.close();
  });

  it("a token that expires mid-run is refreshed in band: one socket, every event once", async () => {
    const tokens = provider("bob", 3);
    const client = new GraphwireClient(gateway.ws, { getToken: tokens.getToken });
    const states: string[] = [];
    client.on("state", ({ newState }) => states.push(newState));
    let refreshed = 0;
    client.on("ack", (ack) => (refreshed += ack.command === "refresh_token" ? 1 : 0));
    const failures: GraphwireError[] = [];
    client.on("refresh_failed", (error) => failures.push(error));
    await client.connect();
    const run = await client.startWorkflow("tick", LONG_RUN);
    assert.equal((await run.result()).ticks, LONG_RUN.count);
    assert.ok(refreshed >= 2, `refreshed ${refreshed} times during a 5 s run of 3 s tokens`);
    assert.equal(tokens.calls(), refreshed + 1);
    assert.deepEqual(failures, []);
    assert.deepEqual(states, ["connecting", "connected"], "never reconnected");
    assertGapFree(run.events);
    assert.deepEqual(
      run.events.map((event) => [event.seq, event.type]),
      (await serverLog(run.workflowId)).map((event) => [event.seq, event.type]),
    );
    await client.close();
  });

  it("a refresh that never arrives: 4002, a fresh token, a reconnect and a resume, no event lost", async () => {
    const tokens = provider("carol", 3);
    const lossy = transport('"refresh_token"');
    const client = new GraphwireClient(gateway.ws, { getToken: tokens.getToken, transport: lossy.transport });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const run = await client.startWorkflow("tick", LONG_RUN);
    await run.result();
    const expired = states.filter(
      (change) => change.error instanceof SocketOpenFailed && change.error.closeCode === 4002,
    );
    assert.ok(expired.length >= 1, JSON.stringify(states.map((change) => [change.newState, change.error?.message])));
    assert.ok(lossy.attempts() >= 2 && tokens.calls() >= lossy.attempts(), "each attempt had a token of its own");
    assert.equal(client.state, "connected");
    assertGapFree(run.events);
    assert.deepEqual(
      run.events.map((event) => [event.seq, event.type]),
      (await serverLog(run.workflowId)).map((event) => [event.seq, event.type]),
    );
    await client.close();
  });

  it("a refresh with another user's token is refused (Forbidden) and the connection keeps its token", async () => {
    let calls = 0;
    const client = new GraphwireClient(gateway.ws, {
      // exp in whole seconds: 2 to 3 s of life, so the first refresh comes after 1 to 1.5 s.
      getToken: () => mintToken(SECRET, { sub: ++calls === 1 ? "dave" : "mallory", scope: SCOPE }, 3),
    });
    const failures: GraphwireError[] = [];
    client.on("refresh_failed", (error) => failures.push(error));
    await client.connect();
    await until(() => failures.length >= 1, "the refresh is refused");
    assert.ok(failures[0] instanceof Forbidden, String(failures[0]));
    assert.equal(client.state, "connected");
    assert.equal((await client.ping()).type, "pong", "still usable on the old token");
    await client.close();
  });

  it("a static token that expires: 4002 ends the client with TokenExpired", async () => {
    const client = new GraphwireClient(gateway.ws, { token: mintToken(SECRET, { sub: "erin", scope: SCOPE }, 2) });
    const ended = new Promise<StateChange>((resolve) =>
      client.on("state", (change) => change.newState === "disconnected" && resolve(change)),
    );
    await client.connect();
    const change = await ended;
    assert.ok(change.error instanceof TokenExpired && change.error.closeCode === 4002, String(change.error));
    await client.close();
  });
});

describe("rate limits", () => {
  let gateway: Gateway;

  before(async () => {
    gateway = await startGateway({ GRAPHWIRE_RATE_LIMIT_PER_CONNECTION: "4/second" });
  });

  after(async () => {
    await gateway.stop();
  });

  it("commands over the limit that are safe to repeat are sent again after retry_after, and answered", async () => {
    const client = new GraphwireClient(gateway.ws);
    const refusals: number[] = [];
    client.on("error", (error) => error.code === "rate_limited" && refusals.push(error.retry_after ?? -1));
    await client.connect();
    const started = Date.now();
    const pongs = await Promise.all(Array.from({ length: 7 }, () => client.ping()));
    assert.equal(pongs.length, 7);
    assert.ok(refusals.length >= 3, `refused ${refusals.length} times`);
    assert.ok(
      refusals.every((seconds) => seconds > 0 && seconds <= 1),
      refusals.join(", "),
    );
    assert.ok(Date.now() - started >= Math.min(...refusals) * 1000, "not before retry_after");
    assert.equal(client.state, "connected");
    await client.close();
  });

  it("a cancel over the limit is not repeated: it rejects with RateLimited and its retryAfter", async () => {
    const client = new GraphwireClient(gateway.ws);
    await client.connect();
    await Promise.all(Array.from({ length: 4 }, () => client.ping()));
    await assert.rejects(
      client.commands.cancelWorkflow({ workflow_id: "run_nobody" }),
      (error: unknown) => error instanceof RateLimited && (error.retryAfter ?? 0) > 0,
    );
    await client.close();
  });
});
