/**
 * The offline mailbox and `run_resumed`, with no server: the core's mailbox state, and the
 * client over a fake transport that hands over the `client_id` asked for. Typed `mail`
 * (alerts, input requests, direct messages), one coalesced `ack_mail` once the handlers
 * have it, repeats after a reconnect skipped, an ack lost with the socket or refused with
 * `mailbox_unavailable` sent again, `?client_id=` on every reconnect, and `run_resumed` as
 * a typed, non-terminal run event.
 */

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  type AckMail,
  ClientCore,
  type Connected,
  GraphwireClient,
  MAIL_ACK_DELAY_MS,
  type Mail,
  MailboxState,
  RUN_UNAVAILABLE_RETRIES,
  type RunEvent,
  type RunResumed,
  type ServerEvent,
  type SocketEvents,
  type Transport,
  type WorkflowCommand,
  isRepeatable,
} from "@graphwire/client";

const T = "2026-11-25T12:00:00.000000+00:00";
const CLIENT_ID = "cl_0123456789abcdef";
const HELLO: Connected = { type: "connected", client_id: CLIENT_ID, protocol_version: "1", max_message_size: 4096 };

const settle = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function alert(seq: number, text = "Disk almost full"): Mail {
  return {
    type: "mail",
    mail_seq: seq,
    sent_at: T,
    message: { type: "system_alert", group: "ops", message: text, level: "warning", timestamp: T },
  };
}

function direct(seq: number, data = { text: "hi" }, sender?: string): Mail {
  return {
    type: "mail",
    mail_seq: seq,
    sent_at: T,
    message: { type: "direct_message", data, ...(sender !== undefined && { sender }) },
  };
}

function asked(seq: number): Mail {
  return {
    type: "mail",
    mail_seq: seq,
    sent_at: T,
    message: {
      type: "input_request",
      workflow_id: "run_9",
      seq: 4,
      timestamp: T,
      node_id: "approve",
      request_id: "req_9",
      prompt: "Ship?",
      options: ["yes", "no"],
    },
  };
}

function ackOf(id: string | undefined): ServerEvent {
  return { type: "ack", reply_to: id ?? "?", command: "ack_mail" };
}

/** What the application would do with a mail: read it by its kind (the type narrows on `message.type`). */
function describeMail(mail: Mail): string {
  const message = mail.message;
  switch (message.type) {
    case "system_alert":
      return `alert ${message.group}: ${message.message}`;
    case "input_request":
      return `input ${message.workflow_id}/${message.request_id}: ${message.prompt}`;
    case "direct_message":
      return `direct from ${message.sender ?? "?"}: ${JSON.stringify(message.data)}`;
  }
}

function coreWithSink() {
  const sent: WorkflowCommand[] = [];
  const messages: ServerEvent[] = [];
  const timers: Array<{ ms: number; task: () => void }> = [];
  const core = new ClientCore({
    send: (frame) => sent.push(frame),
    message: (message) => messages.push(message),
    gap: () => {},
    later: (ms, task) => timers.push({ ms, task }),
  });
  core.receive(HELLO);
  core.resume();
  return { core, sent, messages, timers };
}

/** Feed mail to the core and hand every mail it delivers to the application. */
function handOut(core: ClientCore, messages: ServerEvent[], ...mails: Mail[]): void {
  const before = messages.length;
  for (const mail of mails) {
    core.receive(mail);
  }
  for (const message of messages.slice(before)) {
    if (message.type === "mail") {
      core.handedOut(message);
    }
  }
}

function acks(sent: WorkflowCommand[]): AckMail[] {
  return sent.filter((frame): frame is AckMail => frame.type === "ack_mail");
}

