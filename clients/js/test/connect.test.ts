/**
 * The first `connect()` retries per the reconnect policy, like the Python SDK's: a gateway
 * that starts listening during the attempts is reached, a port where nothing ever listens
 * ends with `ConnectionLost` after `maxAttempts` attempts, and `close()` stops the retries.
 * A gateway at `max_connections` refuses the handshake with 503 and `Retry-After: 1`: the
 * attempts then come at least that far apart, jittered, until a slot frees.
 */

import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { describe, it } from "node:test";

import {
  ClientClosed,
  ConnectionLost,
  type Connected,
  GraphwireClient,
  SocketOpenFailed,
  type StateChange,
  type Transport,
  webSocketTransport,
} from "@graphwire/client";

import { Proxy } from "./helpers/proxy.js";
import { PORT, sleep, startGateway } from "./helpers/server.js";

/** A port nothing listens on (it was free a moment ago). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") {
    throw new Error("no port");
  }
  return address.port;
}

/** The default transport, counting the connection attempts. */
function countingTransport(): { transport: Transport; attempts: () => number } {
  const real = webSocketTransport();
  let attempts = 0;
  return {
    transport: (url, events, options) => {
      attempts++;
      return real(url, events, options);
    },
    attempts: () => attempts,
  };
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${what}`);
    }
    await sleep(5);
  }
}

describe("connect() retries per the reconnect policy", () => {
  it("reaches a gateway that starts listening during the attempts", async () => {
    const port = await freePort();
    const counting = countingTransport();
    const client = new GraphwireClient(`ws://127.0.0.1:${port}/ws/workflow`, {
      transport: counting.transport,
      reconnect: { maxAttempts: 100, baseDelayMs: 10, maxDelayMs: 50 },
    });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    const connecting = client.connect();
    let proxy: Proxy | undefined;
    try {
      await until(() => counting.attempts() >= 3, "three attempts failed");
      assert.equal(client.state, "connecting");
      proxy = await Proxy.start(PORT, port);
      const greeting = await connecting;
      assert.equal(greeting.type, "connected");
      assert.equal(client.clientId, greeting.client_id);
      assert.ok(counting.attempts() >= 3);
      assert.deepEqual(
        states.map((s) => [s.newState, s.attempt]),
        [
          ["connecting", 0],
          ["connected", 0],
        ],
        "one `connecting` for all the attempts, as while reconnecting",
      );
      assert.match((await client.ping()).timestamp, /^\d{4}-/);
    } finally {
      await client.close();
      await proxy?.close();
    }
  });

  it("rejects with ConnectionLost after maxAttempts attempts when nothing listens", async () => {
    const port = await freePort();
    const counting = countingTransport();
    const client = new GraphwireClient(`ws://127.0.0.1:${port}/ws/workflow`, {
      transport: counting.transport,
      reconnect: { maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 20 },
    });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await assert.rejects(
      client.connect(),
      (error: unknown) =>
        error instanceof ConnectionLost && error.attempts === 4 && error.cause instanceof SocketOpenFailed,
    );
    assert.equal(counting.attempts(), 4);
    assert.equal(client.state, "disconnected");
    assert.deepEqual(
      states.map((s) => [s.newState, s.attempt]),
      [
        ["connecting", 0],
        ["disconnected", 4],
      ],
    );
    assert.ok(states.at(-1)?.error instanceof ConnectionLost);
    await assert.rejects(client.ping(), /not connected/);
    await sleep(50);
    assert.equal(counting.attempts(), 4, "no attempt after giving up");
    await client.close();
  });

  it("close() during the retries rejects with ClientClosed and stops retrying", async () => {
    const port = await freePort();
    const counting = countingTransport();
    const client = new GraphwireClient(`ws://127.0.0.1:${port}/ws/workflow`, {
      transport: counting.transport,
      reconnect: { maxAttempts: 1000, baseDelayMs: 5, maxDelayMs: 20 },
    });
    const connecting = client.connect();
    const rejected = assert.rejects(connecting, ClientClosed);
    await until(() => counting.attempts() >= 2, "two attempts were made");
    await client.close();
    await rejected;
    assert.equal(client.state, "disconnected");
    const attempts = counting.attempts();
    await sleep(100);
    assert.equal(counting.attempts(), attempts, "no attempt after close()");
    await assert.rejects(client.connect(), ClientClosed);
  });
});

describe("a handshake refused with 503 (the gateway is at max_connections)", () => {
  it("backs off above Retry-After with jitter, and connects once the slot is free", async () => {
    const gateway = await startGateway({ GRAPHWIRE_MAX_CONNECTIONS: "1" });
    const holder = new GraphwireClient(gateway.ws, { reconnect: false });
    const real = webSocketTransport();
    const attempts: { at: number; error?: unknown }[] = [];
    const transport: Transport = async (url, events, options) => {
      const attempt: { at: number; error?: unknown } = { at: performance.now() };
      attempts.push(attempt);
      try {
        return await real(url, events, options);
      } catch (error) {
        attempt.error = error;
        throw error;
      }
    };
    const client = new GraphwireClient(gateway.ws, {
      transport,
      reconnect: { maxAttempts: 30, baseDelayMs: 250, maxDelayMs: 1000 },
    });
    try {
      await holder.connect(); // the one slot
      const connecting = client.connect();
      await until(() => attempts.filter((a) => a.error !== undefined).length >= 4, "four refusals", 30_000);
      await holder.close();
      const greeting: Connected = await connecting;
      assert.equal(greeting.type, "connected");
      const refused = attempts.slice(0, -1);
      assert.ok(refused.length >= 4);
      for (const { error } of refused) {
        assert.ok(error instanceof SocketOpenFailed, String(error));
        assert.deepEqual([error.status, error.retryAfterMs], [503, 1000], "ws shows the refusal");
      }
      assert.equal(attempts.at(-1)?.error, undefined, "the last attempt connected");
      const gaps = attempts.slice(1).map((a, i) => a.at - (attempts[i]?.at ?? 0));
      for (const gap of gaps) {
        assert.ok(gap >= 900, `attempts ${gap.toFixed(0)} ms apart; Retry-After asked for 1000: ${gaps}`);
        assert.ok(gap <= 1000 + 1000 + 1500, `a gap of ${gap.toFixed(0)} ms is above Retry-After + maxDelayMs`);
      }
      assert.ok(Math.max(...gaps) - Math.min(...gaps) > 20, `the delays are jittered: ${gaps}`);
      assert.match((await client.ping()).timestamp, /^\d{4}-/);
    } finally {
      await client.close();
      await holder.close();
      await gateway.stop();
    }
  });
});
