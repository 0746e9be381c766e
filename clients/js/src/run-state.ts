/**
 * What the client knows of one run (sans-I/O): its event log, the last `seq` seen, its
 * open input requests, and how it ended. `Run` objects are views over it; the client
 * feeds it events and `subscribed` answers.
 */

import { type GraphwireError, RunLost, WorkflowCancelled, type WorkflowFailed, workflowFailedError } from "./errors.js";
import type {
  InputClosed as InputClosedEvent,
  JsonObject,
  PendingInput,
  RunEvent,
  RunSnapshot,
  RunStatus,
  Subscribed,
  WorkflowCancelled as WorkflowCancelledEvent,
  WorkflowCompleted,
  WorkflowFailed as WorkflowFailedEvent,
} from "./generated/index.js";

/** The event that ends a run: exactly one of these is the last event of every run. */
export type TerminalEvent = WorkflowCompleted | WorkflowFailedEvent | WorkflowCancelledEvent;

const TERMINAL_TYPES: ReadonlySet<string> = new Set(["workflow_completed", "workflow_failed", "workflow_cancelled"]);

/** The longest `epoch` a `subscribe` may carry (`components.schemas.Subscribe`). */
const EPOCH_MAX = 64;

/** Whether a `subscribe` can carry `epoch` back (non-empty, at most `EPOCH_MAX`). */
function carriable(epoch: string | undefined): epoch is string {
  return epoch !== undefined && epoch.length > 0 && epoch.length <= EPOCH_MAX;
}

/** Whether `event` ends its run. */
export function isTerminal(event: RunEvent): event is TerminalEvent {
  return TERMINAL_TYPES.has(event.type);
}

/** What `accept` made of an event: appended, already seen, or not the next one. */
export type Accepted = "new" | "duplicate" | "gap";

/** How a run ended, from its terminal event or, when the replay had none to give, its snapshot. */
export type Outcome =
  | { status: "completed"; result: JsonObject }
  | { status: "failed"; error: WorkflowFailed }
  | { status: "cancelled"; error: WorkflowCancelled }
  | { status: "lost"; error: GraphwireError };

export class RunState {
  workflow: string | undefined;
  /** Every event accepted, in seq order, without gaps. */
  readonly events: RunEvent[] = [];
  /** The last seq accepted (or the `since_seq` the client attached with). */
  lastSeq: number;
  snapshot: RunSnapshot | undefined;
  outcome: Outcome | undefined;
  /** Open input requests by `request_id`. */
  readonly pendingInputs = new Map<string, PendingInput>();
  /** A `subscribe` for this run is in flight (an attach, a resume or a resync). */
  subscribing = false;
  /** Events were found missing; a resync (`unsubscribe` + `subscribe since_seq`) is in flight. */
  resyncing = false;
  /**
   * The run log's `epoch`, sent back when resubscribing: the last `subscribed`'s, or,
   * before any, the one `workflow_started` named (a run this client started).
   */
  epoch: string | undefined;
  /** False once a `subscribed` said `recovered: false`: the state was rebuilt from its snapshot. */
  recovered = true;
  private waiters: Array<() => void> = [];

  constructor(
    readonly workflowId: string,
    sinceSeq = 0,
  ) {
    this.lastSeq = sinceSeq;
  }

  get finished(): boolean {
    return this.outcome !== undefined;
  }

  /** The run's status as far as this client knows. */
  get status(): RunStatus {
    const outcome = this.outcome;
    if (outcome !== undefined) {
      return outcome.status === "lost" ? "failed" : outcome.status;
    }
    return this.pendingInputs.size > 0 ? "waiting" : "running";
  }