describe("ClientCore: the mailbox", () => {
  it("delivers mail typed, narrowing on message.type", () => {
    const { core, messages } = coreWithSink();
    core.receive(alert(1));
    core.receive(asked(2));
    core.receive(direct(3, { text: "hi" }, "admin"));
    const mails = messages.filter((m): m is Mail => m.type === "mail");
    assert.deepEqual(mails.map(describeMail), [
      "alert ops: Disk almost full",
      "input run_9/req_9: Ship?",
      'direct from admin: {"text":"hi"}',
    ]);
  });

  it("sends one ack_mail for a burst; the next waits for its answer", async () => {
    const { core, sent, messages } = coreWithSink();
    handOut(core, messages, alert(1), alert(2), alert(3));
    const acking = core.ackMail();
    assert.ok(acking !== undefined);
    assert.equal(core.ackMail(), acking, "no second ack_mail while one is on the wire");
    handOut(core, messages, alert(4), direct(5));
    const [first] = acks(sent);
    assert.deepEqual(acks(sent), [{ type: "ack_mail", up_to: 3, id: first?.id }]);
    core.receive(ackOf(first?.id));
    await settle();
    const second = acks(sent)[1];
    assert.equal(second?.up_to, 5, "its answer sends the one for what came meanwhile");
    core.receive(ackOf(second?.id));
    await settle();
    assert.equal(acks(sent).length, 2);
    assert.equal(core.ackMail(), undefined, "nothing left to acknowledge");
  });

  it("acknowledges nothing before the application has it, and never past a mail it has not", () => {
    const { core, sent, messages } = coreWithSink();
    core.receive(alert(1));
    core.receive(alert(2));
    const [one, two] = messages.filter((m): m is Mail => m.type === "mail");
    assert.equal(core.ackMail(), undefined);
    core.handedOut(two as Mail);
    assert.equal(core.ackMail(), undefined, "mail 1 is not handed out yet: acking 2 would remove it");
    core.handedOut(one as Mail);
    core.ackMail();
    assert.equal(acks(sent)[0]?.up_to, 2);
  });

  it("skips a mail_seq delivered again after a reconnect", () => {
    const { core, messages } = coreWithSink();
    handOut(core, messages, alert(1), alert(2));
    core.lost(); // before any ack: the server delivers 1 and 2 again
    core.receive(HELLO);
    core.resume();
    const before = messages.length;
    handOut(core, messages, alert(1), alert(2), direct(3));
    assert.deepEqual(
      messages.slice(before).map((m) => (m.type === "mail" ? m.mail_seq : m.type)),
      [3],
    );
  });

  it("sends an ack lost with the socket again after the reconnect, and an answered one not", async () => {
    const { core, sent, messages } = coreWithSink();
    handOut(core, messages, alert(1), alert(2));
    core.ackMail();
    assert.equal(acks(sent).length, 1);
    core.lost();
    core.receive(HELLO);
    core.resume();
    const again = acks(sent)[1];
    assert.equal(again?.up_to, 2);
    core.receive(ackOf(again?.id));
    await settle();
    core.lost();
    core.receive(HELLO);
    core.resume();
    assert.equal(acks(sent).length, 2);
  });

  it("sends the same ack_mail again on mailbox_unavailable, then after the reconnect", async () => {
    assert.ok(isRepeatable({ type: "ack_mail", up_to: 1 }));
    const { core, sent, messages, timers } = coreWithSink();
    handOut(core, messages, alert(1));
    core.ackMail();
    const first = acks(sent)[0];
    for (let retry = 0; retry < RUN_UNAVAILABLE_RETRIES; retry++) {
      core.receive({ type: "error", code: "mailbox_unavailable", message: "m", reply_to: first?.id, retry_after: 0.5 });
      assert.equal(timers.at(-1)?.ms, 500);
      timers.at(-1)?.task();
      assert.deepEqual(acks(sent).at(-1), first, "the same frame again");
    }
    assert.equal(acks(sent).length, 1 + RUN_UNAVAILABLE_RETRIES);
    core.receive({ type: "error", code: "mailbox_unavailable", message: "m", reply_to: first?.id });
    await settle();
    core.lost();
    core.receive(HELLO);
    core.resume();
    assert.equal(acks(sent).at(-1)?.up_to, 1);
    assert.equal(acks(sent).length, 2 + RUN_UNAVAILABLE_RETRIES);
  });

  it("resumes the first client id it was given, or the caller's", () => {
    const sink = { send: () => {}, message: () => {}, gap: () => {}, later: () => {} };
    const core = new ClientCore(sink);
    assert.equal(core.resumeClientId, undefined);
    core.receive({ ...HELLO, client_id: "cl_1" });
    core.receive({ ...HELLO, client_id: "cl_2" });
    assert.equal(core.resumeClientId, "cl_1", "kept for the life of the client");
    assert.equal(new ClientCore(sink, CLIENT_ID).resumeClientId, CLIENT_ID);
  });

  it("keeps one mailbox per user across client ids, and a new one for a new client id without auth", () => {
    const { core, messages } = coreWithSink();
    const seqs = (): number[] => messages.flatMap((m) => (m.type === "mail" ? [m.mail_seq] : []));
    core.lost();
    core.receive({ ...HELLO, client_id: "cl_1", user: "alice" });
    handOut(core, messages, alert(1));
    core.lost();
    core.receive({ ...HELLO, client_id: "cl_2", user: "alice" });
    handOut(core, messages, alert(1), alert(2));
    core.lost();
    core.receive({ ...HELLO, client_id: "cl_3" });
    handOut(core, messages, alert(1));
    assert.deepEqual(seqs(), [1, 2, 1]);
  });

  it("takes a mailbox the server recreated from its first seq again", () => {
    const box = new MailboxState("cl_1");
    for (const seq of [1, 2, 3]) {
      assert.ok(box.receive(seq));
      box.handedOut(seq, box.generation);
    }
    box.acked = 3; // the server confirmed: it never sends 1..3 again
    assert.ok(box.receive(1), "a confirmed seq coming back is a new mailbox's mail");
    assert.deepEqual([box.seen, box.handled, box.generation], [1, 0, 1]);
    box.handedOut(2, 0); // a mail of the old mailbox handed out late changes nothing
    assert.equal(box.handled, 0);
  });
});

