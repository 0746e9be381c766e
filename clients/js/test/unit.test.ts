/**
 * The sans-I/O parts with no server: frame decoding, the core's reply matching, seq
 * tracking, gap repair and resume plan, backoff, and the client over a fake transport.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  ClientCore,
  CommandInterrupted,
  ConnectionForbidden,
  ConnectionRejected,
  ConnectionUnauthorized,
  ERROR_CODE_VALUES,
  EventTooLarge,
  type Gap,
  GatewayShutdown,
  GraphwireClient,
  InputClosed,
  InputRejected,
  InvalidFrame,
  type PendingInput,
  type RunEvent,
  RUN_UNAVAILABLE_RETRIES,
  RunLost,
  RunState,
  RunUnavailable,
  type ServerEvent,
  ServerError,
  SocketOpenFailed,
  type StateChange,
  TokenExpired,
  TooManyRuns,
  TooManySubscriptions,
  type Transport,
  Unauthorized,
  UnknownWorkflow,
  type WorkflowCommand,
  WorkflowFailed,
  backoffDelay,
  decodeFrame,
  errorFromFrame,
  retryAfterMs,
  workflowFailedError,
} from "@graphwire/client";

import { fakeTransport } from "./helpers/fake.js";

const T = "2026-11-25T12:00:00.000000+00:00";
const WID = "run_1";

function event(seq: number, type = "progress"): RunEvent {
  if (type === "workflow_completed") {
    return { type, workflow_id: WID, seq, timestamp: T, data: { n: seq } };
  }
  return {
    type: "progress",
    workflow_id: WID,
    seq,
    timestamp: T,
    node_id: "n",
    data: { percent: 50, current: 1, total: 2 },
  };
}

/** Seq 1 of run WID, naming its log's `epoch` if given; the starter's answer with `replyTo`. */
function started(epoch?: string, replyTo?: string): RunEvent {
  return {
    type: "workflow_started",
    workflow_id: WID,
    seq: 1,
    timestamp: T,
    workflow: "approval",
    ...(epoch !== undefined && { epoch }),
    ...(replyTo !== undefined && { reply_to: replyTo }),
  };
}

const openInput = { request_id: "req_1", node_id: "approve", prompt: "Ship?", options: ["yes", "no"] };

/** The `subscribed` answer for run WID: since `since`, the run at `last`. */
function subscribed(since: number, last: number, pendingInputs: PendingInput[] = []) {
  return {
    type: "subscribed" as const,
    topics: [],
    workflow_id: WID,
    since_seq: since,
    snapshot: {
      workflow_id: WID,
      workflow: "approval",
      status: "running" as const,
      last_seq: last,
      pending_inputs: pendingInputs,
    },
  };
}

function answered(seq: number, requestId = "req_1"): RunEvent {
  return {
    type: "input_answered",
    workflow_id: WID,
    seq,
    timestamp: T,
    node_id: "approve",
    request_id: requestId,
    data: { value: "no" },
  };
}

function coreWithSink() {
  const sent: WorkflowCommand[] = [];
  const messages: ServerEvent[] = [];
  const gaps: Gap[] = [];
  const timers: Array<{ ms: number; task: () => void }> = [];
  const core = new ClientCore({
    send: (frame) => sent.push(frame),
    message: (message) => messages.push(message),
    gap: (gap) => gaps.push(gap),
    later: (ms, task) => timers.push({ ms, task }),
  });
  core.connected = true;
  return { core, sent, messages, gaps, timers };
}

function inputRequest(seq: number, requestId = "req_1"): RunEvent {
  return {
    type: "input_request",
    workflow_id: WID,
    seq,
    timestamp: T,
    node_id: "approve",
    request_id: requestId,
    prompt: "Ship?",
    options: ["yes", "no"],
  };
}

function inputClosed(seq: number, reason: "timeout" | "node_finished" = "timeout", requestId = "req_1"): RunEvent {
  return {
    type: "input_closed",
    workflow_id: WID,
    seq,
    timestamp: T,
    node_id: "approve",
    request_id: requestId,
    reason,
  };
}

