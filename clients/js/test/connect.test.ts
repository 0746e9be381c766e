/**
 * The first `connect()` retries per the reconnect policy, like the Python SDK's: a gateway
 * that starts listening during the attempts is reached, a port where nothing ever listens
 * ends with `ConnectionLost` after `maxAttempts` attempts, and `close()` stops the retries.
 */

import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { describe, it } from "node:test";

import {
  ClientClosed,
  ConnectionLost,
  GraphwireClient,
  SocketOpenFailed,
  type StateChange,
  type Transport,
  webSocketTransport,
} from "@graphwire/client";

import { Proxy } from "./helpers/proxy.js";
import { PORT, sleep } from "./helpers/server.js";

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
