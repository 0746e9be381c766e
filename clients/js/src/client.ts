/**
 * `GraphwireClient`: the socket, the connection state machine (disconnected → connecting
 * → connected), reconnect with backoff and full jitter, and the typed API over the
 * sans-I/O `ClientCore`.
 */

import { DEFAULT_REFRESH_MARGIN_MS, type TokenProvider, TokenSource, refreshDelay, tokenExpiry } from "./auth.js";
import { DEFAULT_RECONNECT, type ReconnectPolicy, backoffDelay, rateLimitDelay, reconnectPolicy } from "./backoff.js";
import { ClientCore, type Gap } from "./core.js";
import { Emitter } from "./emitter.js";
import {
  ClientClosed,
  CommandTimeout,
  ConnectionLost,
  ConnectionRejected,
  Forbidden,
  GraphwireError,
  InvalidFrame,
  Unauthorized,
  closeRefusal,
} from "./errors.js";
import { type FrameValidator, decodeFrame } from "./frames.js";
import {
  type Ack,
  type CommandBody,
  type Connected,
  type JsonObject,
  type Mail,
  type Pong,
  type ServerEvent,
  type StartWorkflow,
  type Subscribed,
  type WorkflowCommand,
  WorkflowCommands,
  type WorkflowReplies,
  type WorkflowStarted,
  type Workflows,
} from "./generated/index.js";
import { Run, type RunHost } from "./run.js";
import type { RunState } from "./run-state.js";
import {
  type Socket,
  SocketOpenFailed,
  type Transport,
  type WebSocketConstructor,
  webSocketTransport,
} from "./socket.js";

/** Where the client's connection stands. */
export type ConnectionState = "disconnected" | "connecting" | "connected";

/** One transition of `client.state`, passed to `on("state", …)` handlers. */
export interface StateChange {
  oldState: ConnectionState;
  newState: ConnectionState;
  /** Consecutive failed connection attempts so far (0 once connected). */
  attempt: number;
  /** Why the previous connection ended or the attempt failed, when there is a reason. */
  error?: Error | undefined;
}

/**
 * The events of `client.on(type, handler)`: `state`, `gap`, `invalid_frame` and
 * `refresh_failed` (an in-band token refresh did not go through: `getToken` threw, or the
 * server refused its token; the connection keeps the old one, and the client tries again
 * halfway to its expiry, then reconnects after the 4002), and every server message by its
 * `type` (run events once each, in seq order; `mail` once each per client, in `mail_seq`
 * order).
 */
export type ClientEvents = {
  state: StateChange;
  gap: Gap;
  invalid_frame: InvalidFrame;
  refresh_failed: GraphwireError;
} & { [T in ServerEvent["type"]]: Extract<ServerEvent, { type: T }> };

/** The params of workflow `W`: from the spec for the built-in workflows, any JSON object otherwise. */
export type ParamsOf<W extends string> = W extends keyof Workflows ? Workflows[W]["params"] : JsonObject;

/** The result of workflow `W`: from the spec for the built-in workflows, any JSON object otherwise. */
export type ResultOf<W extends string> = W extends keyof Workflows ? Workflows[W]["result"] : JsonObject;

