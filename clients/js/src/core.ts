/**
 * The client's protocol core, with no I/O: command ids and their answers, the runs it
 * follows (seq tracking, dedupe, gap repair), groups and topics, and what to send after
 * a reconnect (each run from its last seq, naming its log's `epoch`), and the offline
 * mailbox (repeats of a `mail_seq` skipped; one `ack_mail` at a time, up to the last mail
 * the application has, sent again after a drop). The client feeds it decoded messages and
 * connection events; it writes frames through `outbox` and reports messages through
 * `emit`. Its tests need no socket.
 */

import {
  ClientClosed,
  CommandInterrupted,
  type GraphwireError,
  InputClosed,
  RunLost,
  errorFromFrame,
} from "./errors.js";
import {
  type Connected,
  type ErrorCode,
  type InputClosed as InputClosedEvent,
  type Mail,
  RUN_EVENT_TYPES,
  WORKFLOW_REPLY_TYPES,
  type RunEvent,
  type ServerEvent,
  type WorkflowCommand,
} from "./generated/index.js";
import { MailboxState } from "./mail.js";
import { RunState } from "./run-state.js";

/**
 * A run's seqs that can never be delivered (the server's log no longer reaches back). A
 * log lost and recreated under another `epoch` skips none, so it fires no `gap`; both
 * turn `run.recovered` false.
 */
export interface Gap {
  workflowId: string;
  fromSeq: number;
  toSeq: number;
}

/** Where the core reports what it received: every server message, each run event once. */
export interface CoreSink {
  send(frame: WorkflowCommand): void;
  message(message: ServerEvent): void;
  gap(gap: Gap): void;
  /** Run `task` in no less than `ms` milliseconds (the retry of a rate-limited command). */
  later(ms: number, task: () => void): void;
}

/** How many times a command refused with `rate_limited` is sent again before it rejects. */
export const RATE_LIMIT_RETRIES = 3;

/**
 * How many times a command answered with `run_unavailable` (or an `ack_mail` with
 * `mailbox_unavailable`) is sent again before it rejects.
 */
export const RUN_UNAVAILABLE_RETRIES = 3;

/** Mailboxes remembered (a server that ignores `?client_id=` gives a new one each time). */
const MAILBOXES_KEPT = 8;

/** A command with its `id`, as sent. */
export type SentCommand = WorkflowCommand & { id: string };

interface Pending {
  frame: SentCommand;
  replyType: string;
  /** Safe to send again after a drop (the server's answer does not change). */
  repeatable: boolean;
  /** Sent by the core itself (resume, resync): dropped, not re-sent, when the socket drops. */
  internal: boolean;
  /** Written on the current connection. */
  sent: boolean;
  /** Written on some connection. */
  everSent: boolean;
  /**
   * A `start_workflow` that may name an existing run (a resend, or the caller's own
   * idempotency key): the server then answers with seq 1 only, so the run's log is
   * re-read after the answer.
   */
  reread: boolean;
  /** Times it was refused with `rate_limited` and sent again. */
  rateLimited: number;
  /** Times it was answered with `run_unavailable` and sent again. */
  unavailable: number;
  resolve(reply: ServerEvent): void;
  reject(error: Error): void;
}

const RUN_EVENTS: ReadonlySet<string> = new Set(RUN_EVENT_TYPES);

function isRunEvent(message: ServerEvent): message is RunEvent {
  return RUN_EVENTS.has(message.type);
}

/**
 * Whether sending `frame` twice has the same effect as once. A `start_workflow` or
 * `node_input` with an `idempotency_key` is: the gateway answers the repeat as it
 * answered the first copy (the same run; the `ack` of the answer it applied).
 */
export function isRepeatable(frame: WorkflowCommand): boolean {
  switch (frame.type) {
    case "start_workflow":
    case "node_input":
      return frame.idempotency_key !== undefined;
    case "cancel_workflow":
      return false;
    default:
      return true;
  }
}