/** Lets queued promise callbacks run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("decodeFrame", () => {
  it("unpacks a batch in order", () => {
    const batch = { type: "batch", messages: [event(3), event(4)] };
    assert.deepEqual(
      decodeFrame(JSON.stringify(batch)).map((m) => ("seq" in m ? m.seq : 0)),
      [3, 4],
    );
  });

  it("refuses text that is not a message", () => {
    assert.throws(() => decodeFrame("{nope"), InvalidFrame);
    assert.throws(() => decodeFrame("[1, 2]"), InvalidFrame);
    assert.throws(() => decodeFrame('{"no_type": 1}'), InvalidFrame);
  });

  it("reports the validator's problems", () => {
    assert.throws(
      () => decodeFrame(JSON.stringify(event(1)), () => ["/data/percent must be <= 100"]),
      (error: unknown) => error instanceof InvalidFrame && error.errors[0] === "/data/percent must be <= 100",
    );
  });
});

describe("errorFromFrame", () => {
  it("names a ServerError subclass for every code an error frame can carry", () => {
    // Only in workflow_failed: they become WorkflowFailed (and its subclasses), not ServerError ones.
    const runOnly = new Set(["input_timeout", "node_error", "event_too_large", "gateway_shutdown"]);
    for (const code of ERROR_CODE_VALUES) {
      const error = errorFromFrame({ type: "error", code, message: "m" });
      assert.ok(error instanceof ServerError);
      assert.equal(error.code, code);
      assert.equal(error.constructor === ServerError, runOnly.has(code), code);
    }
    assert.ok(errorFromFrame({ type: "error", code: "too_many_runs", message: "m" }) instanceof TooManyRuns);
    const subscriptions = errorFromFrame({ type: "error", code: "too_many_subscriptions", message: "m" });
    assert.ok(subscriptions instanceof TooManySubscriptions);
    assert.ok(errorFromFrame({ type: "error", code: "run_unavailable", message: "m" }) instanceof RunUnavailable);
  });

  it("names a WorkflowFailed subclass for the failures a caller acts on", () => {
    const failed = (code: "gateway_shutdown" | "event_too_large" | "node_error") =>
      workflowFailedError(WID, { code, message: "m" });
    assert.equal(failed("gateway_shutdown").constructor, GatewayShutdown);
    assert.equal(failed("event_too_large").constructor, EventTooLarge);
    assert.equal(failed("node_error").constructor, WorkflowFailed);
    assert.ok(failed("gateway_shutdown") instanceof WorkflowFailed);
    assert.equal(failed("gateway_shutdown").code, "gateway_shutdown");
  });
});

describe("backoffDelay", () => {
  it("is full jitter under an exponential, capped ceiling", () => {
    const policy = { baseDelayMs: 100, maxDelayMs: 1000 };
    assert.equal(
      backoffDelay(0, policy, () => 0.999999),
      99.9999,
    );
    assert.equal(
      backoffDelay(3, policy, () => 0.5),
      400,
    );
    assert.equal(
      backoffDelay(10, policy, () => 0.5),
      500,
    );
    assert.equal(
      backoffDelay(5000, policy, () => 0.5),
      500,
    );
    assert.equal(
      backoffDelay(2, policy, () => 0),
      0,
    );
    assert.throws(() => backoffDelay(-1, policy), RangeError);
  });

  it("adds a Retry-After floor under the jitter", () => {
    const policy = { baseDelayMs: 100, maxDelayMs: 1000 };
    assert.equal(
      backoffDelay(0, policy, () => 0, 1000),
      1000,
    );
    assert.equal(
      backoffDelay(3, policy, () => 0.5, 1000),
      1400,
    );
    assert.equal(
      backoffDelay(3, policy, () => 0.5, -5),
      400,
    );
  });

  it("reads Retry-After as delay-seconds only", () => {
    assert.equal(retryAfterMs("1"), 1000);
    assert.equal(retryAfterMs([" 3 "]), 3000);
    assert.equal(retryAfterMs("Wed, 21 Oct 2026 07:28:00 GMT"), undefined);
    assert.equal(retryAfterMs("-1"), undefined);
    assert.equal(retryAfterMs(undefined), undefined);
  });
});

describe("RunState", () => {
  it("appends the next seq, drops repeats, reports gaps", () => {
    const state = new RunState(WID);
    assert.equal(state.accept(event(1)), "new");
    assert.equal(state.accept(event(1)), "duplicate");
    assert.equal(state.accept(event(3)), "gap");
    assert.equal(state.accept(event(2)), "new");
    assert.equal(state.accept(event(3, "workflow_completed")), "new");
    assert.deepEqual(
      state.events.map((e) => e.seq),
      [1, 2, 3],
    );
    assert.equal(state.status, "completed");
    assert.deepEqual(
      state.outcome,
      { status: "completed", result: { n: 3 } },
      "the result is workflow_completed's data",
    );
  });

  it("ends a run failed by the gateway's shutdown with GatewayShutdown", () => {
    const state = new RunState(WID);
    state.accept({
      type: "workflow_failed",
      workflow_id: WID,
      seq: 1,
      timestamp: T,
      error: { code: "gateway_shutdown", message: "the gateway stopped" },
    });
    assert.ok(state.outcome?.status === "failed" && state.outcome.error instanceof GatewayShutdown);
  });

  for (const reason of ["timeout", "node_finished"] as const) {
    it(`drops a request closed unanswered (${reason}) from the open inputs: no longer waiting`, () => {
      const state = new RunState(WID);
      state.accept(event(1));
      state.accept(inputRequest(2));
      state.accept(inputRequest(3, "req_2"));
      assert.equal(state.status, "waiting");
      state.accept(inputClosed(4, reason));
      assert.deepEqual([...state.pendingInputs.keys()], ["req_2"]);
      assert.equal(state.status, "waiting");
      state.accept(inputClosed(5, reason, "req_2"));
      assert.equal(state.pendingInputs.size, 0);
      assert.equal(state.status, "running");
      assert.equal(state.closedInput("req_1")?.reason, reason);
      assert.equal(state.finished, false, "the run goes on");
    });
  }

  it("finishes from the snapshot when attached after the last event", () => {
    const state = new RunState(WID, 9);
    state.applySubscribed({
      type: "subscribed",
      topics: [],
      workflow_id: WID,
      since_seq: 9,
      snapshot: {
        workflow_id: WID,
        workflow: "boom",
        status: "failed",
        last_seq: 9,
        pending_inputs: [],
        error: { code: "node_error", message: "ValueError: kaput" },
      },
    });
    assert.equal(state.outcome?.status, "failed");
    assert.ok(state.outcome?.status === "failed" && state.outcome.error instanceof WorkflowFailed);
  });
});

describe("ClientCore", () => {
  it("matches answers by reply_to and maps error codes to classes", async () => {
    const { core, sent } = coreWithSink();
    const ping = core.command({ type: "ping" });
    const start = core.command({ type: "start_workflow", workflow: "nope" });
    assert.deepEqual(sent, [
      { type: "ping", id: ping.id },
      { type: "start_workflow", workflow: "nope", id: start.id },
    ]);
    core.receive({ type: "error", code: "unknown_workflow", message: "no workflow 'nope'", reply_to: start.id });
    core.receive({ type: "pong", reply_to: ping.id, timestamp: T });
    assert.equal((await ping.reply).type, "pong");
    await assert.rejects(start.reply, UnknownWorkflow);
    assert.equal(core.pendingCount, 0);
  });

  it("emits each run event once and repairs a gap by re-reading the log", () => {
    const { core, sent, messages } = coreWithSink();
    const start = core.command({ type: "start_workflow", workflow: "w", idempotency_key: "k" });
    core.receive({
      type: "workflow_started",
      workflow_id: WID,
      seq: 1,
      workflow: "w",
      timestamp: T,
      reply_to: start.id,
    });
    core.receive(event(2));
    core.receive(event(2));
    core.receive(event(5)); // 3 and 4 went missing
    assert.deepEqual(
      messages.map((m) => ("seq" in m ? m.seq : m.type)),
      [1, 2],
    );
    const [unsubscribe, subscribe] = sent.slice(1);
    assert.equal(unsubscribe?.type, "unsubscribe");
    assert.ok(subscribe?.type === "subscribe" && subscribe.since_seq === 2 && subscribe.workflow_id === WID);
    core.receive({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 2, reply_to: subscribe.id });
    for (const seq of [3, 4, 5]) {
      core.receive(event(seq));
    }
    assert.deepEqual(
      core.runs.get(WID)?.events.map((e) => e.seq),
      [1, 2, 3, 4, 5],
    );
  });

  it("reports seqs a truncated log can no longer give", () => {
    const { core, gaps } = coreWithSink();
    core.track(WID, 2);
    core.receive({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 2, first_seq: 6, log_truncated: true });
    assert.deepEqual(gaps, [{ workflowId: WID, fromSeq: 3, toSeq: 5 }]);
    core.receive(event(6));
    assert.equal(core.runs.get(WID)?.lastSeq, 6);
    assert.equal(core.runs.get(WID)?.recovered, false, "a server before 0.5.0 says only log_truncated");
  });

  /** A followed run at seq 3 (an input request open at 2), attached under `epoch`. */
  function attachedRun(core: ClientCore, epoch = "e1"): RunState {
    const state = core.track(WID, 0);
    core.receive({ ...subscribed(0, 3, [openInput]), epoch, recovered: true, first_seq: 1 });
    for (const frame of [event(1), inputRequest(2), event(3)]) {
      core.receive(frame);
    }
    return state;
  }

  it("names the epoch of the last subscribed when it resumes and when it resyncs", () => {
    const { core, sent } = coreWithSink();
    attachedRun(core);
    core.lost();
    core.resume();
    const resume = sent.at(-1);
    assert.ok(resume?.type === "subscribe");
    assert.deepEqual(
      { workflow_id: resume.workflow_id, since_seq: resume.since_seq, epoch: resume.epoch },
      { workflow_id: WID, since_seq: 3, epoch: "e1" },
    );
    core.receive({ ...subscribed(3, 3), reply_to: resume.id, epoch: "e1", recovered: true, first_seq: 1 });
    core.receive(event(5)); // 4 went missing
    const resync = sent.at(-1);
    assert.ok(resync?.type === "subscribe" && resync.since_seq === 3 && resync.epoch === "e1");
  });

  it("resumes a run it never got a subscribed for without an epoch", () => {
    const { core, sent } = coreWithSink();
    core.track(WID, 0).accept(event(1));
    core.lost();
    core.resume();
    const resume = sent.at(-1);
    assert.ok(resume?.type === "subscribe" && !("epoch" in resume));
  });

  it("names the epoch of a started run's workflow_started on its first resume, until a subscribed names one", () => {
    const { core, sent } = coreWithSink();
    const start = core.command({ type: "start_workflow", workflow: "approval" });
    core.receive(started("e1", start.id));
    const state = core.runs.get(WID);
    assert.equal(state?.epoch, "e1", "no subscribed yet: the start's answer names the log");
    core.lost();
    core.resume();
    const resume = sent.at(-1);
    assert.ok(resume?.type === "subscribe" && resume.since_seq === 1 && resume.epoch === "e1");
    // Redis lost the log meanwhile: the gateway answers with its new epoch and the whole
    // log, whose seq 1 still names the epoch it was first written under.
    core.receive({ ...subscribed(0, 2), reply_to: resume.id, epoch: "e2", recovered: false, first_seq: 1 });
    core.receive(started("e1"));
    core.receive(event(2));
    assert.equal(state?.epoch, "e2", "the subscribed is the newest");
    core.lost();
    core.resume();
    const next = sent.at(-1);
    assert.ok(next?.type === "subscribe" && next.epoch === "e2");
  });

  it("takes a watcher's epoch from seq 1 only when its subscribed named none", () => {
    for (const [named, kept] of [
      [undefined, "e1"],
      ["e2", "e2"],
    ] as const) {
      const { core, sent } = coreWithSink();
      const state = core.track(WID, 0);
      core.receive({ ...subscribed(0, 1), ...(named !== undefined && { epoch: named }) });
      core.receive(started("e1"));
      assert.equal(state.epoch, kept);
      core.lost();
      core.resume();
      const resume = sent.at(-1);
      assert.ok(resume?.type === "subscribe" && resume.epoch === kept);
    }
  });

  it("resumes a started run without an epoch when workflow_started names none a subscribe can carry", () => {
    for (const epoch of [undefined, "", "x".repeat(65)]) {
      const { core, sent } = coreWithSink();
      const start = core.command({ type: "start_workflow", workflow: "approval" });
      core.receive(started(epoch, start.id)); // undefined: as from a server before 0.5.0
      core.lost();
      core.resume();
      const resume = sent.at(-1);
      assert.ok(resume?.type === "subscribe" && !("epoch" in resume), `epoch ${JSON.stringify(epoch)}`);
    }
  });

  it("rebuilds a run from the snapshot and the whole replay when the log was recreated", () => {
    const { core, sent, messages, gaps } = coreWithSink();
    const state = attachedRun(core);
    assert.deepEqual([...state.pendingInputs.keys()], ["req_1"]);
    core.lost();
    core.resume();
    const resume = sent.at(-1);
    messages.length = 0;
    // Another epoch: the whole recreated log (same events, same seqs); the request was
    // answered meanwhile, as the snapshot says.
    core.receive({
      ...subscribed(0, 5),
      reply_to: resume?.id,
      epoch: "e2",
      recovered: false,
      log_truncated: false,
      first_seq: 1,
    });
    for (const frame of [event(1), inputRequest(2), event(3), answered(4), event(5)]) {
      core.receive(frame);
    }
    assert.equal(state.recovered, false);
    assert.equal(state.epoch, "e2");
    assert.deepEqual(
      state.events.map((e) => e.seq),
      [1, 2, 3, 4, 5],
      "seqs already seen are not appended twice",
    );
    assert.deepEqual(
      messages.map((m) => ("seq" in m ? m.seq : m.type)),
      ["subscribed", 4, 5],
      "nor emitted twice",
    );
    assert.equal(state.pendingInputs.size, 0);
    assert.deepEqual(gaps, [], "no seq was skipped");
    core.lost();
    core.resume();
    const next = sent.at(-1);
    assert.ok(next?.type === "subscribe" && next.epoch === "e2", "the next resume names the recreated log");
  });

  it("rebuilds the open inputs from the snapshot when a recreated log no longer reaches back", () => {
    const { core, sent, gaps } = coreWithSink();
    const state = attachedRun(core);
    core.lost();
    core.resume();
    core.receive({
      ...subscribed(0, 8),
      reply_to: sent.at(-1)?.id,
      epoch: "e2",
      recovered: false,
      log_truncated: true,
      first_seq: 7,
    });
    core.receive(event(7));
    core.receive(event(8));
    assert.deepEqual(gaps, [{ workflowId: WID, fromSeq: 4, toSeq: 6 }]);
    assert.deepEqual(
      state.events.map((e) => e.seq),
      [1, 2, 3, 7, 8],
    );
    assert.equal(state.pendingInputs.size, 0, "the snapshot's open inputs (none), not the one seen at seq 2");
    assert.equal(state.recovered, false);
  });

  it("keeps the view of a recovered resume", () => {
    const { core, sent, gaps } = coreWithSink();
    const state = attachedRun(core);
    core.lost();
    core.resume();
    core.receive({ ...subscribed(3, 4), reply_to: sent.at(-1)?.id, epoch: "e1", recovered: true, first_seq: 1 });
    core.receive(event(4));
    assert.equal(state.recovered, true);
    assert.deepEqual([...state.pendingInputs.keys()], ["req_1"], "the open input seen is kept");
    assert.deepEqual(
      state.events.map((e) => e.seq),
      [1, 2, 3, 4],
    );
    assert.deepEqual(gaps, []);
  });

  it("loses a run whose recreated log ends before the seqs this client saw", async () => {
    const { core, sent } = coreWithSink();
    const state = attachedRun(core);
    core.lost();
    core.resume();
    core.receive({ ...subscribed(0, 2), reply_to: sent.at(-1)?.id, epoch: "e2", recovered: false, first_seq: 1 });
    assert.ok(state.outcome?.status === "lost" && state.outcome.error instanceof RunLost);
    assert.equal(core.runs.has(WID), false);
  });

  it("sends an answer the owner did not confirm again, the same frame, then settles with its ack", async () => {
    const { core, sent, timers } = coreWithSink();
    core.track(WID, 0).accept(event(1));
    const answer = core.command({
      type: "node_input",
      workflow_id: WID,
      node_id: "approve",
      request_id: "req_1",
      data: { value: "yes" },
      idempotency_key: "answer-9",
    });
    const first = sent.at(-1);
    core.receive({ type: "error", code: "run_unavailable", message: "no answer", reply_to: first?.id });
    assert.deepEqual(
      timers.map((t) => t.ms),
      [1000],
      "the default wait: the frame names no retry_after",
    );
    timers.shift()?.task();
    assert.deepEqual(sent.at(-1), first, "same id, same idempotency_key");
    core.receive({ type: "ack", reply_to: first?.id, command: "node_input", workflow_id: WID });
    assert.equal((await answer.reply).type, "ack");
  });

  it("rejects with RunUnavailable after the retries, and a cancel at once", async () => {
    const { core, sent, timers } = coreWithSink();
    const answer = core.command({
      type: "node_input",
      workflow_id: WID,
      node_id: "approve",
      data: { value: "yes" },
      idempotency_key: "answer-10",
    });
    const id = sent.at(-1)?.id;
    for (let i = 0; i < RUN_UNAVAILABLE_RETRIES; i++) {
      core.receive({ type: "error", code: "run_unavailable", message: "no answer", reply_to: id });
      timers.shift()?.task();
    }
    assert.equal(sent.filter((f) => f.type === "node_input").length, RUN_UNAVAILABLE_RETRIES + 1);
    core.receive({ type: "error", code: "run_unavailable", message: "no answer", reply_to: id, workflow_id: WID });
    await assert.rejects(
      answer.reply,
      (error: unknown) =>
        error instanceof RunUnavailable && error.code === "run_unavailable" && error.workflowId === WID,
    );
    const cancel = core.command({ type: "cancel_workflow", workflow_id: WID });
    core.receive({ type: "error", code: "run_unavailable", message: "no answer", reply_to: cancel.id });
    await assert.rejects(cancel.reply, RunUnavailable);
    assert.equal(timers.length, 0, "a cancel is not sent again");
  });

  it("retries a resume that finds the run unavailable instead of losing the run", () => {
    const { core, sent, timers } = coreWithSink();
    const state = attachedRun(core);
    core.lost();
    core.resume();
    const resume = sent.at(-1);
    core.receive({ type: "error", code: "run_unavailable", message: "no answer", reply_to: resume?.id });
    timers.shift()?.task();
    assert.deepEqual(sent.at(-1), resume);
    assert.equal(state.finished, false);
  });

  it("after a drop, resends what is safe, fails what is not, and resumes open runs", async () => {
    const { core, sent } = coreWithSink();
    core.groups.add("admins");
    const run = core.track(WID, 0);
    run.accept(event(1));
    run.accept(event(2));
    const answer = core.command({ type: "node_input", workflow_id: WID, node_id: "n", data: { value: "yes" } });
    const start = core.command({ type: "start_workflow", workflow: "w", idempotency_key: "k" });
    sent.length = 0;
    core.lost();
    await assert.rejects(answer.reply, CommandInterrupted);
    const queued = core.command({ type: "ping" });
    assert.equal(sent.length, 0, "nothing is written while disconnected");
    core.resume();
    assert.deepEqual(
      sent.map((frame) => frame.type),
      ["join_group", "subscribe", "start_workflow", "ping"],
    );
    const resume = sent[1];
    assert.ok(resume?.type === "subscribe" && resume.since_seq === 2);
    assert.ok(sent[2]?.type === "start_workflow" && sent[2].id === start.id && sent[2].idempotency_key === "k");
    assert.equal(sent[3]?.id, queued.id);
  });

  it("keeps an answer with an idempotency_key across a drop and sends it again, identical, after the resume", async () => {
    const { core, sent } = coreWithSink();
    core.track(WID, 0).accept(event(1));
    const frame: WorkflowCommand = {
      type: "node_input",
      workflow_id: WID,
      node_id: "n",
      request_id: "req_1",
      data: { value: "yes" },
      idempotency_key: "answer-1",
    };
    const answer = core.command(frame);
    const first = sent.at(-1);
    core.lost();
    core.resume();
    assert.deepEqual(
      sent.slice(1).map((f) => f.type),
      ["subscribe", "node_input"],
      "the run is resumed first",
    );
    assert.deepEqual(sent.at(-1), first);
    core.receive({ type: "ack", reply_to: answer.id, command: "node_input", workflow_id: WID });
    assert.equal((await answer.reply).type, "ack");
    assert.equal(core.pendingCount, 1, "only the resume's subscribe waits");
  });

  it("settles an answer waiting across a drop with InputClosed when the replay closes its request", async () => {
    const { core, sent, messages } = coreWithSink();
    const state = core.track(WID, 0);
    state.accept(event(1));
    state.accept(inputRequest(2));
    const answer = core.command({
      type: "node_input",
      workflow_id: WID,
      node_id: "approve",
      request_id: "req_1",
      data: { value: "yes" },
      idempotency_key: "answer-1",
    });
    const first = sent.at(-1);
    core.lost();
    core.resume();
    const [resubscribe, repeat] = sent.slice(-2);
    assert.deepEqual(repeat, first, "sent again after the resume");
    core.receive({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 2, reply_to: resubscribe?.id });
    core.receive(inputClosed(3));
    await assert.rejects(
      answer.reply,
      (error: unknown) =>
        error instanceof InputClosed &&
        error instanceof InputRejected &&
        error.code === "unknown_request" &&
        error.requestId === "req_1" &&
        error.reason === "timeout" &&
        error.workflowId === WID,
    );
    assert.equal(state.status, "running");
    // The gateway's refusal of the re-sent copy is no stray error for on("error") handlers.
    messages.length = 0;
    core.receive({ type: "error", code: "unknown_request", message: "closed", reply_to: repeat?.id });
    assert.deepEqual(messages, []);
    assert.equal(core.pendingCount, 0);
  });

  it("settles an answer waiting for a rate-limit retry, and never sends it again", async () => {
    const { core, sent, timers } = coreWithSink();
    core.track(WID, 0).accept(event(1));
    const answer = core.command({
      type: "node_input",
      workflow_id: WID,
      node_id: "approve",
      request_id: "req_1",
      data: { value: "yes" },
      idempotency_key: "answer-2",
    });
    const first = sent.at(-1);
    core.receive({ type: "error", code: "rate_limited", message: "slow", retry_after: 5, reply_to: first?.id });
    core.receive(inputClosed(2, "node_finished"));
    await assert.rejects(
      answer.reply,
      (error: unknown) => error instanceof InputClosed && error.reason === "node_finished",
    );
    const count = sent.length;
    for (const timer of timers) {
      timer.task();
    }
    assert.equal(sent.length, count, "the retry does not go");
  });

  it("leaves answers to other requests alone", async () => {
    const { core, sent } = coreWithSink();
    core.track(WID, 0).accept(event(1));
    const other = core.command({
      type: "node_input",
      workflow_id: WID,
      node_id: "approve",
      request_id: "req_2",
      data: { value: "yes" },
      idempotency_key: "answer-3",
    });
    core.receive(inputClosed(2));
    core.receive({ type: "ack", reply_to: sent.at(-1)?.id, command: "node_input", workflow_id: WID });
    assert.equal((await other.reply).type, "ack");
  });

  it("fails a run the server forgot when resuming", async () => {
    const { core, sent } = coreWithSink();
    const state = core.track(WID, 0);
    state.accept(event(1));
    core.lost();
    core.resume();
    const subscribe = sent.at(-1);
    core.receive({ type: "error", code: "unknown_run", message: "no run", reply_to: subscribe?.id });
    await settle();
    assert.equal(state.outcome?.status, "lost");
  });
});