  /** Take one event of this run: append it if it is the next seq. */
  accept(event: RunEvent): Accepted {
    if (event.seq <= this.lastSeq) {
      return "duplicate";
    }
    if (event.seq !== this.lastSeq + 1) {
      return "gap";
    }
    this.lastSeq = event.seq;
    this.events.push(event);
    switch (event.type) {
      case "workflow_started":
        this.workflow = event.workflow;
        if (this.epoch === undefined && carriable(event.epoch)) {
          // A starter gets no `subscribed` before its first resume. Seq 1 keeps the epoch
          // its log was first written under, so a `subscribed` (newer) wins.
          this.epoch = event.epoch;
        }
        break;
      case "input_request": {
        const { request_id, node_id, prompt, options, expires_at } = event;
        this.pendingInputs.set(request_id, {
          request_id,
          node_id,
          prompt,
          ...(options !== undefined && { options }),
          ...(expires_at !== undefined && { expires_at }),
        });
        break;
      }
      case "input_answered":
      case "input_closed":
        this.pendingInputs.delete(event.request_id);
        break;
      case "workflow_completed":
        // The result travels in `data`, as every node payload does (the seed's envelope).
        this.finish({ status: "completed", result: event.data });
        break;
      case "workflow_failed":
        this.finish({ status: "failed", error: workflowFailedError(this.workflowId, event.error) });
        break;
      case "workflow_cancelled":
        this.finish({ status: "cancelled", error: new WorkflowCancelled(this.workflowId, event.reason) });
        break;
      default:
        break;
    }
    this.wake();
    return "new";
  }

  /**
   * Take the answer to a `subscribe` for this run: its `epoch`, its snapshot, and whether
   * the replay continues this view. Returns the seqs that can never be replayed (`[from,
   * to]`, when the log no longer reaches back), else `undefined`. With `recovered: false`
   * (the log was trimmed past the last seq, or lost and recreated under another `epoch`;
   * from a server before 0.5.0, `log_truncated`) the open inputs are rebuilt from the
   * snapshot, and the replay's seqs already seen are dropped as duplicates.
   */
  applySubscribed(reply: Subscribed): [number, number] | undefined {
    this.subscribing = false;
    this.resyncing = false;
    if (carriable(reply.epoch)) {
      this.epoch = reply.epoch;
    }
    const snapshot = reply.snapshot;
    // A server before 0.5.0 sends no `recovered`: only a trimmed log breaks the view there.
    const recovered = reply.recovered ?? reply.log_truncated !== true;
    let lost: [number, number] | undefined;
    if (!recovered) {
      this.recovered = false;
      if (snapshot !== undefined && snapshot.last_seq < this.lastSeq) {
        // A recreated log that ends before what this client saw would reuse its seqs.
        this.fail(
          new RunLost(
            this.workflowId,
            `the server's log of run ${this.workflowId} ends before the events this client saw`,
          ),
        );
        return undefined;
      }
      if (reply.first_seq !== undefined && reply.first_seq > this.lastSeq + 1) {
        lost = [this.lastSeq + 1, reply.first_seq - 1];
        this.lastSeq = reply.first_seq - 1;
      }
    }
    if (snapshot !== undefined) {
      this.snapshot = snapshot;
      this.workflow ??= snapshot.workflow;
      if (this.events.length === 0 || !recovered) {
        // Nothing seen, or a view the replay does not continue: the server's open inputs hold.
        this.pendingInputs.clear();
        for (const input of snapshot.pending_inputs) {
          this.pendingInputs.set(input.request_id, input);
        }
      }
      // Attached at or after the last event of a finished run: no terminal event will come.
      if (!this.finished && snapshot.last_seq <= this.lastSeq) {
        const outcome = outcomeOf(this.workflowId, snapshot);
        if (outcome !== undefined) {
          this.finish(outcome);
        }
      }
    }
    this.wake();
    return lost;
  }

  /** The `input_closed` event of `requestId`, if this client received it. */
  closedInput(requestId: string): InputClosedEvent | undefined {
    for (const event of this.events) {
      if (event.type === "input_closed" && event.request_id === requestId) {
        return event;
      }
    }
    return undefined;
  }

  /** The run can no longer be followed (the client gave up, was closed, or the server forgot the run). */
  fail(error: GraphwireError): void {
    if (!this.finished) {
      this.finish({ status: "lost", error });
    }
  }

  /** Resolves at the next change (an event, a subscribed answer, the end). */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private finish(outcome: Outcome): void {
    this.outcome = outcome;
    this.pendingInputs.clear();
    this.wake();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) {
      wake();
    }
  }
}

function outcomeOf(workflowId: string, snapshot: RunSnapshot): Outcome | undefined {
  switch (snapshot.status) {
    case "completed":
      return { status: "completed", result: snapshot.result ?? {} };
    case "failed":
      return {
        status: "failed",
        error: workflowFailedError(workflowId, snapshot.error ?? { code: "internal_error", message: "the run failed" }),
      };
    case "cancelled":
      return { status: "cancelled", error: new WorkflowCancelled(workflowId) };
    default:
      return undefined;
  }
}