export interface ClientOptions {
  /**
   * A JWT, for gateways with auth on; sent as `Authorization: Bearer` (Node, `ws`), or in
   * browsers as the subprotocols `graphwire.v1` and `bearer.<token>` (the gateway selects
   * `graphwire.v1`). A static token cannot be refreshed: when it expires the server closes
   * with 4002 and the client ends with `TokenExpired`. Pass `getToken` to outlive it.
   */
  token?: string;
  /**
   * Where to get a JWT (sync or async), instead of `token`: called at every connection
   * attempt (the first connect, each reconnect, so after a 4002 token expired too) and
   * before the token expires, for an in-band `refresh_token` that keeps the socket open
   * (see `refreshMarginMs`). A throw fails that connection attempt (retried per
   * `reconnect`) or that refresh (`refresh_failed`, tried again while time is left).
   */
  getToken?: TokenProvider;
  /**
   * With `getToken`: send `refresh_token` at 80 % of the token's remaining life or this
   * long before it expires (default 30 000 ms), whichever is earlier, but not before half
   * of it, so that a short-lived token is refreshed halfway, not in a loop (as the Python
   * SDK). The lead also absorbs a client clock somewhat behind the gateway's.
   */
  refreshMarginMs?: number;
  /**
   * Retry `connect()` and reconnect after a drop (default: 8 attempts, 250 ms base, 5 s
   * cap), or `false` for one connection attempt and no reconnect.
   */
  reconnect?: Partial<ReconnectPolicy> | false;
  /** Validate every inbound frame against the spec with ajv; invalid ones are dropped (`invalid_frame`). */
  validate?: boolean;
  /**
   * Ask the server to coalesce waiting frames into `batch` frames (the client unpacks
   * them): `true` (the default) connects with `batch=1`, `false` with `batch=0`. As in
   * the Python SDK, the option decides: a `batch` parameter in the URL is replaced.
   */
  batch?: boolean;
  /** Reject a command whose answer has not come after this long (default 30 000 ms). */
  commandTimeoutMs?: number;
  /** Give up on one connection attempt after this long (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** The WebSocket class to use (default: the global `WebSocket`, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** Open sockets another way altogether (tests, proxies); overrides `WebSocket`. */
  transport?: Transport;
  /**
   * The client id to take over on the first connection (`client.clientId` of an earlier
   * run of the program), so that without auth its offline mailbox is this client's again.
   * Without it the client takes over the first id the server gave it; every reconnect
   * asks for that id back (`?client_id=`), either way.
   */
  clientId?: string;
}

export interface StartOptions {
  /**
   * A repeat with the same key and params returns the same run. The client always sends
   * one (random by default), which lets it resend a start safely after a drop.
   */
  idempotencyKey?: string;
}

export interface AttachOptions {
  /** The last seq you have; events after it are replayed, then live ones follow. Default 0 (all). */
  sinceSeq?: number;
}

const encoder = new TextEncoder();

/** The workflow channel's `client_id` query parameter (spec: `channels.workflow.bindings.ws.query`). */
const CLIENT_ID = /^cl_[0-9a-f]{16}$/;
/** Mail handed out within this many milliseconds is acknowledged with one `ack_mail`. */
export const MAIL_ACK_DELAY_MS = 50;
/** How long `close()` waits for the answer to its last `ack_mail`. */
const CLOSE_ACK_TIMEOUT_MS = 2000;
/** Mail kept, unacknowledged, while no `on("mail")` handler takes it. */
const MAIL_BACKLOG = 1000;

