/**
 * The offline mailbox against real gateways: the shared one (auth off, the client id's
 * mailbox) and one with `GRAPHWIRE_AUTH_JWT_SECRET` (the user's). The client joins `ops`
 * and goes away (its transport refuses to reconnect while `offline`); three `POST
 * /api/broadcast` alerts and a `POST /api/send` wait for it; when it comes back, asking for
 * its client id (`?client_id=`), its `on("mail")` handler gets the four, typed, in
 * `mail_seq` order, and the client acknowledges them: the next connection gets none.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  GraphwireClient,
  type Mail,
  type Socket,
  SocketOpenFailed,
  type Transport,
  webSocketTransport,
} from "@graphwire/client";

import { mintToken } from "./helpers/jwt.js";
import { type Gateway, HTTP, WS, sleep, startGateway } from "./helpers/server.js";

const SECRET = "graphwire-js-sdk-mail-tests-hs256-secret-0123456789";
const PATIENT = { maxAttempts: 10_000, baseDelayMs: 20, maxDelayMs: 100 };
/** How long a connection is watched to show that no mail comes. */
const QUIET_MS = 500;

async function call(url: string, body?: object, token?: string): Promise<Record<string, unknown>> {
  const response = await fetch(url, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      "content-type": "application/json",
      ...(token !== undefined && { authorization: `Bearer ${token}` }),
    },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  if (!response.ok) {
    throw new Error(`${url}: ${response.status} ${await response.text()}`);
  }
  return (await response.json()) as Record<string, unknown>;
}