describe("GraphwireClient over a fake transport", () => {
  it("validates inbound frames when asked and drops invalid ones", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport, validate: true });
    const invalid: InvalidFrame[] = [];
    client.on("invalid_frame", (error) => invalid.push(error));
    await client.connect();
    const pong = client.ping();
    await settle();
    const id = fake.sent[0]?.id;
    fake.push({ type: "pong", reply_to: id, timestamp: "yesterday" }); // not a date-time
    fake.push({ type: "pong", reply_to: id, timestamp: T, extra: true }); // closed schema
    fake.push({ type: "pong", reply_to: id, timestamp: T });
    assert.equal((await pong).timestamp, T);
    assert.equal(invalid.length, 2);
    assert.match(invalid[0]?.message ?? "", /date-time/);
    await client.close();
  });

  it("reads node payloads from data; the 0.1 flat shapes are invalid frames", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport, validate: true });
    const invalid: InvalidFrame[] = [];
    client.on("invalid_frame", (error) => invalid.push(error));
    const tokens: string[] = [];
    client.on("token", (token) => tokens.push(token.data));
    await client.connect();
    const attach = client.attach<{ reply: string }>(WID);
    await settle();
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    const base = { workflow_id: WID, timestamp: T, node_id: "respond" };
    fake.push({ ...base, type: "token", seq: 1, token: "old " }); // 0.1: the text beside data
    fake.push({ ...base, type: "token", seq: 1, data: "Hello " });
    fake.push({ ...base, type: "node_update", seq: 2, status: "running" }); // 0.1: flat
    fake.push({ ...base, type: "node_update", seq: 2, data: { status: "running" } });
    fake.push({ ...base, type: "progress", seq: 3, data: { percent: 50, current: 1, total: 2 } });
    fake.push({ type: "batch", messages: [{ ...base, type: "token", seq: 4, data: "world" }] });
    fake.push({ type: "workflow_completed", workflow_id: WID, seq: 5, timestamp: T, result: { reply: "old" } });
    fake.push({ type: "workflow_completed", workflow_id: WID, seq: 5, timestamp: T, data: { reply: "Hello world" } });
    assert.deepEqual(await run.result(), { reply: "Hello world" });
    assert.deepEqual(tokens, ["Hello ", "world"]);
    assert.deepEqual(
      run.events.map((event) => event.type),
      ["token", "node_update", "progress", "token", "workflow_completed"],
    );
    const progress = run.events[2];
    assert.ok(progress?.type === "progress" && progress.data.current === 1 && progress.data.total === 2);
    assert.equal(invalid.length, 3);
    await client.close();
  });

  it("refuses a command larger than the server's max_message_size", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    await client.connect();
    await assert.rejects(client.startWorkflow("chat", { message: "x".repeat(2000) }), /max_message_size/);
    await client.close();
  });

  it("treats close 4001 as final: no reconnect, runs fail with Unauthorized", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    const states: StateChange[] = [];
    client.on("state", (change) => states.push(change));
    await client.connect();
    const attach = client.attach(WID);
    await settle();
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    const answer = run.respond("req_1", { value: "yes" }, { nodeId: "approve" });
    const ping = client.ping();
    fake.drop(4001, "bad signature");
    // The answer would be sent again on the next connection; there is none.
    await assert.rejects(answer, Unauthorized);
    await assert.rejects(
      ping,
      (error: unknown) =>
        error instanceof ConnectionUnauthorized &&
        error instanceof Unauthorized &&
        error instanceof ConnectionRejected &&
        error.closeCode === 4001 &&
        error.code === "unauthorized" &&
        error.reason === "bad signature",
    );
    await assert.rejects(run.result(), Unauthorized);
    assert.deepEqual(
      states.map((s) => s.newState),
      ["connecting", "connected", "disconnected"],
    );
    assert.ok(states.at(-1)?.error instanceof Unauthorized);
    await client.close();
  });

  const refusals: Array<[number, new (...args: never[]) => Error]> = [
    [4001, ConnectionUnauthorized],
    [4003, ConnectionForbidden],
    [4002, TokenExpired], // with a static token: no fresh one to be had
    [1008, ConnectionRejected],
    [1009, ConnectionRejected],
  ];
  for (const [code, Refusal] of refusals) {
    it(`connect() stops at once on close ${code} before the greeting: ${Refusal.name}, no retry`, async () => {
      let attempts = 0;
      const transport: Transport = async (_url, events) => {
        attempts++;
        setImmediate(() => events.close(code, "refused"));
        return { send: () => {}, close: async () => {} };
      };
      const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
        transport,
        token: "a.b.c",
        reconnect: { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 1 },
      });
      const states: StateChange[] = [];
      client.on("state", (change) => states.push(change));
      await assert.rejects(
        client.connect(),
        (error: unknown) =>
          error instanceof ConnectionRejected && error.constructor === Refusal && error.closeCode === code,
      );
      await settle();
      assert.equal(attempts, 1);
      assert.deepEqual(
        states.map((s) => [s.newState, s.attempt]),
        [
          ["connecting", 0],
          ["disconnected", 1],
        ],
      );
      assert.ok(states.at(-1)?.error instanceof Refusal);
      await client.close();
    });
  }

  it("connect() retries a failed first attempt, then resolves with the greeting", async () => {
    const fake = fakeTransport();
    let attempts = 0;
    const transport: Transport = async (url, events, options) => {
      attempts++;
      if (attempts < 3) {
        throw new SocketOpenFailed(url, 1006, "connection refused");
      }
      return fake.transport(url, events, options);
    };
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      transport,
      reconnect: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    });
    assert.equal((await client.connect()).client_id, "cl_1");
    assert.equal(attempts, 3);
    assert.equal(client.state, "connected");
    await client.close();
  });

  it("respond() sends one idempotency_key, again after a drop, and settles once with the ack", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      transport: fake.transport,
      reconnect: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    });
    await client.connect();
    const attach = client.attach(WID);
    await settle();
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    let settled = 0;
    const answer = run.respond("req_1", { value: "yes" }, { nodeId: "approve" }).finally(() => settled++);
    await settle();
    const first = fake.sent.at(-1);
    assert.ok(first?.type === "node_input" && typeof first.idempotency_key === "string");
    fake.drop(1006);
    while (fake.sent.filter((f) => f.type === "node_input").length < 2) {
      await settle();
    }
    assert.deepEqual(fake.sent.at(-1), first, "the identical frame");
    assert.equal(settled, 0, "not settled by the drop");
    fake.push({ type: "ack", reply_to: first.id, command: "node_input", workflow_id: WID });
    assert.equal((await answer).reply_to, first.id);
    await settle();
    assert.equal(settled, 1);
    const again = run.respond("req_1", { value: "yes" }, { nodeId: "approve" });
    await settle();
    const second = fake.sent.at(-1);
    assert.ok(second?.type === "node_input" && second.idempotency_key !== first.idempotency_key, "one key per call");
    fake.push({ type: "error", code: "input_already_answered", message: "answered", reply_to: second.id });
    await assert.rejects(again, InputRejected);
    await client.close();
  });

  it("names the epoch of a started run's workflow_started on its first resume", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      transport: fake.transport,
      reconnect: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    });
    await client.connect();
    const starting = client.startWorkflow("approval", { message: "ok?" });
    await settle();
    const start = fake.sent[0];
    assert.ok(start?.type === "start_workflow");
    fake.push(started("e1", start.id));
    const run = await starting;
    fake.push(inputRequest(2));
    fake.drop(1006);
    while (fake.sent.length < 2) {
      await settle();
    }
    const resume = fake.sent[1];
    assert.ok(resume?.type === "subscribe" && resume.since_seq === 2 && resume.epoch === "e1");
    fake.push({ ...subscribed(2, 2, [openInput]), reply_to: resume.id, epoch: "e1", recovered: true, first_seq: 1 });
    assert.equal(run.recovered, true, "the same log: the replay continues the view");
    await client.close();
  });

  it("resumes naming the epoch; a recreated log leaves run.recovered false and the view rebuilt", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      transport: fake.transport,
      reconnect: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
    });
    await client.connect();
    const attach = client.attach(WID);
    await settle();
    const first = fake.sent[0];
    assert.ok(first?.type === "subscribe" && !("epoch" in first));
    fake.push({ ...subscribed(0, 2, [openInput]), reply_to: first.id, epoch: "e1", recovered: true, first_seq: 1 });
    const run = await attach;
    fake.push(event(1));
    fake.push(inputRequest(2));
    assert.equal(run.recovered, true);
    fake.drop(1006);
    while (fake.sent.length < 2) {
      await settle();
    }
    const resume = fake.sent[1];
    assert.ok(resume?.type === "subscribe" && resume.since_seq === 2 && resume.epoch === "e1");
    fake.push({
      ...subscribed(0, 4),
      reply_to: resume.id,
      epoch: "e2",
      recovered: false,
      log_truncated: false,
      first_seq: 1,
    });
    for (const frame of [event(1), inputRequest(2), answered(3), event(4)]) {
      fake.push(frame);
    }
    assert.equal(run.recovered, false);
    assert.deepEqual(run.pendingInputs, []);
    assert.deepEqual(
      run.events.map((e) => e.seq),
      [1, 2, 3, 4],
    );
    await client.close();
  });

  it("ends run.result() with GatewayShutdown when the gateway stopped during the run", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    await client.connect();
    const attach = client.attach(WID);
    await settle();
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    const error = { code: "gateway_shutdown", message: "the gateway stopped while the run was in flight" };
    fake.push({ type: "workflow_failed", workflow_id: WID, seq: 1, timestamp: T, error });
    fake.drop(1012);
    await assert.rejects(
      run.result(),
      (failure: unknown) => failure instanceof GatewayShutdown && failure.workflowId === WID,
    );
    await client.close();
  });

  it("rejects respond() to a request this client saw closed at once, without a frame", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    await client.connect();
    const attach = client.attach(WID);
    await settle();
    fake.push({ type: "subscribed", topics: [], workflow_id: WID, since_seq: 0, reply_to: fake.sent[0]?.id });
    const run = await attach;
    fake.push(event(1));
    fake.push(inputRequest(2));
    assert.equal(run.status, "waiting");
    assert.deepEqual(
      run.pendingInputs.map((p) => p.request_id),
      ["req_1"],
    );
    fake.push(inputClosed(3));
    assert.equal(run.status, "running");
    assert.deepEqual(run.pendingInputs, []);
    const count = fake.sent.length;
    await assert.rejects(
      run.respond("req_1", { value: "yes" }),
      (error: unknown) => error instanceof InputClosed && error.reason === "timeout",
    );
    assert.equal(fake.sent.length, count);
    await client.close();
  });

  it("maps refused answers to InputRejected", async () => {
    const fake = fakeTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    await client.connect();
    const answer = client.commands.nodeInput({ workflow_id: WID, node_id: "n", data: { value: "yes" } });
    await settle();
    fake.push({ type: "error", code: "input_already_answered", message: "answered", reply_to: fake.sent[0]?.id });
    await assert.rejects(
      answer,
      (error: unknown) => error instanceof InputRejected && error.code === "input_already_answered",
    );
    await client.close();
  });
});

