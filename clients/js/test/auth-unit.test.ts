/**
 * Auth and rate limits with no server: the token's expiry and refresh plan, the token
 * source, the core's retry of `rate_limited` commands, and the client over a fake
 * transport (token provider at connect, in-band refresh, 4002 → reconnect with a fresh
 * token, 4001 final, a token that is not a JWT refused before any socket).
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  ClientCore,
  ConnectionLost,
  ConnectionRejected,
  ConnectionUnauthorized,
  DEFAULT_REFRESH_MARGIN_MS,
  GraphwireClient,
  GraphwireError,
  RATE_LIMIT_RETRIES,
  RateLimited,
  RunLost,
  SUBPROTOCOL,
  type ServerEvent,
  type StateChange,
  TokenSource,
  TokenExpired,
  type Transport,
  Unauthorized,
  type WorkflowCommand,
  checkedToken,
  rateLimitDelay,
  refreshDelay,
  tokenExpiry,
} from "@graphwire/client";

import { type FakeTransport, fakeTransport } from "./helpers/fake.js";
import { mintToken } from "./helpers/jwt.js";

const URL = "ws://gateway.test/ws/workflow";
const WID = "run_1";
const T = "2026-11-25T12:00:00.000000+00:00";
const FAST = { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 5 };

/** Lets queued promise callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let minted = 0;
/** A new token for `sub` whose `exp` is `ttlS` seconds away (the signature does not matter here). */
const token = (ttlS: number, sub = "alice") => mintToken("unit-secret", { sub, jti: `t${++minted}` }, ttlS);

function framesOf<T extends WorkflowCommand["type"]>(fake: FakeTransport, type: T) {
  return fake.sent.filter((frame): frame is Extract<WorkflowCommand, { type: T }> => frame.type === type);
}

describe("tokens", () => {
  it("reads a JWT's exp without verifying it, and nothing from what is not one", () => {
    const exp = Math.floor(Date.now() / 1000) + 60;
    assert.equal(tokenExpiry(mintToken("s", { sub: "a", exp })), exp * 1000);
    assert.equal(tokenExpiry(mintToken("s", { sub: "a", exp: "soon" as unknown as number })), undefined);
    assert.equal(tokenExpiry("opaque"), undefined);
    assert.equal(tokenExpiry("a.!!!.c"), undefined);
    assert.equal(tokenExpiry("a.bm90IGpzb24.c"), undefined); // "not json"
  });

  it("plans the refresh a margin before expiry, never before half the remaining life", () => {
    const now = 1_000_000;
    assert.equal(DEFAULT_REFRESH_MARGIN_MS, 30_000);
    assert.equal(refreshDelay(now + 3_600_000, now, 30_000), 2_880_000); // an hour: at 80 %, after 48 min
    assert.equal(refreshDelay(now + 120_000, now, 30_000), 90_000); // two minutes: 30 s before
    assert.equal(refreshDelay(now + 40_000, now, 30_000), 20_000); // 40 s: halfway, not after 10 s
    assert.equal(refreshDelay(now + 5_000, now, 30_000), 2_500);
    assert.equal(refreshDelay(now + 120_000, now, 60_000), 60_000); // the margin is an option
    assert.equal(refreshDelay(now + 999, now, 30_000), undefined); // too late: the 4002 will come
    assert.equal(refreshDelay(now - 5, now, 30_000), undefined);
    assert.equal(refreshDelay(Number.NaN, now, 30_000), undefined);
  });

  it("sends only compact JWTs: anything else is Unauthorized before it leaves", () => {
    const good = token(60);
    assert.equal(checkedToken(good), good);
    for (const bad of ["", "no-dots", "has space.a.b", "a.b\r\nX: y", "bearer/slash.a.b", 42, undefined]) {
      assert.throws(
        () => checkedToken(bad),
        (error: unknown) => error instanceof Unauthorized && !(error instanceof ConnectionRejected),
      );
    }
  });

  it("asks the provider for every token, and checks what it gives", async () => {
    let calls = 0;
    const source = new TokenSource(undefined, () => (++calls === 3 ? "junk" : token(60)));
    const first = await source.forConnect();
    assert.notEqual(await source.fresh(), first);
    await assert.rejects(source.forConnect(), Unauthorized);
    assert.equal(calls, 3);
    assert.equal(await new TokenSource(first, undefined).forConnect(), first);
  });

  it("takes a static token or a provider, not both", async () => {
    assert.equal(await new TokenSource(undefined, undefined).forConnect(), undefined);
    assert.equal(new TokenSource("a.b.c", undefined).refreshable, false);
    assert.equal(new TokenSource(undefined, () => "a.b.c").refreshable, true);
    assert.throws(() => new GraphwireClient(URL, { token: "a.b.c", getToken: () => "a.b.c" }), TypeError);
    assert.throws(() => new GraphwireClient(URL, { getToken: () => "a.b.c", refreshMarginMs: -1 }), RangeError);
  });
});