export class ClientCore {
  /** Every run this client follows, by `workflow_id`. */
  readonly runs = new Map<string, RunState>();
  /** Groups joined and topics subscribed, restored after a reconnect. */
  readonly groups = new Set<string>();
  readonly topics = new Set<string>();
  /** Whether frames can be written now; commands wait for `resume()` otherwise. */
  connected = false;
  /** The current connection's mailbox (the `connected` frame's `user`, else its `client_id`). */
  mailbox: MailboxState | undefined;
  /**
   * The client id every connection asks to take over (`?client_id=`): the one given to the
   * constructor, else the first one the server gave. Without auth it owns the mailbox.
   */
  resumeClientId: string | undefined;
  private readonly mailboxes = new Map<string, MailboxState>();
  /** Each `mail` handed out, with the mailbox (and its generation) it was received from. */
  private readonly mailFrom = new WeakMap<Mail, { box: MailboxState; generation: number }>();
  private readonly pending = new Map<string, Pending>();
  /**
   * Commands settled before their answer came (`InputClosed`): the gateway's refusal still
   * due on this connection is dropped, not handed out as a stray `error`.
   */
  private readonly answeredEarly = new Set<string>();
  private counter = 0;

  constructor(
    private readonly sink: CoreSink,
    clientId?: string,
  ) {
    this.resumeClientId = clientId;
  }

  /** Commands that wait for their answer. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Registers a command, sends it if connected, and resolves with its direct answer. */
  command(frame: WorkflowCommand, internal = false, reread = false): { id: string; reply: Promise<ServerEvent> } {
    const id = `c${++this.counter}`;
    const sent: SentCommand = { ...frame, id };
    const reply = new Promise<ServerEvent>((resolve, reject) => {
      const entry: Pending = {
        frame: sent,
        replyType: WORKFLOW_REPLY_TYPES[frame.type],
        repeatable: isRepeatable(frame),
        internal,
        sent: false,
        everSent: false,
        reread,
        rateLimited: 0,
        unavailable: 0,
        resolve,
        reject,
      };
      this.pending.set(id, entry);
      if (this.connected) {
        this.write(entry);
      }
    });
    return { id, reply };
  }

  /** Forgets a command that will not be answered in time; rejects it with `error`. */
  abandon(id: string, error: Error): void {
    const entry = this.pending.get(id);
    if (entry !== undefined) {
      this.pending.delete(id);
      entry.reject(error);
    }
  }

  /** Starts following a run from `sinceSeq` (before its `subscribe` goes out). */
  track(workflowId: string, sinceSeq: number): RunState {
    let state = this.runs.get(workflowId);
    if (state === undefined) {
      state = new RunState(workflowId, sinceSeq);
      this.runs.set(workflowId, state);
    }
    return state;
  }

  /** Stops following a run; its views end with `ClientClosed`. */
  untrack(state: RunState, error: GraphwireError = new ClientClosed("no longer subscribed to this run")): void {
    if (this.runs.get(state.workflowId) === state) {
      this.runs.delete(state.workflowId);
    }
    state.fail(error);
  }

  /** One message from the server (a `batch` is already unpacked). */
  receive(message: ServerEvent): void {
    const replyTo = "reply_to" in message ? message.reply_to : undefined;
    if (replyTo !== undefined && this.answeredEarly.delete(replyTo) && message.type === "error") {
      return; // the refusal its caller already got as InputClosed
    }
    const entry = replyTo === undefined ? undefined : this.pending.get(replyTo);
    let reread: RunState | undefined;
    if (message.type === "workflow_started" && entry?.frame.type === "start_workflow") {
      const state = this.track(message.workflow_id, 0);
      if (entry.reread) {
        reread = state;
      }
    }
    if (message.type === "subscribed" && message.workflow_id !== undefined) {
      // Applied before the replay that follows it in the same read.
      const state = this.runs.get(message.workflow_id);
      const lost = state?.applySubscribed(message);
      if (lost !== undefined) {
        this.sink.gap({ workflowId: message.workflow_id, fromSeq: lost[0], toSeq: lost[1] });
      }
      if (state?.outcome?.status === "lost") {
        this.runs.delete(message.workflow_id); // its replay is no longer this run's
      }
    }
    let fresh = true;
    if (message.type === "connected") {
      this.openMailbox(message); // before the mail that follows it in the same frame
    } else if (message.type === "mail") {
      fresh = this.receiveMail(message);
    }
    if (isRunEvent(message)) {
      const state = this.runs.get(message.workflow_id);
      if (state !== undefined) {
        const accepted = state.accept(message);
        fresh = accepted === "new";
        if (accepted === "gap") {
          this.resync(state);
        } else if (fresh && message.type === "input_closed") {
          this.settleAnswersToClosed(message);
        }
      }
    }
    if (entry !== undefined && replyTo !== undefined) {
      if (message.type === "error" && this.retryable(entry, message.code)) {
        this.retryLater(entry, message.code, message.retry_after);
      } else if (message.type === "error") {
        this.pending.delete(replyTo);
        entry.reject(errorFromFrame(message));
      } else if (message.type === entry.replyType) {
        this.pending.delete(replyTo);
        entry.resolve(message);
      }
    }
    if (fresh) {
      this.sink.message(message);
    }
    if (reread !== undefined) {
      this.resync(reread);
    }
  }