describe("the default transport", () => {
  /** A WebSocket class that records how it was built and fails to open. */
  function recordingWebSocket(calls: unknown[][]) {
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

  it("sends the token as a Bearer header with a WebSocket class that takes headers", async () => {
    const calls: unknown[][] = [];
    const client = new GraphwireClient("ws://gateway.test/ws/workflow?x=1", {
      token: "h.p.s",
      batch: false,
      WebSocket: recordingWebSocket(calls),
      reconnect: false,
    });
    await assert.rejects(
      client.connect(),
      (error: unknown) => error instanceof SocketOpenFailed && error.closeCode === 1006,
    );
    assert.equal(client.state, "disconnected");
    assert.deepEqual(calls, [
      ["ws://gateway.test/ws/workflow?x=1&batch=0", [], { headers: { Authorization: "Bearer h.p.s" } }],
    ]);
    await client.close();
  });

  it("reads the status and Retry-After of a refused handshake where ws shows them", async () => {
    class Refused {
      readyState = 0;
      onopen: (() => void) | null = null;
      onmessage: ((event: { data: unknown }) => void) | null = null;
      onerror: (() => void) | null = null;
      onclose: ((event: { code: number; reason: string }) => void) | null = null;
      private listener: ((request: unknown, response: object) => void) | undefined;
      constructor() {
        setImmediate(() => this.listener?.({}, { statusCode: 503, headers: { "retry-after": "1" } }));
      }
      on(_event: string, listener: (request: unknown, response: object) => void): this {
        this.listener = listener;
        return this;
      }
      terminate(): void {
        setImmediate(() => this.onclose?.({ code: 1006, reason: "" }));
      }
      send(): void {}
      close(): void {}
    }
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { WebSocket: Refused, reconnect: false });
    await assert.rejects(
      client.connect(),
      (error: unknown) => error instanceof SocketOpenFailed && error.status === 503 && error.retryAfterMs === 1000,
    );
    await client.close();
  });

  it("sends no credentials without a token, and asks for batches by default", async () => {
    const calls: unknown[][] = [];
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      WebSocket: recordingWebSocket(calls),
      reconnect: false, // one attempt: connect() rejects with its error
    });
    await assert.rejects(client.connect(), SocketOpenFailed);
    assert.deepEqual(calls, [["ws://gateway.test/ws/workflow?batch=1"]]);
    await client.close();
  });
});