function randomKey(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A client of one graphwire gateway endpoint (`/ws/workflow`).
 *
 * ```ts
 * const client = new GraphwireClient("ws://127.0.0.1:8000/ws/workflow");
 * await client.connect();
 * const run = await client.startWorkflow("data_processing", { data: [1, 2, 3] });
 * for await (const event of run) console.log(event.seq, event.type);
 * console.log(await run.result()); // { count: 3, sum: 6, mean: 2 }
 * await client.close();
 * ```
 *
 * The offline mailbox: `mail` (alerts of joined groups and input requests kept while the
 * user was away, and operators' `direct_message`s) comes to `on("mail", …)` handlers, each
 * `mail_seq` once per client. Once the handlers have returned (a handler's promise has
 * settled), the client acknowledges it with `ack_mail`; mail that comes while no handler
 * listens waits, unacknowledged, for the first one (register it before `connect()`: waiting
 * mail comes right after `connected`).
 */
export class GraphwireClient {
  /** The raw commands, one typed method per client → server operation of the spec. */
  readonly commands: WorkflowCommands;
  readonly url: string;
  private readonly core: ClientCore;
  private readonly events = new Emitter<ClientEvents>();
  private readonly policy: ReconnectPolicy | undefined;
  private readonly transport: Transport;
  private readonly commandTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly tokens: TokenSource;
  private readonly refreshMarginMs: number;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private currentState: ConnectionState = "disconnected";
  private socket: Socket | undefined;
  private greeting: Connected | undefined;
  private generation = 0;
  private closed = false;
  private connecting: Promise<Connected> | undefined;
  private validator: FrameValidator | undefined;
  private cancelSleep: (() => void) | undefined;
  private abortOpen: (() => void) | undefined;
  private readonly host: RunHost;
  private ackTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly mailBacklog: Mail[] = [];

  constructor(
    url: string,
    private readonly options: ClientOptions = {},
  ) {
    if (options.clientId !== undefined && !CLIENT_ID.test(options.clientId)) {
      throw new RangeError(`clientId ${options.clientId} is not a graphwire client id (cl_ and 16 hex digits)`);
    }
    this.url = withBatch(url, options.batch);
    this.policy = options.reconnect === false ? undefined : reconnectPolicy(options.reconnect ?? DEFAULT_RECONNECT);
    this.transport = options.transport ?? webSocketTransport(options.WebSocket);
    this.commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.tokens = new TokenSource(options.token, options.getToken);
    this.refreshMarginMs = options.refreshMarginMs ?? DEFAULT_REFRESH_MARGIN_MS;
    if (!(this.refreshMarginMs >= 0)) {
      throw new RangeError("refreshMarginMs must be >= 0");
    }
    this.core = new ClientCore(
      {
        send: (frame) => this.write(frame),
        message: (message) =>
          message.type === "mail" ? this.deliverMail(message) : this.events.emit(message.type, message as never),
        gap: (gap) => this.events.emit("gap", gap),
        later: (ms, task) => this.later(ms, task),
      },
      options.clientId,
    );
    this.commands = new WorkflowCommands({
      request: <T extends WorkflowCommand["type"] & keyof WorkflowReplies>(
        type: T,
        body: CommandBody<Extract<WorkflowCommand, { type: T }>>,
      ) => this.request(type, body),
    });
    this.host = {
      commands: this.commands,
      unsubscribe: (state) => this.unsubscribeRun(state),
    };
  }

  /** `disconnected`, `connecting` (also while waiting to retry after a drop) or `connected`. */
  get state(): ConnectionState {
    return this.currentState;
  }

  /** The server's `connected` greeting of the current connection. */
  get connection(): Connected | undefined {
    return this.greeting;
  }

  /**
   * The client id the server gave the current connection. Every reconnect asks for the
   * first one back (or for the `clientId` option), so it stays the same unless the server
   * gave a new one (the old connection was still open there).
   */
  get clientId(): string | undefined {
    return this.greeting?.client_id;
  }

  /**
   * Listen to `state` changes, `gap`s, `invalid_frame`s, or server messages by `type`
   * (`system_alert`, `topic_message`, `token`, `mail` …). Returns the function that stops
   * it. A `mail` handler may return a promise: the mail is acknowledged once it settles.
   * The first `mail` handler also gets the mail that came while none listened.
   */
  on<K extends keyof ClientEvents>(type: K, handler: (event: ClientEvents[K]) => unknown): () => void {
    const off = this.events.on(type, handler);
    if (type === "mail" && this.mailBacklog.length > 0) {
      queueMicrotask(() => {
        for (const mail of this.mailBacklog.splice(0)) {
          this.deliverMail(mail);
        }
      });
    }
    return off;
  }

  off<K extends keyof ClientEvents>(type: K, handler: (event: ClientEvents[K]) => unknown): void {
    this.events.off(type, handler);
  }

  /**
   * Open the connection, retrying per the `reconnect` policy; resolves with the server's
   * `connected` greeting. The first attempt starts at once, each retry after a full-jitter
   * backoff delay, as the Python SDK's `connect()`. Rejects with `ConnectionLost` after
   * `maxAttempts` failed attempts (`cause`: the last failure), at once with a
   * `ConnectionRejected` when the server refuses the client for good: 4001
   * `ConnectionUnauthorized` (also an `Unauthorized`, as is a token that is not a JWT),
   * 4003 `ConnectionForbidden`, 4002 `TokenExpired` with a static `token` (with
   * `getToken` a 4002 is one more failed attempt), 1008, 1009; and with `ClientClosed`
   * when `close()` is called meanwhile. With `reconnect: false` it is one attempt, which
   * rejects with that attempt's error.
   */
  connect(): Promise<Connected> {
    if (this.closed) {
      return Promise.reject(new ClientClosed());
    }
    if (this.currentState === "connected" && this.greeting !== undefined) {
      return Promise.resolve(this.greeting);
    }
    if (this.connecting !== undefined) {
      return this.connecting;
    }
    if (this.currentState === "connecting") {
      return this.untilConnected();
    }
    const connecting = this.establish().finally(() => {
      this.connecting = undefined;
    });
    this.connecting = connecting;
    return connecting;
  }

  /**
   * Start a run of `workflow` (`start_workflow`) and follow it. Params and result are
   * typed per workflow: `startWorkflow("data_processing", { data: "x" })` does not compile.
   */
  async startWorkflow<W extends string>(
    workflow: W,
    params: ParamsOf<W>,
    options: StartOptions = {},
  ): Promise<Run<ResultOf<W>>> {
    const frame: StartWorkflow = {
      type: "start_workflow",
      workflow,
      params: params as unknown as JsonObject,
      idempotency_key: options.idempotencyKey ?? randomKey(),
    };
    // A key of our own is new, so the answer is a new run; the caller's may name an old one.
    const started = (await this.dispatch(frame, options.idempotencyKey !== undefined)) as WorkflowStarted;
    return new Run<ResultOf<W>>(this.core.track(started.workflow_id, 0), this.host, 0);
  }

  /**
   * Follow a run started elsewhere (`subscribe {workflow_id, since_seq}`): its events
   * after `sinceSeq`, then live ones. `run.snapshot` tells where it stood, with its open
   * input requests.
   */
  async attach<R = JsonObject>(workflowId: string, options: AttachOptions = {}): Promise<Run<R>> {
    const sinceSeq = options.sinceSeq ?? 0;
    const known = this.core.runs.get(workflowId);
    if (known !== undefined) {
      while (known.subscribing && !known.finished) {
        await known.changed();
      }
      return new Run<R>(known, this.host, sinceSeq);
    }
    const state = this.core.track(workflowId, sinceSeq);
    state.subscribing = true;
    try {
      await this.commands.subscribe({ workflow_id: workflowId, since_seq: sinceSeq });
    } catch (error) {
      this.core.untrack(state, asGraphwireError(error));
      throw error;
    }
    return new Run<R>(state, this.host, sinceSeq);
  }

  /** Receive `topic_message`s of these topics (restored after a reconnect). */
  async subscribe(topics: string[]): Promise<Subscribed> {
    const reply = await this.commands.subscribe({ topics });
    for (const topic of topics) {
      this.core.topics.add(topic);
    }
    return reply;
  }

  /** Stop receiving these topics. */
  async unsubscribe(topics: string[]): Promise<Ack> {
    for (const topic of topics) {
      this.core.topics.delete(topic);
    }
    return this.commands.unsubscribe({ topics });
  }

  /** Join a broadcast group: its `system_alert`s arrive as `on("system_alert", …)` (restored after a reconnect). */
  async joinGroup(group: string): Promise<Ack> {
    const ack = await this.commands.joinGroup({ group });
    this.core.groups.add(group);
    return ack;
  }

  async leaveGroup(group: string): Promise<Ack> {
    this.core.groups.delete(group);
    return this.commands.leaveGroup({ group });
  }

  /** A round trip to the server (`ping` → `pong`). */
  ping(): Promise<Pong> {
    return this.commands.ping();
  }

  /** Close the connection for good: pending commands and open runs fail with `ClientClosed`. */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    await this.ackMailBeforeClose();
    if (this.closed) {
      return; // close() was called again meanwhile
    }
    this.closed = true;
    clearTimeout(this.ackTimer);
    this.cancelSleep?.();
    this.abortOpen?.();
    clearTimeout(this.refreshTimer);
    for (const timer of this.retryTimers) {
      clearTimeout(timer);
    }
    this.retryTimers.clear();
    const socket = this.socket;
    this.socket = undefined;
    this.generation++;
    this.core.fail(new ClientClosed());
    this.setState("disconnected", 0);
    await socket?.close(1000, "client closed");
  }

  /**
   * A new `mail` to the `on("mail")` handlers; once they returned (their promises settled)
   * it is handed out, and acknowledged within `MAIL_ACK_DELAY_MS`. With no handler it waits.
   */
  private deliverMail(mail: Mail): void {
    if (!this.events.listens("mail")) {
      this.mailBacklog.push(mail);
      if (this.mailBacklog.length > MAIL_BACKLOG) {
        this.handedOut(this.mailBacklog.shift()); // let go of, as the Python SDK's full buffer
      }
      return;
    }
    const pending = this.events.emit("mail", mail).filter(isThenable);
    if (pending.length === 0) {
      this.handedOut(mail);
    } else {
      void Promise.allSettled(pending).then((outcomes) => {
        for (const outcome of outcomes) {
          if (outcome.status === "rejected") {
            // Reported as a handler that throws is (the emitter's way); the mail was handled.
            queueMicrotask(() => {
              throw outcome.reason;
            });
          }
        }
        this.handedOut(mail);
      });
    }
  }

  private handedOut(mail: Mail | undefined): void {
    if (mail === undefined || this.closed) {
      return;
    }
    this.core.handedOut(mail);
    // What the handlers finish meanwhile goes in the same ack.
    this.ackTimer ??= setTimeout(() => {
      this.ackTimer = undefined;
      this.core.ackMail();
    }, MAIL_ACK_DELAY_MS);
  }

  /** Tell the server, before closing, what mail the application handled (best effort). */
  private async ackMailBeforeClose(): Promise<void> {
    const deadline = Date.now() + CLOSE_ACK_TIMEOUT_MS;
    let acking: Promise<unknown> | undefined;
    while (this.currentState === "connected" && (acking = this.core.ackMail()) !== undefined) {
      const left = deadline - Date.now();
      if (left <= 0) {
        return;
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, left)));
      await Promise.race([acking, timeout]);
      clearTimeout(timer);
    }
  }

  private async request<T extends WorkflowCommand["type"] & keyof WorkflowReplies>(
    type: T,
    body: CommandBody<Extract<WorkflowCommand, { type: T }>>,
  ): Promise<WorkflowReplies[T]> {
    const frame = { ...body, type } as unknown as WorkflowCommand;
    // With the caller's own idempotency key the server may answer with an existing run.
    const reread = frame.type === "start_workflow" && frame.idempotency_key !== undefined;
    return (await this.dispatch(frame, reread)) as WorkflowReplies[T];
  }

  /** Sends a command (or queues it while reconnecting) and waits for its direct answer. */
  private async dispatch(command: WorkflowCommand, reread: boolean): Promise<ServerEvent> {
    if (this.closed) {
      throw new ClientClosed();
    }
    // One key per answer makes it safe to send again after a drop: the gateway acks the
    // repeat of the answer it applied instead of refusing it as input_already_answered.
    const frame: WorkflowCommand =
      command.type === "node_input" && command.idempotency_key === undefined
        ? { ...command, idempotency_key: randomKey() }
        : command;
    if (this.currentState === "disconnected") {
      throw new GraphwireError(`not connected: call connect() before ${frame.type}`);
    }
    const limit = this.greeting?.max_message_size;
    if (limit !== undefined && encoder.encode(JSON.stringify(frame)).length > limit) {
      throw new GraphwireError(`${frame.type} is larger than the server's max_message_size (${limit} bytes)`);
    }
    const { id, reply } = this.core.command(frame, false, reread);
    const timeout = new CommandTimeout(frame.type, this.commandTimeoutMs);
    const timer = setTimeout(() => this.core.abandon(id, timeout), this.commandTimeoutMs);
    try {
      return await reply;
    } finally {
      clearTimeout(timer);
    }
  }

  private async unsubscribeRun(state: RunState): Promise<void> {
    this.core.untrack(state);
    if (this.currentState !== "disconnected") {
      await this.commands.unsubscribe({ workflow_id: state.workflowId });
    }
  }

  private write(frame: WorkflowCommand): void {
    try {
      this.socket?.send(JSON.stringify(frame));
    } catch {
      // The socket is closing; its close event starts the reconnect that resends.
    }
  }

  /**
   * One connection attempt: get the token, open the socket and wait for the `connected`
   * greeting, all within `connectTimeoutMs`.
   */
  private async open(): Promise<Connected> {
    if (this.options.validate === true && this.validator === undefined) {
      const { createValidator } = await import("./validate.js");
      this.validator = createValidator();
      if (this.closed) {
        throw new ClientClosed(); // closed while the validator loaded, before abortOpen was set
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new SocketOpenFailed(this.url, 1006, `no greeting within ${this.connectTimeoutMs} ms`)),
        this.connectTimeoutMs,
      );
    });
    try {
      return await this.openWith(await this.withTimeout(this.tokens.forConnect(), timeout), timeout);
    } finally {
      clearTimeout(timer);
    }
  }

  /** `task`, unless `timeout` or `close()` comes first. */
  private async withTimeout<T>(task: Promise<T>, timeout: Promise<never>): Promise<T> {
    const aborted = new Promise<never>((_, reject) => {
      this.abortOpen = () => reject(new ClientClosed());
    });
    try {
      return await Promise.race([task, timeout, aborted]);
    } finally {
      this.abortOpen = undefined;
    }
  }

  private async openWith(token: string | undefined, timeout: Promise<never>): Promise<Connected> {
    if (this.closed) {
      throw new ClientClosed(); // closed while the token came, before abortOpen was set again
    }
    const generation = ++this.generation;
    let greeted: (greeting: Connected) => void = () => {};
    let refused: (error: Error) => void = () => {};
    const greeting = new Promise<Connected>((resolve, reject) => {
      greeted = resolve;
      refused = reject;
    });
    this.abortOpen = () => refused(new ClientClosed());
    let hello: Connected | undefined;
    const clientId = this.core.resumeClientId;
    const opening = this.transport(
      clientId === undefined ? this.url : withQuery(this.url, "client_id", clientId),
      {
        message: (text) => {
          if (generation !== this.generation) {
            return;
          }
          for (const message of this.decode(text)) {
            if (hello === undefined && message.type === "connected") {
              hello = message;
              greeted(message);
            }
            this.core.receive(message);
          }
        },
        close: (code, reason) => {
          if (generation !== this.generation) {
            return;
          }
          if (hello === undefined) {
            refused(this.closeError(code, reason));
          } else {
            this.dropped(code, reason);
          }
        },
      },
      { token },
    );
    const aborted = greeting.then(() => new Promise<never>(() => {}));
    let socket: Socket | undefined;
    try {
      socket = await Promise.race([opening, timeout, aborted]);
      if (generation !== this.generation) {
        throw new ClientClosed();
      }
      this.socket = socket;
      const connected = await Promise.race([greeting, timeout]);
      this.greeting = connected;
      return connected;
    } catch (error) {
      if (generation === this.generation) {
        this.generation++;
        this.socket = undefined;
      }
      const abandon = (open: Socket): void => void open.close(1000, "connection attempt abandoned");
      if (socket !== undefined) {
        abandon(socket);
      } else {
        opening.then(abandon, () => {});
      }
      throw error;
    } finally {
      this.abortOpen = undefined;
    }
  }

  /** Why an attempt closed before its greeting: terminal for a final code, else a failed attempt. */
  private closeError(code: number, reason: string): GraphwireError {
    return closeRefusal(code, reason, this.tokens.refreshable) ?? new SocketOpenFailed(this.url, code, reason);
  }

  private decode(text: string): ServerEvent[] {
    try {
      return decodeFrame(text, this.validator);
    } catch (error) {
      if (error instanceof InvalidFrame) {
        this.events.emit("invalid_frame", error);
        return [];
      }
      throw error;
    }
  }

  /** The socket of a live connection closed: reconnect, or fail for good. */
  private dropped(code: number, reason: string): void {
    this.generation++;
    this.socket = undefined;
    clearTimeout(this.refreshTimer);
    this.core.lost();
    if (this.closed) {
      return;
    }
    // 4002 with a getToken is one more reconnect: every attempt asks it for a token.
    const refusal = closeRefusal(code, reason, this.tokens.refreshable);
    if (refusal !== undefined) {
      this.giveUp(refusal, 0);
      return;
    }
    const cause = new SocketOpenFailed(this.url, code, reason || "the connection dropped");
    if (this.policy === undefined) {
      this.giveUp(new ConnectionLost("the connection dropped and reconnect is off", 0, { cause }), 0);
      return;
    }
    // establish() has already failed the core and announced `disconnected` when it rejects.
    this.establish(cause).catch(() => {});
  }

  /**
   * The connection loop of both `connect()` and the reconnect after a drop (`dropped`
   * names the drop): state `connecting`, then attempts per the policy until one is
   * greeted (state `connected`, queued commands go out) or the client gives up (the core
   * fails, state `disconnected`, and the returned promise rejects with the reason).
   *
   * Counting as the Python SDK: the delay before an attempt is `backoffDelay(failures)`,
   * `failures` being the failed attempts so far, except that a first connection makes its
   * first attempt at once (a reconnect waits `backoffDelay(0)` first). After a handshake
   * refused with a `Retry-After` (HTTP 503 at the gateway's `max_connections`), that many
   * milliseconds are added under the jitter. `maxAttempts`
   * failed attempts in a row end with `ConnectionLost`; without a policy there is one
   * attempt, and its error is the reason.
   */
  private async establish(dropped?: Error): Promise<Connected> {
    const policy = this.policy;
    const maxAttempts = policy?.maxAttempts ?? 1;
    let lastError: Error | undefined = dropped;
    this.setState("connecting", 0, dropped);
    for (let failures = 0; failures < maxAttempts; failures++) {
      if (policy !== undefined && (failures > 0 || dropped !== undefined)) {
        // A refused handshake's Retry-After (visible with `ws`, never in a browser) is a floor.
        const floorMs = lastError instanceof SocketOpenFailed ? (lastError.retryAfterMs ?? 0) : 0;
        await this.sleep(backoffDelay(failures, policy, Math.random, floorMs));
      }
      if (this.closed) {
        throw new ClientClosed();
      }
      try {
        const greeting = await this.open();
        this.setState("connected", 0);
        this.core.resume();
        this.scheduleRefresh(greeting.expires_at === undefined ? undefined : Date.parse(greeting.expires_at));
        return greeting;
      } catch (error) {
        if (this.closed) {
          throw new ClientClosed();
        }
        lastError = asError(error);
        if (isFinal(error) || policy === undefined) {
          this.giveUp(asGraphwireError(error), failures + 1);
          throw error;
        }
      }
    }
    const lost = new ConnectionLost(
      dropped === undefined
        ? `could not connect to ${this.url} after ${maxAttempts} attempts`
        : `gave up after ${maxAttempts} failed reconnect attempts to ${this.url}`,
      maxAttempts,
      { cause: lastError },
    );
    this.giveUp(lost, maxAttempts);
    throw lost;
  }

  /**
   * With `getToken`, plan the in-band `refresh_token` of this connection's token, which
   * expires at `expiresAtMs` (see `refreshDelay`); nothing when the expiry is unknown (the
   * 4002 at expiry then brings a reconnect with a fresh token) or without a provider.
   */
  private scheduleRefresh(expiresAtMs: number | undefined): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (!this.tokens.refreshable || expiresAtMs === undefined || this.closed) {
      return;
    }
    const delay = refreshDelay(expiresAtMs, Date.now(), this.refreshMarginMs);
    if (delay !== undefined) {
      const generation = this.generation;
      this.refreshTimer = setTimeout(() => void this.refresh(generation, expiresAtMs), delay);
    }
  }

  /** A fresh token from the provider, presented on the open connection (`refresh_token`). */
  private async refresh(generation: number, expiresAtMs: number): Promise<void> {
    this.refreshTimer = undefined;
    try {
      const token = await this.tokens.fresh();
      if (generation !== this.generation) {
        return; // the connection it was for is gone; the next one asked for its own token
      }
      await this.commands.refreshToken({ token });
      if (generation === this.generation) {
        this.scheduleRefresh(tokenExpiry(token));
      }
    } catch (error) {
      if (generation === this.generation && !this.closed) {
        this.events.emit("refresh_failed", asGraphwireError(error));
        this.scheduleRefresh(expiresAtMs); // the old token stays: again halfway to its expiry
      }
    }
  }

  /** The sink's timer (a rate-limited command's retry), jittered by up to a quarter, cleared by `close()`. */
  private later(ms: number, task: () => void): void {
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      task();
    }, rateLimitDelay(ms));
    this.retryTimers.add(timer);
  }

  private giveUp(error: GraphwireError, attempt: number): void {
    this.core.fail(error);
    this.setState("disconnected", attempt, error);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.cancelSleep = done;
    });
  }

  private untilConnected(): Promise<Connected> {
    return new Promise((resolve, reject) => {
      const stop = this.on("state", ({ newState, error }) => {
        if (newState === "connected" && this.greeting !== undefined) {
          stop();
          resolve(this.greeting);
        } else if (newState === "disconnected") {
          stop();
          reject(error ?? new ClientClosed());
        }
      });
    });
  }

  private setState(newState: ConnectionState, attempt: number, error?: Error): void {
    const oldState = this.currentState;
    if (oldState === newState) {
      return;
    }
    this.currentState = newState;
    this.events.emit("state", { oldState, newState, attempt, ...(error !== undefined && { error }) });
  }
}

/**
 * `url` asking for the batching `batch` says (the channel's `batch` query parameter;
 * batching is negotiated: a client that does not ask never gets a `batch` frame). The
 * other query parameters are kept byte for byte.
 */
function withBatch(url: string, batch = true): string {
  return withQuery(url, "batch", batch ? "1" : "0");
}

/** `url` with the query parameter `name` set to `value` (last), the others kept byte for byte. */
function withQuery(url: string, name: string, value: string): string {
  const target = new URL(url);
  const params = target.search
    .slice(1)
    .split("&")
    .filter((param) => param !== "" && param.split("=", 1)[0] !== name);
  target.search = [...params, `${name}=${encodeURIComponent(value)}`].join("&");
  return target.toString();
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

/** An attempt's failure after which retrying cannot help: a refusing close code, or a token that is not a JWT. */
function isFinal(error: unknown): boolean {
  return error instanceof ConnectionRejected || error instanceof Unauthorized || error instanceof Forbidden;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function asGraphwireError(error: unknown): GraphwireError {
  return error instanceof GraphwireError ? error : new GraphwireError(String(error), { cause: error });
}