describe("rate_limited", () => {
  function core() {
    const sent: WorkflowCommand[] = [];
    const timers: Array<{ ms: number; task: () => void }> = [];
    const messages: ServerEvent[] = [];
    const instance = new ClientCore({
      send: (frame) => sent.push(frame),
      message: (message) => messages.push(message),
      gap: () => {},
      later: (ms, task) => timers.push({ ms, task }),
    });
    instance.connected = true;
    return { core: instance, sent, timers, messages };
  }

  it("sends a command that is safe to repeat again after retry_after, the same frame", async () => {
    const { core: c, sent, timers, messages } = core();
    const ping = c.command({ type: "ping" });
    c.receive({ type: "error", code: "rate_limited", message: "slow down", retry_after: 0.25, reply_to: ping.id });
    assert.deepEqual(
      timers.map((timer) => timer.ms),
      [250],
    );
    assert.equal(sent.length, 1, "not before retry_after");
    assert.equal(messages.at(-1)?.type, "error", "the refusal is still reported");
    timers[0]?.task();
    assert.deepEqual(sent, [sent[0], sent[0]]);
    c.receive({ type: "pong", reply_to: ping.id, timestamp: T });
    assert.equal((await ping.reply).type, "pong");
  });

  it("rejects with RateLimited after the retries, and at once for what is not safe to repeat", async () => {
    const { core: c, sent, timers } = core();
    const ping = c.command({ type: "ping" });
    for (let refusal = 0; refusal <= RATE_LIMIT_RETRIES; refusal++) {
      c.receive({ type: "error", code: "rate_limited", message: "no", retry_after: 2, reply_to: ping.id });
      timers.shift()?.task();
    }
    await assert.rejects(ping.reply, (error: unknown) => error instanceof RateLimited && error.retryAfter === 2);
    assert.equal(sent.length, RATE_LIMIT_RETRIES + 1);
    const cancel = c.command({ type: "cancel_workflow", workflow_id: WID });
    c.receive({ type: "error", code: "rate_limited", message: "no", retry_after: 1, reply_to: cancel.id });
    await assert.rejects(cancel.reply, (error: unknown) => error instanceof RateLimited && error.retryAfter === 1);
    assert.equal(timers.length, 0);
    assert.equal(c.pendingCount, 0);
  });

  it("waits for the resume when the socket dropped before the retry, and sends it once", () => {
    const { core: c, sent, timers } = core();
    const start = c.command({ type: "start_workflow", workflow: "w", idempotency_key: "k" });
    c.receive({ type: "error", code: "rate_limited", message: "no", reply_to: start.id });
    assert.equal(timers[0]?.ms, 1000, "1 s when the server names no retry_after");
    c.lost();
    timers[0]?.task();
    assert.equal(sent.length, 1, "nothing written while disconnected");
    c.resume();
    timers.length = 0;
    assert.deepEqual(
      sent.map((frame) => frame.type),
      ["start_workflow", "start_workflow"],
    );
  });

  it("retries a rate-limited resume instead of losing the run", async () => {
    const { core: c, sent, timers } = core();
    const state = c.track(WID, 0);
    c.lost();
    c.resume();
    const subscribe = sent.at(-1);
    assert.equal(subscribe?.type, "subscribe");
    c.receive({ type: "error", code: "rate_limited", message: "no", retry_after: 0.1, reply_to: subscribe?.id });
    await settle();
    assert.equal(state.finished, false, "not lost");
    timers[0]?.task();
    assert.deepEqual(sent.at(-1), subscribe);
    c.receive({ type: "error", code: "unknown_run", message: "gone", reply_to: subscribe?.id });
    await settle();
    assert.ok(state.outcome?.status === "lost" && state.outcome.error instanceof RunLost);
  });

  it("jitters the retry by up to a quarter of retry_after, at most a second, never earlier", () => {
    assert.equal(
      rateLimitDelay(2000, () => 0),
      2000,
    );
    assert.equal(
      rateLimitDelay(2000, () => 0.999),
      2000 + 0.999 * 500,
    );
    assert.equal(
      rateLimitDelay(60_000, () => 0.5),
      60_500,
    );
    assert.equal(
      rateLimitDelay(-1, () => 0.5),
      0,
    );
  });

  it("a client's startWorkflow survives a rate_limited answer", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient(URL, { transport: fake.transport });
    await client.connect();
    const started = client.startWorkflow("chat", { message: "hi" });
    await until(() => fake.sent.length === 1, "the start is sent");
    const first = fake.sent[0];
    fake.push({ type: "error", code: "rate_limited", message: "no", retry_after: 0.05, reply_to: first?.id });
    await until(() => fake.sent.length === 2, "the start is sent again");
    assert.deepEqual(fake.sent[1], first);
    fake.push({
      type: "workflow_started",
      workflow_id: WID,
      seq: 1,
      workflow: "chat",
      timestamp: T,
      reply_to: first?.id,
    });
    assert.equal((await started).workflowId, WID);
    await client.close();
  });
});