describe("batch negotiation", () => {
  const url = (address: string, batch?: boolean): string =>
    new GraphwireClient(address, batch === undefined ? {} : { batch }).url;

  it("asks for batch frames by default (batch=1), keeping the other query parameters as they are", () => {
    assert.equal(url("ws://gateway.test/ws/workflow"), "ws://gateway.test/ws/workflow?batch=1");
    assert.equal(url("ws://gateway.test/ws/workflow", true), "ws://gateway.test/ws/workflow?batch=1");
    assert.equal(
      url("wss://gateway.test/ws/workflow?token=a%2Fb.c&tag=x+y&tag=z"),
      "wss://gateway.test/ws/workflow?token=a%2Fb.c&tag=x+y&tag=z&batch=1",
    );
  });

  it("does not ask with batch: false (batch=0), whatever the URL said", () => {
    for (const address of ["ws://gateway.test/ws/workflow", "ws://gateway.test/ws/workflow?batch=1"]) {
      assert.equal(url(address, false), "ws://gateway.test/ws/workflow?batch=0");
    }
    assert.equal(
      url("ws://gateway.test/ws/workflow?x=1&batch=1&y=2", false),
      "ws://gateway.test/ws/workflow?x=1&y=2&batch=0",
    );
  });

  it("lets the option decide, as the Python SDK: a batch parameter in the URL is replaced", () => {
    assert.equal(url("ws://gateway.test/ws/workflow?batch=0"), "ws://gateway.test/ws/workflow?batch=1");
    assert.equal(url("ws://gateway.test/ws/workflow?batch=0&batch=1", false), "ws://gateway.test/ws/workflow?batch=0");
  });
});