/**
 * A transport whose sockets the test drives. Each greets with the `client_id` it was asked
 * for (as the gateway hands it over), else `CLIENT_ID`; `waiting[n]` is what the n-th
 * socket sends right after the greeting. It records every URL and every frame written.
 */
function mailTransport(...waiting: Mail[][]) {
  const urls: string[] = [];
  const sent: WorkflowCommand[] = [];
  const sockets: SocketEvents[] = [];
  const transport: Transport = async (url, events) => {
    urls.push(url);
    sockets.push(events);
    const askedFor = new URL(url).searchParams.get("client_id");
    const greeting: Connected = { ...HELLO, client_id: askedFor ?? CLIENT_ID, resumed: askedFor !== null };
    const mail = waiting.shift() ?? [];
    setImmediate(() => events.message(JSON.stringify({ type: "batch", messages: [greeting, ...mail] })));
    return { send: (text) => sent.push(JSON.parse(text) as WorkflowCommand), close: async () => {} };
  };
  return {
    transport,
    urls,
    sent,
    push: (frame: object) => sockets.at(-1)?.message(JSON.stringify(frame)),
    drop: () => sockets.at(-1)?.close(1006, "test"),
    /** Answers every ack_mail written so far that got no answer. */
    answerAcks(): void {
      for (const frame of sent.splice(0)) {
        if (frame.type === "ack_mail") {
          sockets.at(-1)?.message(JSON.stringify(ackOf(frame.id)));
        }
      }
    },
  };
}

