/**
 * Compiled with the tests (`tsc -p tsconfig.test.json`), never run: the public API's
 * types as a user meets them. Each `@ts-expect-error` line must fail to compile, or tsc
 * reports the directive as unused.
 */

import {
  type ClientEvents,
  ConnectionRejected,
  ConnectionUnauthorized,
  type DataProcessingResult,
  GraphwireClient,
  type JsonObject,
  type Run,
  type RunEvent,
  type StateChange,
  Unauthorized,
  WorkflowFailed,
} from "@graphwire/client";

// Your own workflow, typed by declaration merging (as clients/js/README.md shows).
declare module "@graphwire/client" {
  interface Workflows {
    word_count: { params: { text: string }; result: { words: number } };
  }
}

export async function usage(client: GraphwireClient): Promise<void> {
  const counted: { words: number } = await (await client.startWorkflow("word_count", { text: "a b c" })).result();
  // @ts-expect-error - the merged params say `text` is a string
  await client.startWorkflow("word_count", { text: 3 });

  const run = await client.startWorkflow("data_processing", { data: [1, 2, 3], delay_ms: 5 });
  const result: DataProcessingResult = await run.result();
  const mean: number = result.mean;

  // @ts-expect-error - data must be an array of numbers
  await client.startWorkflow("data_processing", { data: "x" });
  // @ts-expect-error - data is required
  await client.startWorkflow("data_processing", {});
  // @ts-expect-error - no such field in DataProcessingParams
  await client.startWorkflow("data_processing", { data: [1], extra: true });
  // @ts-expect-error - chat wants a message
  await client.startWorkflow("chat", { text: "hi" });
  // @ts-expect-error - ApprovalResult has no `count`
  (await (await client.startWorkflow("approval", { message: "ok?" })).result()).count;

  // Workflows the spec does not list take any JSON object and give one back.
  const custom: Run<JsonObject> = await client.startWorkflow("count_words", { text: "a b c" });
  const words: unknown = (await custom.result()).words;

  for await (const event of run) {
    // Events are a discriminated union on `type`.
    if (event.type === "progress") {
      // A node's payload is in `data`, as `send_update(update_type, data)` sent it.
      const percent: number = event.data.percent;
      void percent;
      // @ts-expect-error - progress fields are in `data`, not beside it (the 0.1 shape)
      void event.percent;
    } else if (event.type === "token") {
      const text: string = event.data;
      // @ts-expect-error - a token's data is its text
      void event.data.percent;
      void text;
    } else if (event.type === "node_update") {
      const status: "pending" | "running" | "completed" | "failed" | "skipped" | string = event.data.status;
      void status;
    } else if (event.type === "workflow_completed") {
      const done: { [k: string]: unknown } = event.data;
      // @ts-expect-error - the result is in `data` (the 0.1 `result` is gone)
      void event.result;
      void done;
    } else if (event.type === "input_request") {
      await run.respond(event.request_id, { value: "yes" });
      // @ts-expect-error - a request id is a string
      await run.respond(42, { value: "yes" });
    }
    // @ts-expect-error - no event has a `token` field any more: a token's text is its `data`
    void event.token;
  }

  const other = await client.attach(run.workflowId, { sinceSeq: 0 });
  // @ts-expect-error - sinceSeq is a number
  await client.attach(run.workflowId, { sinceSeq: "0" });
  const events: readonly RunEvent[] = other.events;

  const stop = client.on("state", ({ oldState, newState }: StateChange) => {
    const states: Array<"disconnected" | "connecting" | "connected"> = [oldState, newState];
    void states;
  });
  // @ts-expect-error - no such event
  client.on("no_such_event", () => {});
  client.on("system_alert", (alert: ClientEvents["system_alert"]) => void alert.message);
  client.on("token", (token) => void token.data.toUpperCase());
  stop();

  // The raw commands, one typed method per operation of the spec.
  const pong = await client.commands.ping();
  const ack = await client.commands.joinGroup({ group: "admins" });
  // @ts-expect-error - join_group needs a group
  await client.commands.joinGroup({});

  try {
    await run.result();
  } catch (error) {
    if (error instanceof WorkflowFailed) {
      const code: "input_timeout" | string = error.code;
      void code;
    }
  }
  void [mean, words, counted, events, pong.timestamp, ack.command];
  await client.close();
}

export async function auth(url: string): Promise<void> {
  // A token provider, sync or async; or a static token; not both.
  const client = new GraphwireClient(url, { getToken: async () => "h.p.s", refreshMarginMs: 60_000 });
  new GraphwireClient(url, { getToken: () => "h.p.s" });
  new GraphwireClient(url, { token: "h.p.s" });
  // @ts-expect-error - a provider returns the token itself
  new GraphwireClient(url, { getToken: async () => ({ token: "h.p.s" }) });
  client.on("refresh_failed", (error) => void error.message);
  try {
    const hello = await client.connect();
    const user: string | undefined = hello.user;
    const until: string | undefined = hello.expires_at;
    await client.commands.refreshToken({ token: "h.p.s" });
    void [user, until];
  } catch (error) {
    if (error instanceof ConnectionUnauthorized) {
      const why: string = error.reason;
      const code: number = error.closeCode;
      void [why, code, error.code satisfies "unauthorized" | string];
    } else if (error instanceof ConnectionRejected || error instanceof Unauthorized) {
      void error.message;
    }
  }
}
