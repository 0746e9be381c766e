/**
 * Every built-in workflow, approvals, cancel, errors, groups and topics, against a real
 * `graphwire serve`, with every inbound frame validated against the spec (ajv).
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  BUILTIN_WORKFLOWS,
  GraphwireClient,
  InputClosed,
  InputRejected,
  InvalidParams,
  type RunEvent,
  type SystemAlert,
  type TopicMessage,
  type Transport,
  UnknownRun,
  UnknownWorkflow,
  WorkflowCancelled,
  WorkflowFailed,
  type Workflows,
  webSocketTransport,
} from "@graphwire/client";

import { WS, post, sleep } from "./helpers/server.js";

/** Small params for each built-in workflow; the type makes a new workflow in the spec a compile error here. */
const PARAMS: { [W in (typeof BUILTIN_WORKFLOWS)[number]]: Workflows[W]["params"] } = {
  approval: { message: "Ship it?", timeout: 10 },
  chat: { message: "hello from node" },
  data_processing: { data: [3, 4, 5, 6] },
  ticker: { count: 5, payload_bytes: 8 },
};

function seqs(events: readonly RunEvent[]): number[] {
  return events.map((event) => event.seq);
}

function assertGapFree(events: readonly RunEvent[]): void {
  assert.deepEqual(
    seqs(events),
    events.map((_, i) => i + 1),
  );
  const terminal = events.filter((e) =>
    ["workflow_completed", "workflow_failed", "workflow_cancelled"].includes(e.type),
  );
  assert.equal(terminal.length, 1);
  assert.equal(terminal[0], events.at(-1));
}

async function collect(run: AsyncIterable<RunEvent>): Promise<RunEvent[]> {
  const events: RunEvent[] = [];
  for await (const event of run) {
    events.push(event);
  }
  return events;
}

