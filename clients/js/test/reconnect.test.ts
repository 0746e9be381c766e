/**
 * Forced disconnects mid-run through a TCP proxy the test controls: every event arrives
 * exactly once, in order, with no gap; commands survive; after the configured attempts
 * the client fails for good.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import { ConnectionLost, GraphwireClient, type RunEvent, type StateChange } from "@graphwire/client";

import { Proxy } from "./helpers/proxy.js";
import { PORT, WS, sleep } from "./helpers/server.js";

const FAST = { maxAttempts: 30, baseDelayMs: 10, maxDelayMs: 80 };

function withoutReplyTo(events: readonly RunEvent[]): RunEvent[] {
  return events.map((event) => {
    if (event.type === "workflow_started") {
      const { reply_to: _ignored, ...rest } = event;
      return rest;
    }
    return event;
  });
}

/** The run's whole log, read by a separate client straight from the gateway. */
async function serverLog(workflowId: string): Promise<RunEvent[]> {
  const reader = new GraphwireClient(WS);
  await reader.connect();
  const run = await reader.attach(workflowId, { sinceSeq: 0 });
  await run.result().catch(() => undefined);
  const events = [...run.events];
  await reader.close();
  return events;
}

describe("forced disconnects", () => {
  let proxy: Proxy;

  before(async () => {
    proxy = await Proxy.start(PORT);
  });

  after(async () => {
    await proxy.close();
  });

  it("cut five times during a run: the iteration sees every event once, in order", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: FAST, validate: true });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const run = await client.startWorkflow("data_processing", {
      data: Array.from({ length: 60 }, (_, i) => i + 1),
      delay_ms: 20,
    });
    const cutter = (async () => {
      for (let i = 0; i < 5; i++) {
        while (client.state !== "connected") {
          await sleep(5);
        }
        await sleep(60);
        proxy.cut();
      }
    })();
    const events: RunEvent[] = [];
    let dropsDuringRun = 0;
    for await (const event of run) {
      events.push(event);
      dropsDuringRun = states.filter((s) => s.newState === "connecting").length;
    }
    await cutter;
    assert.deepEqual(
      events.map((e) => e.seq),
      events.map((_, i) => i + 1),
      "no gap, no repeat",
    );
    assert.equal(events.at(-1)?.type, "workflow_completed");
    assert.deepEqual(await run.result(), { count: 60, sum: 1830, mean: 30.5 });
    assert.deepEqual(
      withoutReplyTo(events),
      withoutReplyTo(await serverLog(run.workflowId)),
      "exactly the server's log",
    );
    assert.ok(dropsDuringRun >= 3, `only ${dropsDuringRun} drops happened during the run`);
    await client.close();
  });

  it("an approval survives a cut and a refused reconnect while waiting for the answer", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
    await client.connect();
    const run = await client.startWorkflow("approval", { message: "Cut?", timeout: 20 });
    for await (const event of run) {
      if (event.type === "input_request") {
        proxy.refuse(true);
        proxy.cut();
        await sleep(150); // several attempts are refused meanwhile
        const answer = run.respond(event.request_id, { value: "yes" }); // waits for the reconnect
        proxy.refuse(false);
        assert.equal((await answer).command, "node_input");
      }
    }
    assert.deepEqual(await run.result(), { approved: true, answer: "yes" });
    assert.deepEqual(
      run.events.map((e) => e.seq),
      run.events.map((_, i) => i + 1),
    );
    await client.close();
  });

  it("a start whose answer was lost is resent and yields one run with its whole log", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const cutsBefore = proxy.cuts;
    const cut = proxy.cutAfterClientSends('"start_workflow"');
    const started = client.startWorkflow("data_processing", { data: [1, 2, 3, 4, 5, 6], delay_ms: 20 });
    await cut;
    const run = await started;
    const events: RunEvent[] = [];
    for await (const event of run) {
      events.push(event);
    }
    assert.deepEqual(
      events.map((e) => e.seq),
      events.map((_, i) => i + 1),
    );
    assert.deepEqual(withoutReplyTo(events), withoutReplyTo(await serverLog(run.workflowId)));
    assert.equal(proxy.cuts, cutsBefore + 1);
    assert.deepEqual(
      states.map((s) => s.newState),
      ["connecting", "connected", "connecting", "connected"],
      "the answer to the first start_workflow was lost with its connection",
    );
    await client.close();
  });

  it("gives up after the configured attempts: the run and pending commands fail with ConnectionLost", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: { maxAttempts: 3, baseDelayMs: 5, maxDelayMs: 20 } });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const run = await client.startWorkflow("tick", { count: 200, delay_ms: 10 });
    proxy.refuse(true);
    proxy.cut();
    const ping = client.ping();
    try {
      await assert.rejects(
        (async () => {
          for await (const _event of run) {
            // drain until the client gives up
          }
        })(),
        (error: unknown) => error instanceof ConnectionLost && error.attempts === 3,
      );
      await assert.rejects(ping, ConnectionLost);
      await assert.rejects(run.result(), ConnectionLost);
      assert.equal(client.state, "disconnected");
      assert.ok(states.at(-1)?.error instanceof ConnectionLost);
      await assert.rejects(client.ping(), /not connected/);
    } finally {
      proxy.refuse(false);
      await client.close();
    }
  });
});