describe("GraphwireClient with a token provider", () => {
  it("asks the provider at connect, sync or async, and sends its token", async () => {
    for (const getToken of [() => token(60), async () => token(60)]) {
      const fake = fakeTransport();
      const client = new GraphwireClient(URL, { transport: fake.transport, getToken });
      await client.connect();
      assert.equal(fake.tokens.length, 1);
      assert.equal(tokenExpiry(fake.tokens[0] ?? "") !== undefined, true);
      await client.close();
    }
  });

  it("refreshes in band before expires_at, again before each new token's exp, with no reconnect", async () => {
    const issued: string[] = [];
    const getToken = () => {
      issued.push(token(2)); // exp is in whole seconds: 1 to 2 s of life, refreshed halfway
      return issued.at(-1) ?? "";
    };
    const fake = fakeTransport(() => ({ user: "alice", expires_at: new Date(Date.now() + 1500).toISOString() }));
    const client = new GraphwireClient(URL, { transport: fake.transport, getToken });
    const states: string[] = [];
    client.on("state", ({ newState }) => states.push(newState));
    assert.equal((await client.connect()).user, "alice");
    for (let n = 1; n <= 2; n++) {
      await until(() => framesOf(fake, "refresh_token").length === n, `refresh ${n} is sent`);
      const refresh = framesOf(fake, "refresh_token")[n - 1];
      assert.equal(refresh?.token, issued[n], "the provider's newest token");
      fake.push({ type: "ack", command: "refresh_token", reply_to: refresh?.id });
    }
    assert.equal(fake.tokens.length, 1, "one socket");
    assert.deepEqual(states, ["connecting", "connected"]);
    await client.close();
  });

  it("reports a refused refresh, keeps the old token, and tries again while time is left", async () => {
    let calls = 0;
    const fake = fakeTransport(() => ({ expires_at: new Date(Date.now() + 4000).toISOString() }));
    const client = new GraphwireClient(URL, { transport: fake.transport, getToken: () => token(60, `u${calls++}`) });
    const failures: GraphwireError[] = [];
    client.on("refresh_failed", (error) => failures.push(error));
    await client.connect();
    await until(() => framesOf(fake, "refresh_token").length === 1, "a refresh is sent");
    const refresh = framesOf(fake, "refresh_token")[0];
    fake.push({ type: "error", code: "forbidden", message: "another sub", reply_to: refresh?.id });
    await until(() => failures.length === 1, "the failure is reported");
    assert.equal(failures[0]?.name, "Forbidden");
    await until(() => framesOf(fake, "refresh_token").length === 2, "a second refresh, halfway to the expiry");
    assert.equal(fake.tokens.length, 1, "no reconnect meanwhile");
    await client.close();
  });

  it("on 4002 gets a fresh token, reconnects and resumes the run from its last seq", async () => {
    const issued: string[] = [];
    const fake = fakeTransport();
    const client = new GraphwireClient(URL, {
      transport: fake.transport,
      getToken: () => {
        issued.push(token(60));
        return issued.at(-1) ?? "";
      },
      reconnect: FAST,
    });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const attach = client.attach(WID);
    await until(() => fake.sent.length === 1, "the subscribe");
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    const base = { workflow_id: WID, timestamp: T, node_id: "n" };
    fake.push({ ...base, type: "node_update", seq: 1, data: { status: "running" } });
    fake.push({ ...base, type: "node_update", seq: 2, data: { status: "completed" } });
    fake.drop(4002, "token expired");
    await until(() => fake.tokens.length === 2, "the reconnect");
    assert.deepEqual(fake.tokens, issued, "a fresh token from the provider");
    assert.equal(issued.length, 2);
    await until(() => fake.sent.length === 2, "the resume");
    const resume = fake.sent[1];
    assert.ok(resume?.type === "subscribe" && resume.workflow_id === WID && resume.since_seq === 2);
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 2, reply_to: resume.id });
    fake.push({ type: "workflow_completed", workflow_id: WID, seq: 3, timestamp: T, data: { ok: true } });
    assert.deepEqual(await run.result(), { ok: true });
    assert.deepEqual(
      run.events.map((event) => event.seq),
      [1, 2, 3],
    );
    const drop = states.find((change) => change.newState === "connecting" && change.error !== undefined);
    assert.match(drop?.error?.message ?? "", /4002/);
    await client.close();
  });

  it("on 4002 at the handshake tries again with a fresh token", async () => {
    let attempts = 0;
    const fake = fakeTransport();
    const transport: Transport = async (url, events, options) => {
      if (++attempts === 1) {
        setImmediate(() => events.close(4002, "token expired"));
        return { send: () => {}, close: async () => {} };
      }
      return fake.transport(url, events, options);
    };
    const issued: string[] = [];
    const client = new GraphwireClient(URL, {
      transport,
      getToken: () => {
        issued.push(token(60));
        return issued.at(-1) ?? "";
      },
      reconnect: FAST,
    });
    assert.equal((await client.connect()).client_id, "cl_1");
    assert.equal(attempts, 2);
    assert.deepEqual(fake.tokens, [issued[1]]);
    await client.close();
  });

  it("with a static token, 4002 ends the client: TokenExpired, runs fail with it", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient(URL, { transport: fake.transport, token: token(60), reconnect: FAST });
    await client.connect();
    const attach = client.attach(WID);
    await until(() => fake.sent.length === 1, "the subscribe");
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    fake.drop(4002, "token expired");
    await assert.rejects(
      run.result(),
      (error: unknown) =>
        error instanceof TokenExpired &&
        error instanceof Unauthorized &&
        error instanceof ConnectionRejected &&
        error.closeCode === 4002 &&
        /token_expired/.test(error.message),
    );
    assert.equal(client.state, "disconnected");
    assert.equal(fake.tokens.length, 1, "no reconnect");
    await client.close();
  });

  it("4001 stops at once even with a provider: Unauthorized, one attempt, one call", async () => {
    let attempts = 0;
    let calls = 0;
    const transport: Transport = async (_url, events) => {
      attempts++;
      setImmediate(() => events.close(4001, "bad signature"));
      return { send: () => {}, close: async () => {} };
    };
    const client = new GraphwireClient(URL, {
      transport,
      getToken: () => (calls++, token(60)),
      reconnect: FAST,
    });
    await assert.rejects(
      client.connect(),
      (error: unknown) =>
        error instanceof ConnectionUnauthorized && error.closeCode === 4001 && /bad signature/.test(error.message),
    );
    await settle();
    assert.deepEqual([attempts, calls], [1, 1]);
    assert.equal(client.state, "disconnected");
    await client.close();
  });

  it("refuses a token that is not a JWT before opening any socket", async () => {
    let attempts = 0;
    const transport: Transport = async () => {
      attempts++;
      throw new Error("not reached");
    };
    for (const options of [{ token: "not a jwt" }, { getToken: () => "not a jwt" }]) {
      const client = new GraphwireClient(URL, { transport, reconnect: FAST, ...options });
      await assert.rejects(client.connect(), Unauthorized);
      await client.close();
    }
    assert.equal(attempts, 0);
  });

  it("a provider that throws fails the attempt; the client retries, then gives up with its error as cause", async () => {
    let calls = 0;
    const fake = fakeTransport();
    const flaky = new GraphwireClient(URL, {
      transport: fake.transport,
      getToken: async () => {
        if (++calls < 3) {
          throw new Error("identity provider down");
        }
        return token(60);
      },
      reconnect: FAST,
    });
    await flaky.connect();
    assert.equal(calls, 3);
    await flaky.close();
    const down = new GraphwireClient(URL, {
      transport: fake.transport,
      getToken: () => {
        throw new Error("logged out");
      },
      reconnect: { ...FAST, maxAttempts: 2 },
    });
    await assert.rejects(
      down.connect(),
      (error: unknown) =>
        error instanceof ConnectionLost && error.cause instanceof Error && error.cause.message === "logged out",
    );
    await down.close();
  });

  it("a provider that never answers is bounded by connectTimeoutMs", async () => {
    const client = new GraphwireClient(URL, {
      transport: fakeTransport().transport,
      getToken: () => new Promise<string>(() => {}),
      connectTimeoutMs: 50,
      reconnect: false,
    });
    await assert.rejects(client.connect(), /no greeting within 50 ms/);
    await client.close();
  });
});