describe("built-in workflows", () => {
  let client: GraphwireClient;
  const invalid: unknown[] = [];

  before(async () => {
    client = new GraphwireClient(WS, { validate: true });
    client.on("invalid_frame", (error) => invalid.push(error));
    const hello = await client.connect();
    assert.equal(hello.type, "connected");
    assert.equal(client.state, "connected");
  });

  after(async () => {
    await client.close();
    assert.deepEqual(invalid, [], "every frame the server sent matches the spec");
  });

  it("covers every workflow the spec lists", () => {
    assert.deepEqual(Object.keys(PARAMS).sort(), [...BUILTIN_WORKFLOWS].sort());
  });

  it("data_processing: a progress event per item, then count, sum and mean", async () => {
    const run = await client.startWorkflow("data_processing", PARAMS.data_processing);
    const events = await collect(run);
    assertGapFree(events);
    const progress = events.flatMap((e) => (e.type === "progress" ? [e.data] : []));
    assert.deepEqual(
      progress.map(({ current, total }) => [current, total]),
      [
        [1, 4],
        [2, 4],
        [3, 4],
        [4, 4],
      ],
    );
    assert.deepEqual(
      progress.map((p) => p.percent),
      [25, 50, 75, 100],
    );
    const statuses = events.flatMap((e) => (e.type === "node_update" ? [`${e.node_id} ${e.data.status}`] : []));
    for (const node of ["load", "transform", "aggregate"]) {
      assert.ok(statuses.includes(`${node} running`) && statuses.includes(`${node} completed`), statuses.join(", "));
    }
    const completed = events.at(-1);
    assert.ok(completed?.type === "workflow_completed");
    assert.deepEqual(completed.data, { count: 4, sum: 18, mean: 4.5 });
    const result = await run.result();
    assert.deepEqual(result, { count: 4, sum: 18, mean: 4.5 });
    const typed: number = result.mean; // typed from the spec's DataProcessingResult
    assert.equal(typed, 4.5);
    assert.equal(run.workflow, "data_processing");
    assert.equal(run.status, "completed");
  });

  it("chat: streams tokens that add up to the reply", async () => {
    const run = await client.startWorkflow("chat", PARAMS.chat);
    let streamed = "";
    for await (const event of run) {
      if (event.type === "token") {
        assert.equal(typeof event.data, "string");
        streamed += event.data;
      }
    }
    const { reply } = await run.result();
    assert.equal(streamed, reply);
    assert.match(reply, /hello from node/);
  });

  it("approval: answered yes through run.respond", async () => {
    const run = await client.startWorkflow("approval", PARAMS.approval);
    const events: RunEvent[] = [];
    for await (const event of run) {
      events.push(event);
      if (event.type === "input_request") {
        assert.deepEqual(event.options, ["yes", "no"]);
        assert.equal(event.prompt, "Ship it?");
        assert.equal(run.status, "waiting");
        assert.deepEqual(
          run.pendingInputs.map((p) => p.request_id),
          [event.request_id],
        );
        const ack = await run.respond(event.request_id, { value: "yes" });
        assert.equal(ack.command, "node_input");
        await assert.rejects(run.respond(event.request_id, { value: "no" }), InputRejected);
      }
    }
    assertGapFree(events);
    assert.ok(events.some((e) => e.type === "input_answered"));
    assert.deepEqual(await run.result(), { approved: true, answer: "yes" });
  });

  it("approval: answered no, and an answer outside the options is refused", async () => {
    const run = await client.startWorkflow("approval", PARAMS.approval);
    for await (const event of run) {
      if (event.type === "input_request") {
        await assert.rejects(
          run.respond(event.request_id, { value: "maybe" }),
          (error: unknown) => error instanceof InputRejected && error.code === "invalid_input",
        );
        await run.respond(event.request_id, { value: "no" });
      }
    }
    assert.deepEqual(await run.result(), { approved: false, answer: "no" });
  });

  it("approval: no answer in time fails the run with input_timeout", async () => {
    const run = await client.startWorkflow("approval", { message: "Anyone?", timeout: 0.2 });
    await assert.rejects(
      run.result(),
      (error: unknown) => error instanceof WorkflowFailed && error.code === "input_timeout",
    );
    assert.equal(run.events.at(-1)?.type, "workflow_failed");
    assert.equal(run.status, "failed");
    const closed = run.events.filter((e) => e.type === "input_closed");
    assert.deepEqual(
      closed.map((e) => e.type === "input_closed" && e.reason),
      ["timeout"],
      "the request closed before the run failed",
    );
  });

  for (const [wait, reason] of [
    [true, "timeout"],
    [false, "node_finished"],
  ] as const) {
    it(`input_closed (${reason}) drops the request; respond() to it rejects with InputClosed`, async () => {
      const run = await client.startWorkflow("second_chance", { timeout: 0.2, wait });
      let first: string | undefined;
      for await (const event of run) {
        if (event.type === "input_request" && event.node_id === "first") {
          first = event.request_id;
        } else if (event.type === "input_closed") {
          assert.equal(event.request_id, first);
          assert.equal(event.reason, reason);
          assert.ok(!run.pendingInputs.some((p) => p.request_id === first));
          await assert.rejects(
            run.respond(event.request_id, { value: "yes" }),
            (error: unknown) => error instanceof InputClosed && error.reason === reason,
          );
        } else if (event.type === "input_request") {
          assert.equal(run.status, "waiting");
          assert.deepEqual(
            run.pendingInputs.map((p) => p.request_id),
            [event.request_id],
            "only the second request is open",
          );
          await run.respond(event.request_id, { value: "ok" });
        }
      }
      assertGapFree([...run.events]);
      assert.equal(run.events.filter((e) => e.type === "input_closed").length, 1);
      assert.equal(run.status, "completed");
    });
  }

  it("ticker: node_events, then the count", async () => {
    const run = await client.startWorkflow("ticker", PARAMS.ticker);
    const events = await collect(run);
    assertGapFree(events);
    assert.equal(events.filter((e) => e.type === "node_event" && e.event === "tick").length, 5);
    assert.deepEqual(await run.result(), { count: 5 });
  });

  it("a workflow of your own, with untyped params, and one that fails", async () => {
    const tick = await client.startWorkflow("tick", { count: 3, delay_ms: 0 });
    assert.deepEqual(await tick.result(), { ticks: 3 });
    const boom = await client.startWorkflow("boom", { message: "kaput" });
    await assert.rejects(boom.result(), (error: unknown) => {
      assert.ok(error instanceof WorkflowFailed);
      assert.equal(error.code, "node_error");
      assert.match(error.message, /ValueError: kaput/);
      return true;
    });
  });

  it("cancel ends the run with workflow_cancelled", async () => {
    const run = await client.startWorkflow("tick", { count: 500, delay_ms: 10 });
    const ack = await run.cancel();
    assert.equal(ack.command, "cancel_workflow");
    await assert.rejects(run.result(), WorkflowCancelled);
    assert.equal(run.events.at(-1)?.type, "workflow_cancelled");
  });

  it("refusals are typed errors and the connection stays usable", async () => {
    await assert.rejects(client.startWorkflow("no_such_workflow", {}), UnknownWorkflow);
    const wrong = { data: "x" } as unknown as Workflows["data_processing"]["params"];
    await assert.rejects(
      client.startWorkflow("data_processing", wrong),
      (error: unknown) => error instanceof InvalidParams && error.path === "params.data",
    );
    await assert.rejects(client.attach("run_does_not_exist"), UnknownRun);
    assert.equal((await client.ping()).type, "pong");
  });

  it("the same idempotency key returns the same run", async () => {
    const first = await client.startWorkflow("chat", PARAMS.chat, { idempotencyKey: "same-key-js" });
    const second = await client.startWorkflow("chat", PARAMS.chat, { idempotencyKey: "same-key-js" });
    assert.equal(second.workflowId, first.workflowId);
    assert.deepEqual(await second.result(), await first.result());
  });

  it("groups get system_alert and topics get topic_message", async () => {
    const alerts: SystemAlert[] = [];
    const news: TopicMessage[] = [];
    client.on("system_alert", (alert) => alerts.push(alert));
    client.on("topic_message", (message) => news.push(message));
    await client.joinGroup("js-admins");
    await client.subscribe(["js-news"]);
    assert.deepEqual(await post("/api/broadcast", { group: "js-admins", message: "maintenance at 18:00" }), {
      delivered: 1,
    });
    assert.deepEqual(await post("/api/publish", { topic: "js-news", data: { headline: "v2" } }), { delivered: 1 });
    for (let i = 0; i < 50 && (alerts.length === 0 || news.length === 0); i++) {
      await sleep(20);
    }
    assert.equal(alerts[0]?.message, "maintenance at 18:00");
    assert.deepEqual(news[0]?.data, { headline: "v2" });
    await client.leaveGroup("js-admins");
    await client.unsubscribe(["js-news"]);
    assert.deepEqual(await post("/api/broadcast", { group: "js-admins", message: "gone" }), { delivered: 0 });
  });
});