async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting until ${what}`);
    }
    await sleep(20);
  }
}

/** The default transport, refusing to connect while `offline`; `drop()` closes the open socket. */
function switchable() {
  const real = webSocketTransport();
  const urls: string[] = [];
  let socket: Socket | undefined;
  const control = {
    offline: false,
    urls,
    transport: (async (url, events, options) => {
      urls.push(url);
      if (control.offline) {
        throw new SocketOpenFailed(url, 1006, "offline (the test)");
      }
      socket = await real(url, events, options);
      return socket;
    }) satisfies Transport,
    drop: async () => socket?.close(1000, "the test drops the connection"),
  };
  return control;
}

/** Every mail the client's handler got, in order. */
function inbox(client: GraphwireClient): Mail[] {
  const mails: Mail[] = [];
  client.on("mail", (mail) => {
    mails.push(mail);
  });
  return mails;
}

/** Waits until the gateway no longer lists `clientId` as connected: it is away, so mail is kept. */
async function gone(http: string, clientId: string, admin?: string): Promise<void> {
  await until(
    async () => !JSON.stringify(await call(`${http}/ws/metrics`, undefined, admin)).includes(clientId),
    `${clientId} left the gateway`,
  );
}

function assertTheFour(mails: Mail[], sender: string | undefined): void {
  const first = mails[0]?.mail_seq ?? 0;
  assert.deepEqual(
    mails.map((mail) => mail.mail_seq - first),
    [0, 1, 2, 3],
    "in mail_seq order, one per message",
  );
  const texts = mails.map((mail) => {
    const message = mail.message;
    switch (message.type) {
      case "system_alert":
        return `${message.group}: ${message.message}`;
      case "direct_message":
        return `${message.sender ?? "-"}: ${JSON.stringify(message.data)}`;
      case "input_request":
        return `input ${message.request_id}`;
    }
  });
  assert.deepEqual(texts, ["ops: one", "ops: two", "ops: three", `${sender ?? "-"}: {"text":"hi"}`]);
}

/** Drop the connection and wait until the client is back. */
async function reconnect(client: GraphwireClient, control: ReturnType<typeof switchable>): Promise<void> {
  const attempts = control.urls.length;
  await control.drop();
  await until(() => control.urls.length > attempts && client.state === "connected", "the client reconnected");
}

/** Drop the connection and keep the client away until `control.offline` is cleared. */
async function leave(client: GraphwireClient, control: ReturnType<typeof switchable>): Promise<void> {
  control.offline = true;
  await control.drop();
  await until(() => client.state !== "connected", "the client noticed the drop");
}

describe("the offline mailbox, auth off", () => {
  it("keeps what came while the client was away and delivers it once when its client id comes back", async () => {
    const control = switchable();
    const client = new GraphwireClient(WS, { transport: control.transport, reconnect: PATIENT });
    const mails = inbox(client);
    await client.connect();
    const firstId = client.clientId ?? "";
    await client.joinGroup("ops");
    await leave(client, control);
    await gone(HTTP, firstId);
    for (const message of ["one", "two", "three"]) {
      await call(`${HTTP}/api/broadcast`, { group: "ops", message });
    }
    const sent = await call(`${HTTP}/api/send`, { user: firstId, message: { text: "hi" } });
    control.offline = false;

    await until(() => mails.length >= 4, "four mails");
    assert.equal(client.clientId, firstId, "the client id was handed over");
    assert.equal(client.connection?.resumed, true);
    assert.ok(control.urls.at(-1)?.endsWith(`&client_id=${firstId}`), control.urls.at(-1));
    assertTheFour(mails, undefined);
    assert.equal(mails[3]?.mail_seq, sent.mail_seq);
    await sleep(QUIET_MS);
    assert.equal(mails.length, 4);

    await reconnect(client, control);
    await sleep(QUIET_MS);
    assert.equal(mails.length, 4, "acknowledged: not delivered again");

    // A direct message to a connected client comes at once, as mail, with the next mail_seq.
    const live = await call(`${HTTP}/api/send`, { user: firstId, message: { text: "now" } });
    await until(() => mails.length === 5, "the live direct message");
    assert.equal(mails[4]?.mail_seq, live.mail_seq);
    assert.equal(live.mail_seq, (sent.mail_seq as number) + 1);
    await client.close();
  });

  it("a restarted program reclaims its mailbox with the clientId option", async () => {
    const before = new GraphwireClient(WS);
    await before.connect();
    const clientId = before.clientId ?? "";
    await before.close();
    await gone(HTTP, clientId);
    await call(`${HTTP}/api/send`, { user: clientId, message: { text: "while you were out" } });

    const after = new GraphwireClient(WS, { clientId });
    const mails = inbox(after);
    await after.connect();
    assert.equal(after.clientId, clientId);
    await until(() => mails.length === 1, "the mail");
    const message = mails[0]?.message;
    assert.ok(message?.type === "direct_message");
    assert.deepEqual(message.data, { text: "while you were out" });
    await after.close();
    await gone(HTTP, clientId);

    const again = new GraphwireClient(WS, { clientId });
    const none = inbox(again);
    await again.connect();
    await sleep(QUIET_MS);
    assert.deepEqual(none, []);
    await again.close();
  });
});

describe("the offline mailbox, auth on", () => {
  let gateway: Gateway;

  before(async () => {
    gateway = await startGateway({ GRAPHWIRE_AUTH_JWT_SECRET: SECRET });
  });

  after(async () => {
    await gateway.stop();
  });

  it("is the user's: the mail waits for alice, and what one program acknowledged another does not get", async () => {
    const admin = mintToken(SECRET, { sub: "ops-admin", scope: "admin" });
    const alice = () => mintToken(SECRET, { sub: "alice", scope: "groups:join:ops" });
    const control = switchable();
    const client = new GraphwireClient(gateway.ws, {
      transport: control.transport,
      reconnect: PATIENT,
      token: alice(),
    });
    const mails = inbox(client);
    const hello = await client.connect();
    assert.equal(hello.user, "alice");
    await client.joinGroup("ops");
    await leave(client, control);
    await gone(gateway.http, hello.client_id, admin);
    for (const message of ["one", "two", "three"]) {
      await call(`${gateway.http}/api/broadcast`, { group: "ops", message }, admin);
    }
    await call(`${gateway.http}/api/send`, { user: "alice", message: { text: "hi" } }, admin);
    control.offline = false;
    await until(() => mails.length >= 4, "four mails");
    assertTheFour(mails, "ops-admin");
    await reconnect(client, control);
    await sleep(QUIET_MS);
    assert.equal(mails.length, 4);
    await client.close();

    const other = new GraphwireClient(gateway.ws, { token: alice() });
    const none = inbox(other);
    await other.connect();
    await sleep(QUIET_MS);
    assert.deepEqual(none, [], "acknowledged for the user, on any of their connections");
    await other.close();
  });
});