  /** The socket dropped: commands that are safe to repeat wait for `resume()`, others fail. */
  lost(): void {
    this.connected = false;
    this.answeredEarly.clear();
    for (const [id, entry] of this.pending) {
      if (entry.internal) {
        this.pending.delete(id);
      } else if (entry.sent && !entry.repeatable) {
        this.pending.delete(id);
        entry.reject(new CommandInterrupted(entry.frame.type));
      } else {
        entry.sent = false;
      }
    }
    const subscribing = new Set<string>();
    for (const entry of this.pending.values()) {
      if (entry.frame.type === "subscribe" && entry.frame.workflow_id !== undefined) {
        subscribing.add(entry.frame.workflow_id);
      }
    }
    for (const state of this.runs.values()) {
      state.subscribing = subscribing.has(state.workflowId);
      state.resyncing = false;
    }
    for (const box of this.mailboxes.values()) {
      box.acking = undefined; // an internal command: dropped above, sent again on the next connection
    }
  }

  /**
   * A (new) socket is open: restore groups, topics and every open run from its last seq,
   * then send the commands that waited.
   */
  resume(): void {
    this.connected = true;
    for (const group of this.groups) {
      this.internal({ type: "join_group", group });
    }
    if (this.topics.size > 0) {
      this.internal({ type: "subscribe", topics: [...this.topics] });
    }
    for (const state of this.runs.values()) {
      if (!state.finished && !state.subscribing) {
        this.subscribeRun(state);
      }
    }
    const waiting = [...this.pending.values()].filter((entry) => !entry.sent);
    for (const entry of waiting) {
      this.write(entry);
    }
    this.ackMail(); // handled before a drop, not acknowledged since
  }

  /**
   * The application has this `mail` (as delivered through `sink.message`): it counts
   * towards the next `ack_mail`, once every mail received before it is handed out too.
   * Call `ackMail()` to send it (the client coalesces a burst into one).
   */
  handedOut(mail: Mail): void {
    const from = this.mailFrom.get(mail);
    from?.box.handedOut(mail.mail_seq, from.generation);
  }

  /**
   * Send `ack_mail` up to the last mail handed out, if the server was not told and none is
   * on the wire (when answered, it sends the next itself if more was handed out
   * meanwhile). Returns the `ack_mail` on the wire, if any: it settles once answered.
   */
  ackMail(): Promise<unknown> | undefined {
    const box = this.mailbox;
    if (box === undefined || !this.connected) {
      return undefined;
    }
    if (box.ackDue) {
      const upTo = box.handled;
      const { reply } = this.command({ type: "ack_mail", up_to: upTo }, true);
      const acking = reply.then(
        () => {
          if (box.acking === acking) {
            box.acking = undefined;
            box.acked = Math.max(box.acked, upTo);
            this.ackMail();
          }
        },
        () => {
          // Refused past its retries: the next reconnect, or the next mail handed out, sends it again.
          if (box.acking === acking) {
            box.acking = undefined;
          }
        },
      );
      box.acking = acking;
    }
    return box.acking;
  }

  /** Select the connection's mailbox: the user's with auth on, else the client id's. */
  private openMailbox(hello: Connected): void {
    this.resumeClientId ??= hello.client_id;
    const owner = hello.user ?? hello.client_id;
    let box = this.mailboxes.get(owner);
    if (box === undefined) {
      const oldest = this.mailboxes.keys().next();
      if (this.mailboxes.size >= MAILBOXES_KEPT && oldest.done !== true) {
        this.mailboxes.delete(oldest.value);
      }
      box = new MailboxState(owner);
      this.mailboxes.set(owner, box);
    }
    this.mailbox = box;
  }