/** The default transport, recording the URL it opens and every text frame the server sends. */
function recordingTransport(): { transport: Transport; urls: string[]; frames: string[] } {
  const inner = webSocketTransport();
  const urls: string[] = [];
  const frames: string[] = [];
  const transport: Transport = (url, events, options) => {
    urls.push(url);
    const message = (text: string): void => {
      frames.push(text);
      events.message(text);
    };
    return inner(url, { message, close: (code, reason) => events.close(code, reason) }, options);
  };
  return { transport, urls, frames };
}

describe("batch negotiation", () => {
  it("asks for batch frames by default (batch=1) and unpacks whatever comes", async () => {
    const wire = recordingTransport();
    const client = new GraphwireClient(WS, { transport: wire.transport, validate: true });
    await client.connect();
    assert.deepEqual(wire.urls, [`${WS}?batch=1`]);
    const run = await client.startWorkflow("ticker", { count: 100 });
    const events = await collect(run);
    assertGapFree(events);
    assert.equal(events.filter((e) => e.type === "node_event").length, 100);
    // Batched or not (that is the server's call, under load), each event reaches the run once.
    const inFrames = wire.frames.flatMap((text) => {
      const frame = JSON.parse(text) as { type: string; messages?: unknown[] };
      return frame.type === "batch" ? (frame.messages ?? []) : [frame];
    });
    const ofRun = inFrames.filter((m) => (m as { workflow_id?: string }).workflow_id === run.workflowId);
    assert.equal(ofRun.length, events.length);
    await client.close();
  });

  it("batch: false asks for none (batch=0), and no batch frame ever comes", async () => {
    const wire = recordingTransport();
    const client = new GraphwireClient(WS, { batch: false, transport: wire.transport, validate: true });
    await client.connect();
    assert.deepEqual(wire.urls, [`${WS}?batch=0`]);
    assert.match(client.url, /[?&]batch=0$/);
    const ticks = await client.startWorkflow("ticker", { count: 100 });
    assertGapFree(await collect(ticks));
    const run = await client.startWorkflow("data_processing", { data: [1, 2] });
    assertGapFree(await collect(run));
    assert.deepEqual(await run.result(), { count: 2, sum: 3, mean: 1.5 });
    const types = new Set(wire.frames.map((text) => (JSON.parse(text) as { type: string }).type));
    assert.ok(!types.has("batch"), [...types].join(", "));
    assert.ok(types.has("node_event") && types.has("progress"));
    await client.close();
  });
});
