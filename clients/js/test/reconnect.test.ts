/**
 * Forced disconnects mid-run through a TCP proxy the test controls: every event arrives
 * exactly once, in order, with no gap; commands survive (an answer cut off before its
 * `ack` is sent again and applied once); after the configured attempts the client fails
 * for good.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  ConnectionLost,
  GatewayShutdown,
  GraphwireClient,
  InputClosed,
  InputRejected,
  type InputRequest,
  type Run,
  type RunEvent,
  type StateChange,
} from "@graphwire/client";

import { Proxy } from "./helpers/proxy.js";
import { PORT, WS, sleep, startGateway } from "./helpers/server.js";

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

async function inputRequest(run: Run<unknown>): Promise<InputRequest> {
  for await (const event of run) {
    if (event.type === "input_request") {
      return event;
    }
  }
  throw new Error(`run ${run.workflowId} ended without an input_request`);
}

/** The `node_input` frames the client sent through the proxy since frame number `from`. */
function answersSent(proxy: Proxy, from: number): Array<Record<string, unknown>> {
  return proxy.clientFrames
    .slice(from)
    .filter((frame) => frame.includes('"node_input"'))
    .map((frame) => JSON.parse(frame) as Record<string, unknown>);
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

  for (const starter of ["another client", "this client"] as const) {
    it(`a resume names the run log's epoch, and the gateway says the view is recovered (started by ${starter})`, async () => {
      const other = new GraphwireClient(WS);
      const reader = new GraphwireClient(WS);
      const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
      await Promise.all([other.connect(), reader.connect(), client.connect()]);
      const params = { data: Array.from({ length: 60 }, (_, i) => i + 1), delay_ms: 15 };
      // Started here, the run has no subscribed before its first resume: its epoch is the
      // one workflow_started named.
      const run =
        starter === "this client"
          ? await client.startWorkflow("data_processing", params)
          : await client.attach((await other.startWorkflow("data_processing", params)).workflowId);
      const { epoch } = await reader.commands.subscribe({ workflow_id: run.workflowId, since_seq: 0 });
      assert.ok(epoch, "the gateway names its log's epoch");
      const from = proxy.clientFrames.length;
      while (run.lastSeq < 5) {
        await sleep(2);
      }
      proxy.cut();
      const events: RunEvent[] = [];
      for await (const event of run) {
        events.push(event);
      }
      const resumes = proxy.clientFrames
        .slice(from)
        .map((frame) => JSON.parse(frame) as Record<string, unknown>)
        .filter((frame) => frame.type === "subscribe");
      assert.deepEqual(
        resumes.map((frame) => [frame.workflow_id, frame.epoch]),
        [[run.workflowId, epoch]],
      );
      assert.equal(run.recovered, true, "the same epoch: the replay continues the view");
      assert.deepEqual(
        events.map((e) => e.seq),
        events.map((_, i) => i + 1),
      );
      assert.deepEqual(withoutReplyTo(events), withoutReplyTo(await serverLog(run.workflowId)));
      await Promise.all([other.close(), reader.close(), client.close()]);
    });
  }

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

  for (const where of ["after", "before"] as const) {
    it(`respond() survives a cut ${where} the answer reaches the gateway: acked once, applied once`, async () => {
      const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
      const other = new GraphwireClient(WS);
      await Promise.all([client.connect(), other.connect()]);
      try {
        const run = await client.startWorkflow("approval", { message: `Cut ${where}?`, timeout: 20 });
        const request = await inputRequest(run);
        const from = proxy.clientFrames.length;
        const cutsBefore = proxy.cuts;
        // After: the gateway applies the answer, its ack is lost with the connection. Before:
        // the gateway never sees the first copy.
        const cut =
          where === "after"
            ? proxy.cutAfterClientSends('"node_input"', '"command":"node_input"')
            : proxy.cutBeforeClientSends('"node_input"');
        const answer = run.respond(request.request_id, { value: "yes" });
        await cut;
        const cutAt = Date.now();
        const ack = await answer;
        const sent = answersSent(proxy, from);
        assert.equal(proxy.cuts, cutsBefore + 1);
        assert.equal(sent.length, 2, "sent, cut off, sent again after the resume");
        assert.deepEqual(sent[1], sent[0], "the identical node_input: same id, idempotency_key, data, request_id");
        assert.equal(typeof sent[0]?.idempotency_key, "string");
        assert.deepEqual([ack.command, ack.reply_to], ["node_input", sent[0]?.id]);
        assert.deepEqual(await run.result(), { approved: true, answer: "yes" });
        const answered = (await serverLog(run.workflowId)).filter((event) => event.type === "input_answered");
        assert.equal(answered.length, 1, "applied once");
        const applied = Date.parse(answered[0]?.timestamp ?? "");
        assert.equal(applied <= cutAt, where === "after", "applied by the first copy, or by the second");
        // The same answer from another client is another answer: refused.
        const watched = await other.attach(run.workflowId);
        await watched.result(); // its replay has the request
        await assert.rejects(
          watched.respond(request.request_id, { value: "yes" }),
          (error: unknown) => error instanceof InputRejected && error.code === "input_already_answered",
        );
      } finally {
        await Promise.all([client.close(), other.close()]);
      }
    });
  }

  it("respond() re-sent after another client answered meanwhile rejects with input_already_answered", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
    const other = new GraphwireClient(WS);
    await Promise.all([client.connect(), other.connect()]);
    try {
      const run = await client.startWorkflow("approval", { message: "Who answers?", timeout: 20 });
      const request = await inputRequest(run);
      proxy.refuse(true); // no reconnect until the other client has answered
      const cut = proxy.cutBeforeClientSends('"node_input"');
      const answer = run.respond(request.request_id, { value: "yes" });
      const rejected = assert.rejects(
        answer,
        (error: unknown) => error instanceof InputRejected && error.code === "input_already_answered",
      );
      await cut;
      const from = proxy.clientFrames.length;
      const watched = await other.attach(run.workflowId);
      // The same data from another sender: that client's answer, not this one's.
      assert.equal((await watched.respond(request.request_id, { value: "yes" })).command, "node_input");
      proxy.refuse(false);
      await rejected;
      assert.equal(answersSent(proxy, from).length, 1, "the answer was sent again after the resume");
      assert.deepEqual(await run.result(), { approved: true, answer: "yes" });
    } finally {
      proxy.refuse(false);
      await Promise.all([client.close(), other.close()]);
    }
  });

  it("respond() waiting for a reconnect rejects with InputClosed when its request timed out meanwhile", async () => {
    const client = new GraphwireClient(proxy.url(), { reconnect: FAST });
    await client.connect();
    try {
      const run = await client.startWorkflow("second_chance", { timeout: 0.4 });
      const request = await inputRequest(run);
      assert.equal(run.status, "waiting");
      proxy.refuse(true); // no reconnect until the request has timed out
      const cut = proxy.cutBeforeClientSends('"node_input"');
      const answer = run.respond(request.request_id, { value: "yes" });
      const rejected = assert.rejects(
        answer,
        (error: unknown) =>
          error instanceof InputClosed && error.reason === "timeout" && error.code === "unknown_request",
      );
      await cut;
      await sleep(600);
      proxy.refuse(false);
      await rejected; // settled by the resume's replay of input_closed, not left waiting
      assert.ok(!run.pendingInputs.some((p) => p.request_id === request.request_id));
      for await (const event of run) {
        if (event.type === "input_request" && event.node_id === "again") {
          await run.respond(event.request_id, { value: "ok" });
        }
      }
      await run.result();
      assert.equal(run.events.filter((e) => e.type === "input_closed").length, 1);
    } finally {
      proxy.refuse(false);
      await client.close();
    }
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

describe("the gateway stops while a run is in flight", () => {
  it("run.result() rejects with GatewayShutdown", async () => {
    const gateway = await startGateway({});
    const client = new GraphwireClient(gateway.ws, { reconnect: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20 } });
    try {
      await client.connect();
      const run = await client.startWorkflow("approval", { message: "Still there?", timeout: 30 });
      await inputRequest(run);
      await gateway.stop(); // SIGTERM: the run gets workflow_failed, then the socket 1012
      await assert.rejects(
        run.result(),
        (error: unknown) =>
          error instanceof GatewayShutdown && error.code === "gateway_shutdown" && error.workflowId === run.workflowId,
      );
      assert.equal(run.events.at(-1)?.type, "workflow_failed");
    } finally {
      await client.close();
      await gateway.stop();
    }
  });
});
