/**
 * `Run`: one run as the user sees it — its events in seq order (`for await`), its result,
 * and the commands that act on it.
 */

import { GraphwireError, InputClosed } from "./errors.js";
import type {
  Ack,
  JsonObject,
  PendingInput,
  RunEvent,
  RunSnapshot,
  RunStatus,
  WorkflowCommands,
} from "./generated/index.js";
import type { RunState } from "./run-state.js";

/** What a `Run` needs from its client. */
export interface RunHost {
  readonly commands: WorkflowCommands;
  /** Stop watching the run on this client (sends `unsubscribe`). */
  unsubscribe(state: RunState): Promise<void>;
}

/**
 * A run started or attached by this client. Iterate it for its events, in seq order,
 * each exactly once, across reconnects; the iteration ends after the terminal event.
 * `R` is the workflow's result type (from the spec for the built-in workflows).
 */
export class Run<R = JsonObject> implements AsyncIterable<RunEvent> {
  /** @internal */
  constructor(
    private readonly state: RunState,
    private readonly host: RunHost,
    /** Events at or below this seq are not part of this view (`attach(id, {sinceSeq})`). */
    readonly sinceSeq: number,
  ) {}

  /** The run's id (`workflow_id`). */
  get workflowId(): string {
    return this.state.workflowId;
  }

  /** The workflow's name, once `workflow_started` or the snapshot told it. */
  get workflow(): string | undefined {
    return this.state.workflow;
  }

  /** `running`, `waiting` (an input request is open), `completed`, `failed` or `cancelled`. */
  get status(): RunStatus {
    return this.state.status;
  }

  /** True once the run has ended (or can no longer be followed). */
  get finished(): boolean {
    return this.state.finished;
  }

  /** The last seq this client has seen. */
  get lastSeq(): number {
    return this.state.lastSeq;
  }

  /** The events received so far, in seq order. */
  get events(): readonly RunEvent[] {
    return this.state.events.filter((event) => event.seq > this.sinceSeq);
  }

  /** The input requests still open, as far as this client knows (`input_answered` and `input_closed` remove one). */
  get pendingInputs(): PendingInput[] {
    return [...this.state.pendingInputs.values()];
  }

  /** The snapshot from the last `subscribed` answer (attach, resume), if any. */
  get snapshot(): RunSnapshot | undefined {
    return this.state.snapshot;
  }

  /**
   * False once a `subscribed` for this run (attach, resume) said `recovered: false`: the
   * replay did not continue this client's view. The server's log was trimmed past the
   * last seq it had (the client's `gap` event names the seqs that never come), or, with
   * several gateways on Redis, the log was lost and recreated under another `epoch`. The
   * client then rebuilt what it knows from the server's `snapshot` (open inputs, status)
   * and the replay that follows; seqs it had already seen are not yielded again. Rebuild
   * your own view from `snapshot` too. A server before 0.5.0 sends no `recovered`: there
   * it is false after a `log_truncated`.
   */
  get recovered(): boolean {
    return this.state.recovered;
  }

  /**
   * The run's events in seq order, each once, ending after the terminal event. Rejects
   * with `ConnectionLost`, `ConnectionRejected` or `ClientClosed` if the run can no longer
   * be followed. Every iteration starts from the first event of this view.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<RunEvent, void, undefined> {
    const state = this.state;
    let index = state.events.findIndex((event) => event.seq > this.sinceSeq);
    if (index < 0) {
      index = state.events.length;
    }
    for (;;) {
      while (index < state.events.length) {
        const event = state.events[index++];
        if (event !== undefined) {
          yield event;
        }
      }
      const outcome = state.outcome;
      if (outcome !== undefined) {
        if (outcome.status === "lost") {
          throw outcome.error;
        }
        return;
      }
      await state.changed();
    }
  }

  /**
   * The workflow's result, once the run completes. Rejects with `WorkflowFailed` (its
   * subclass `GatewayShutdown` when the gateway stopped while the run was in flight: start
   * it again; `EventTooLarge`) or `WorkflowCancelled` when it ends otherwise, or with the
   * connection's terminal error.
   */
  async result(): Promise<R> {
    const state = this.state;
    while (state.outcome === undefined) {
      await state.changed();
    }
    const outcome = state.outcome;
    if (outcome.status === "completed") {
      // The server validated the result against the workflow's result schema.
      return outcome.result as unknown as R;
    }
    throw outcome.error;
  }

  /**
   * Answer an `input_request` of this run (`node_input`). The first valid answer wins;
   * another answer is refused with `InputRejected` (`input_already_answered`). `nodeId` is
   * only needed for a request this client has not seen.
   *
   * Exactly once across drops: the answer carries one `idempotency_key`; if the connection
   * drops before the `ack`, the same `node_input` is sent again after the resume and the
   * gateway acks the repeat of an answer it applied. The promise settles once, with that
   * `ack`, or with the re-send's typed error (`InputRejected` when another client answered
   * first, `RunFinished` …). A request closed unanswered (`input_closed`) rejects it with
   * `InputClosed` (an `InputRejected`; `reason`: `timeout`, `node_finished`): at once if
   * this client has that event already, else as soon as it arrives, even while the answer
   * waits for a reconnect or a rate-limit retry.
   */
  respond(requestId: string, data: JsonObject, options: { nodeId?: string } = {}): Promise<Ack> {
    const closed = this.state.closedInput(requestId);
    if (closed !== undefined) {
      return Promise.reject(new InputClosed(this.workflowId, requestId, closed.reason));
    }
    const nodeId = options.nodeId ?? this.nodeOf(requestId);
    if (nodeId === undefined) {
      return Promise.reject(
        new GraphwireError(
          `run ${this.workflowId} has no input request ${requestId} that this client saw; pass nodeId`,
        ),
      );
    }
    return this.host.commands.nodeInput({
      workflow_id: this.workflowId,
      node_id: nodeId,
      request_id: requestId,
      data,
    });
  }

  /** Cancel the run (`cancel_workflow`); it ends with `workflow_cancelled`. */
  cancel(): Promise<Ack> {
    return this.host.commands.cancelWorkflow({ workflow_id: this.workflowId });
  }

  /** Stop watching the run on this client (`unsubscribe`); iterations end with `ClientClosed`. */
  unsubscribe(): Promise<void> {
    return this.host.unsubscribe(this.state);
  }

  private nodeOf(requestId: string): string | undefined {
    const open = this.state.pendingInputs.get(requestId);
    if (open !== undefined) {
      return open.node_id;
    }
    for (const event of this.state.events) {
      if (
        (event.type === "input_request" || event.type === "input_answered" || event.type === "input_closed") &&
        event.request_id === requestId
      ) {
        return event.node_id;
      }
    }
    return undefined;
  }
}