const FAST = { maxAttempts: 5, baseDelayMs: 1, maxDelayMs: 5 };

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${what}`);
    }
    await sleep(5);
  }
}

describe("GraphwireClient: mail", () => {
  it("hands waiting mail to on('mail') typed and acknowledges the burst with one ack_mail", async () => {
    const fake = mailTransport([alert(1), asked(2), direct(3)]);
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    const seen: string[] = [];
    client.on("mail", (mail) => {
      seen.push(describeMail(mail));
    });
    await client.connect();
    await until(() => acks(fake.sent).length > 0, "an ack_mail");
    assert.deepEqual(seen, ["alert ops: Disk almost full", "input run_9/req_9: Ship?", 'direct from ?: {"text":"hi"}']);
    assert.deepEqual(
      acks(fake.sent).map((a) => a.up_to),
      [3],
    );
    fake.answerAcks();
    await sleep(MAIL_ACK_DELAY_MS * 3);
    assert.equal(acks(fake.sent).length, 0, "one ack for the burst");
    await client.close();
  });

  it("acknowledges mail only once a handler's promise settled", async () => {
    const fake = mailTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const handled: number[] = [];
    client.on("mail", async (mail) => {
      await released;
      handled.push(mail.mail_seq);
    });
    await client.connect();
    fake.push({ type: "batch", messages: [alert(1), direct(2)] });
    await sleep(MAIL_ACK_DELAY_MS * 3);
    assert.equal(acks(fake.sent).length, 0, "the handler has not finished");
    release();
    await until(() => acks(fake.sent).length > 0, "an ack_mail");
    assert.deepEqual(handled, [1, 2]);
    assert.equal(acks(fake.sent)[0]?.up_to, 2);
    fake.answerAcks();
    await client.close();
  });

  it("keeps mail that came with no handler, unacknowledged, for the first on('mail')", async () => {
    const fake = mailTransport([alert(1)]);
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    await client.connect();
    await sleep(MAIL_ACK_DELAY_MS * 3);
    assert.equal(acks(fake.sent).length, 0);
    const seen: number[] = [];
    client.on("mail", (mail) => {
      seen.push(mail.mail_seq);
    });
    await until(() => acks(fake.sent).length > 0, "an ack_mail");
    assert.deepEqual(seen, [1]);
    fake.answerAcks();
    await client.close();
  });

  it("reconnects with ?client_id=, hands out only the rest, and sends the lost ack again", async () => {
    // Socket 1 drops after mail 1 and 2 were handed out, before its ack_mail was answered.
    const fake = mailTransport([alert(1), alert(2)], [alert(1), alert(2), direct(3)]);
    const client = new GraphwireClient("ws://gateway.test/ws/workflow?tenant=a", {
      transport: fake.transport,
      reconnect: FAST,
    });
    const seen: number[] = [];
    client.on("mail", (mail) => {
      seen.push(mail.mail_seq);
    });
    await client.connect();
    await until(() => acks(fake.sent).length > 0, "an ack_mail");
    assert.deepEqual(seen, [1, 2]);
    assert.deepEqual(
      fake.sent.splice(0).map((frame) => (frame.type === "ack_mail" ? frame.up_to : frame.type)),
      [2],
    );
    fake.drop(); // its answer never comes
    await until(() => seen.length === 3, "the third mail");
    assert.deepEqual(seen, [1, 2, 3], "1 and 2 are not handed out twice");
    await until(() => acks(fake.sent).length > 0, "an ack_mail after the reconnect");
    assert.deepEqual(
      acks(fake.sent).map((a) => a.up_to),
      [3],
      "the lost ack goes again, with the mail handed out since",
    );
    fake.answerAcks();
    assert.deepEqual(fake.urls, [
      "ws://gateway.test/ws/workflow?tenant=a&batch=1",
      `ws://gateway.test/ws/workflow?tenant=a&batch=1&client_id=${CLIENT_ID}`,
    ]);
    assert.equal(client.clientId, CLIENT_ID);
    assert.equal(client.connection?.resumed, true);
    await client.close();
  });

  it("asks for the clientId option from the first connection, and refuses one that is not a client id", async () => {
    const fake = mailTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", {
      transport: fake.transport,
      clientId: "cl_fedcba9876543210",
    });
    await client.connect();
    assert.deepEqual(fake.urls, ["ws://gateway.test/ws/workflow?batch=1&client_id=cl_fedcba9876543210"]);
    assert.equal(client.clientId, "cl_fedcba9876543210");
    await client.close();
    assert.throws(() => new GraphwireClient("ws://gateway.test/ws/workflow", { clientId: "alice" }), RangeError);
  });

  it("close() acknowledges what the handlers finished, without waiting for the coalescing delay", async () => {
    const fake = mailTransport([alert(1)]);
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    client.on("mail", () => {});
    await client.connect();
    await settle();
    const closing = client.close();
    await until(() => acks(fake.sent).length > 0, "an ack_mail");
    assert.equal(acks(fake.sent)[0]?.up_to, 1);
    fake.answerAcks();
    await closing;
  });
});

describe("GraphwireClient: run_resumed", () => {
  it("is a typed run event, not terminal: the run goes on with the next seq", async () => {
    const fake = mailTransport();
    const client = new GraphwireClient("ws://gateway.test/ws/workflow", { transport: fake.transport });
    const moves: RunResumed[] = [];
    client.on("run_resumed", (event) => moves.push(event));
    await client.connect();
    const starting = client.startWorkflow("chat", { message: "hi" });
    await settle();
    const start = fake.sent.find((frame) => frame.type === "start_workflow");
    const base = { workflow_id: "run_1", timestamp: T };
    fake.push({ ...base, type: "workflow_started", seq: 1, workflow: "chat", reply_to: start?.id });
    const run = await starting;
    fake.push({ ...base, type: "token", seq: 2, node_id: "respond", data: "a" });
    fake.push({ ...base, type: "run_resumed", seq: 3, from_seq: 2 });
    fake.push({ ...base, type: "token", seq: 4, node_id: "respond", data: "b" });
    const events: RunEvent[] = [];
    for await (const event of run) {
      events.push(event);
      if (event.seq === 4) {
        break;
      }
    }
    assert.deepEqual(
      events.map((e) => e.type),
      ["workflow_started", "token", "run_resumed", "token"],
    );
    const move = events[2];
    assert.ok(move?.type === "run_resumed");
    assert.equal(move.from_seq, 2); // narrowed: RunResumed
    assert.deepEqual(moves, [move]);
    assert.equal(run.finished, false, "run_resumed is not terminal");
    assert.equal(run.lastSeq, 4);
    await client.close();
  });
});