describe("the default transport's carriers", () => {
  function recording(calls: unknown[][]) {
    return class {
      readyState = 0;
      onopen: (() => void) | null = null;
      onmessage: ((event: { data: unknown }) => void) | null = null;
      onerror: (() => void) | null = null;
      onclose: ((event: { code: number; reason: string }) => void) | null = null;
      constructor(...args: unknown[]) {
        calls.push(args);
        setImmediate(() => this.onclose?.({ code: 1006, reason: "" }));
      }
      send(): void {}
      close(): void {}
    };
  }

  it("in a browser (the host's own WebSocket) offers graphwire.v1 and bearer.<token>", async () => {
    const calls: unknown[][] = [];
    const host = globalThis as { WebSocket?: unknown };
    host.WebSocket = recording(calls);
    try {
      const jwt = token(60);
      const client = new GraphwireClient(URL, { token: jwt, reconnect: false });
      await assert.rejects(client.connect());
      assert.deepEqual(calls, [[`${URL}?batch=1`, [SUBPROTOCOL, `bearer.${jwt}`]]]);
      assert.equal(SUBPROTOCOL, "graphwire.v1");
      await client.close();
    } finally {
      delete host.WebSocket;
    }
  });

  it("in Node (ws) sends Authorization: Bearer and no subprotocol", async () => {
    const calls: unknown[][] = [];
    const jwt = token(60);
    const client = new GraphwireClient(URL, { getToken: () => jwt, WebSocket: recording(calls), reconnect: false });
    await assert.rejects(client.connect());
    assert.deepEqual(calls, [[`${URL}?batch=1`, [], { headers: { Authorization: `Bearer ${jwt}` } }]]);
    await client.close();
  });
});
