/** Two clients on one run: one starts it, the other attaches, answers, and both see the same log. */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { GraphwireClient, InputRejected, type PendingInput, type RunEvent } from "@graphwire/client";

import { WS } from "./helpers/server.js";

/** The events as the server logged them: the starter's seq 1 also carries its `reply_to`. */
function logged(events: readonly RunEvent[]): RunEvent[] {
  return events.map((event) => {
    if (event.type === "workflow_started") {
      const { reply_to: _ignored, ...rest } = event;
      return rest;
    }
    return event;
  });
}

describe("two clients on one run", () => {
  it("an approval started by one client is answered by another", async () => {
    const starter = new GraphwireClient(WS, { validate: true });
    const approver = new GraphwireClient(WS, { validate: true });
    await Promise.all([starter.connect(), approver.connect()]);
    assert.notEqual(starter.clientId, approver.clientId);

    const run = await starter.startWorkflow("approval", { message: "Release v2?", timeout: 10 });
    let request: PendingInput | undefined;
    for await (const event of run) {
      if (event.type === "input_request") {
        request = event;
        break;
      }
    }
    assert.ok(request !== undefined);

    // The approver attaches late: the snapshot shows what waits for an answer.
    const watched = await approver.attach<{ approved: boolean; answer: string }>(run.workflowId, { sinceSeq: 0 });
    assert.equal(watched.snapshot?.status, "waiting");
    assert.deepEqual(
      watched.snapshot?.pending_inputs.map((p) => p.request_id),
      [request.request_id],
    );
    assert.deepEqual(
      watched.pendingInputs.map((p) => p.request_id),
      [request.request_id],
    );
    await watched.respond(request.request_id, { value: "yes" });
    await assert.rejects(
      run.respond(request.request_id, { value: "no" }),
      (error: unknown) => error instanceof InputRejected && error.code === "input_already_answered",
    );

    const [mine, theirs] = await Promise.all([run.result(), watched.result()]);
    assert.deepEqual(mine, { approved: true, answer: "yes" });
    assert.deepEqual(theirs, mine);
    assert.deepEqual(logged(watched.events), logged(run.events));
    assert.deepEqual(
      run.events.map((e) => e.seq),
      run.events.map((_, i) => i + 1),
    );
    await Promise.all([starter.close(), approver.close()]);
  });

  it("a late watcher from a seq gets exactly the events after it, live ones included", async () => {
    const starter = new GraphwireClient(WS);
    const watcher = new GraphwireClient(WS);
    await Promise.all([starter.connect(), watcher.connect()]);
    const run = await starter.startWorkflow("data_processing", { data: [1, 2, 3, 4, 5, 6, 7, 8], delay_ms: 15 });
    let seen = 0;
    for await (const event of run) {
      if (event.type === "progress" && event.data.current === 2) {
        seen = event.seq;
        break;
      }
    }
    const late = await watcher.attach(run.workflowId, { sinceSeq: seen });
    const events: RunEvent[] = [];
    for await (const event of late) {
      events.push(event);
    }
    await run.result();
    assert.equal(events[0]?.seq, seen + 1);
    assert.deepEqual(
      events,
      run.events.filter((e) => e.seq > seen),
    );
    assert.deepEqual(await late.result(), { count: 8, sum: 36, mean: 4.5 });
    // Attaching again on the same client reads its own log, from any seq.
    const again = await watcher.attach(run.workflowId, { sinceSeq: seen + 2 });
    assert.equal(again.events[0]?.seq, seen + 3);
    await Promise.all([starter.close(), watcher.close()]);
  });
});