  /** Whether a `mail` is new (not a repeat of one handed out before a reconnect). */
  private receiveMail(mail: Mail): boolean {
    const box = this.mailbox;
    if (box === undefined) {
      return true; // before any greeting: nothing to tell a repeat by
    }
    if (!box.receive(mail.mail_seq)) {
      return false;
    }
    this.mailFrom.set(mail, { box, generation: box.generation });
    return true;
  }

  /**
   * Answers to a request closed unanswered can only be refused: settle them now. Queued,
   * waiting for a rate-limit retry or unacknowledged, across a reconnect too: no copy was
   * applied (the gateway never closes an answered request), so none need go (again).
   */
  private settleAnswersToClosed(event: InputClosedEvent): void {
    for (const [id, entry] of this.pending) {
      const frame = entry.frame;
      if (
        frame.type === "node_input" &&
        frame.workflow_id === event.workflow_id &&
        frame.request_id === event.request_id
      ) {
        this.pending.delete(id);
        if (entry.sent) {
          this.answeredEarly.add(id);
        }
        entry.reject(new InputClosed(event.workflow_id, event.request_id, event.reason));
      }
    }
  }

  private retryable(entry: Pending, code: ErrorCode): boolean {
    if (!entry.repeatable) {
      return false;
    }
    if (code === "rate_limited") {
      return entry.rateLimited < RATE_LIMIT_RETRIES;
    }
    const unavailable = code === "run_unavailable" || code === "mailbox_unavailable";
    return unavailable && entry.unavailable < RUN_UNAVAILABLE_RETRIES;
  }

  /**
   * A `rate_limited` or `run_unavailable` answer to a command that is safe to repeat: it
   * goes again, the same frame, after `retry_after` seconds (1 if the server named none)
   * on the connection of that moment; a resume in the meantime sends it instead. A
   * `rate_limited` copy was not applied; a `run_unavailable` one may have been, and the
   * same frame again counts once.
   */
  private retryLater(entry: Pending, code: ErrorCode, retryAfter: number | undefined): void {
    entry.sent = false;
    if (code === "rate_limited") {
      entry.rateLimited++;
      // Refused, so this copy started nothing: a resend needs no re-read on its account.
      entry.everSent = false;
    } else {
      entry.unavailable++;
    }
    this.sink.later((retryAfter ?? 1) * 1000, () => {
      if (this.pending.get(entry.frame.id) === entry && !entry.sent && this.connected) {
        this.write(entry);
      }
    });
  }

  private write(entry: Pending): void {
    // A resent start may have started its run the first time: read the log after the answer.
    entry.reread ||= entry.everSent && entry.frame.type === "start_workflow";
    entry.sent = true;
    entry.everSent = true;
    this.sink.send(entry.frame);
  }

  /** The client gave up or was closed: every command and every open run fails with `error`. */
  fail(error: GraphwireError): void {
    this.connected = false;
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const entry of entries) {
      entry.reject(error);
    }
    for (const state of this.runs.values()) {
      state.fail(error);
    }
  }

  /** Events went missing on this connection: re-read the run's log after its last seq. */
  private resync(state: RunState): void {
    if (state.resyncing || state.subscribing || state.finished) {
      return;
    }
    state.resyncing = true;
    // The server skips seqs at or below the last one it gave this connection; detaching
    // first makes the subscribe replay everything after `since_seq`.
    this.internal({ type: "unsubscribe", workflow_id: state.workflowId });
    this.subscribeRun(state);
  }

  /**
   * Subscribes the run again from its last seq, naming the log it came from (`epoch`), so
   * that a log lost and recreated meanwhile is told (`recovered: false`, the whole new
   * log), not replayed from `since_seq` as if it were the one this client knew.
   */
  private subscribeRun(state: RunState): void {
    state.subscribing = true;
    const { reply } = this.command(
      {
        type: "subscribe",
        workflow_id: state.workflowId,
        since_seq: state.lastSeq,
        ...(state.epoch !== undefined && { epoch: state.epoch }),
      },
      true,
    );
    reply.catch((error: unknown) => {
      state.subscribing = false;
      if (this.runs.get(state.workflowId) === state) {
        const message = error instanceof Error ? error.message : String(error);
        state.fail(
          new RunLost(state.workflowId, `run ${state.workflowId} can no longer be followed: ${message}`, {
            cause: error,
          }),
        );
      }
    });
  }

  private internal(frame: WorkflowCommand): void {
    this.command(frame, true).reply.catch(() => {
      // Internal commands are best effort; a drop re-issues them on the next resume.
    });
  }
}
