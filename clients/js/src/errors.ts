/**
 * Every error the SDK throws or rejects with has one root, `GraphwireError` (the same
 * tree and names as the Python SDK's `graphwire_client.exceptions`):
 *
 * ```text
 * GraphwireError
 * ├── ConnectionLost          gave up reconnecting after `reconnect.maxAttempts` (terminal)
 * ├── ConnectionRejected      the server closed with a code that forbids retrying (terminal)
 * │   ├── ConnectionUnauthorized  4001: the token is missing, malformed or forged (also an `Unauthorized`)
 * │   ├── TokenExpired            4002 with no `getToken` to fetch a fresh one (also an `Unauthorized`)
 * │   └── ConnectionForbidden     4003: the token may not connect (also a `Forbidden`)
 * ├── ClientClosed            the client was closed while the call waited, or before it
 * ├── CommandInterrupted      the socket dropped while a command that is not safe to repeat
 * │                           (`cancel_workflow`, a raw `node_input` without a key) waited
 * ├── CommandTimeout          no answer to a command within `commandTimeoutMs`
 * ├── InvalidFrame            an inbound frame is not JSON or breaks the spec (`validate: true`)
 * ├── ServerError             an `error` frame answered a command (`code`, `retryAfter` …)
 * │   ├── BadRequest              invalid_json, binary_not_supported, not_an_object,
 * │   │                           unknown_type, invalid_message, message_too_large,
 * │   │                           since_seq_ahead
 * │   ├── UnknownWorkflow         unknown_workflow
 * │   ├── InvalidParams           invalid_params
 * │   ├── UnknownRun              unknown_run
 * │   ├── RunFinished             run_finished
 * │   ├── InputRejected           no_pending_input, unknown_request,
 * │   │   │                       input_already_answered, invalid_input
 * │   │   └── InputClosed             the request was closed unanswered (`input_closed`)
 * │   │                               while the answer waited to be sent or acknowledged
 * │   ├── IdempotencyConflict     idempotency_conflict
 * │   ├── RateLimited             rate_limited (see `retryAfter`; commands safe to repeat
 * │   │                           are retried first)
 * │   ├── TooManyRuns             too_many_runs
 * │   ├── TooManySubscriptions    too_many_subscriptions
 * │   ├── RunUnavailable          run_unavailable (the gateway running the run did not answer;
 * │   │                           commands safe to repeat are sent again first)
 * │   ├── MailboxUnavailable      mailbox_unavailable (with Redis, the mailbox did not answer;
 * │   │                           the client's own `ack_mail` is sent again first)
 * │   ├── Unauthorized            unauthorized (also: a token that is not a JWT, terminal)
 * │   ├── Forbidden               forbidden
 * │   └── InternalServerError     internal_error
 * └── RunError                a run did not end with `workflow_completed` (`workflowId`)
 *     ├── WorkflowFailed          `workflow_failed` (`code` is input_timeout, node_error …)
 *     │   ├── EventTooLarge           … with event_too_large
 *     │   └── GatewayShutdown         … with gateway_shutdown (start the run again)
 *     ├── WorkflowCancelled       `workflow_cancelled`
 *     └── RunLost                 the run can no longer be followed (the server forgot it)
 * ```
 *
 * The three close errors are also the `ServerError` of their meaning, so `instanceof
 * Unauthorized` catches a refused token whether the server said so in an `error` frame (a
 * `refresh_token` whose token does not verify; the connection stays usable) or by closing
 * the connection. A class has one parent in JavaScript: they extend `Unauthorized` or
 * `Forbidden`, and `ConnectionRejected`'s `instanceof` takes them in too, as the Python
 * SDK's classes of the same names inherit from both.
 */

import type { ErrorCode, ErrorDetail, ErrorMessage, InputClosedReason } from "./generated/index.js";

/** The root of every error the SDK throws. */
export class GraphwireError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The client gave up: `attempts` consecutive connection attempts failed. Terminal. */
export class ConnectionLost extends GraphwireError {
  constructor(
    message: string,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const CLOSE_NAMES: Readonly<Record<number, string>> = {
  1008: "policy_violation",
  1009: "message_too_big",
  4001: "unauthorized",
  4002: "token_expired",
  4003: "forbidden",
};

function closeMessage(closeCode: number, reason: string): string {
  const name = CLOSE_NAMES[closeCode] ?? "unknown";
  return `the server closed the connection with ${closeCode} (${name})${reason ? `: ${reason}` : ""}`;
}

/**
 * The server closed the socket with a code that retrying cannot fix: 4001 unauthorized,
 * 4002 token expired (only without a `getToken`), 4003 forbidden, 1008 policy violation
 * (an `Origin` not allowed, or sustained abuse of the rate limits), 1009 a frame above
 * `max_message_size`. Terminal, like `ConnectionLost`. `closeRefusal` picks the class of
 * a code; `instanceof ConnectionRejected` is also true of the three auth close errors.
 */
export class ConnectionRejected extends GraphwireError {
  constructor(
    readonly closeCode: number,
    readonly reason: string = "",
  ) {
    super(closeMessage(closeCode, reason));
  }

  static override [Symbol.hasInstance](value: unknown): boolean {
    const own = Function.prototype[Symbol.hasInstance].call(this, value);
    return own || (this === ConnectionRejected && isAuthClose(value));
  }
}

/** The client was closed (`close()`) while this call waited, or before it. */
export class ClientClosed extends GraphwireError {
  constructor(message = "the client is closed") {
    super(message);
  }
}

/**
 * The connection dropped while a command that is not safe to repeat (`cancel_workflow`,
 * or a `node_input` sent without an `idempotency_key`) waited for its answer: it may or
 * may not have been applied. The run's events tell (`input_answered`,
 * `workflow_cancelled`). `run.respond(...)` never rejects with it: its answer carries a
 * key and is sent again after the reconnect.
 */
export class CommandInterrupted extends GraphwireError {
  constructor(readonly command: string) {
    super(`the connection dropped before the server answered ${command}; it may or may not have been applied`);
  }
}

/** The server did not answer a command within `commandTimeoutMs`. */
export class CommandTimeout extends GraphwireError {
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
  ) {
    super(`no answer to ${command} within ${timeoutMs} ms`);
  }
}

/** An inbound frame is not JSON, or (with `validate: true`) breaks the spec. It is dropped. */
export class InvalidFrame extends GraphwireError {
  constructor(
    message: string,
    readonly frame: unknown,
    readonly errors: readonly string[] = [],
  ) {
    super(message);
  }
}

/**
 * The server refused a command with an `error` frame; the connection stays usable.
 * The fields are the frame's.
 */
export class ServerError extends GraphwireError {
  readonly code: ErrorCode;
  readonly path: string | undefined;
  readonly workflowId: string | undefined;
  /** Seconds to wait before retrying (with `rate_limited`). */
  readonly retryAfter: number | undefined;
  readonly replyTo: string | undefined;

  constructor(readonly frame: ErrorMessage) {
    super(`${frame.code}: ${frame.message}`);
    this.code = frame.code;
    this.path = frame.path;
    this.workflowId = frame.workflow_id;
    this.retryAfter = frame.retry_after;
    this.replyTo = frame.reply_to;
  }
}

/**
 * The frame was not a valid message (`invalid_message` names the field in `path`), or
 * asked for what cannot be (`since_seq_ahead`: a `since_seq` above the run's `last_seq`).
 */
export class BadRequest extends ServerError {}
/** No workflow is registered under that name. */
export class UnknownWorkflow extends ServerError {}
/** The params break the workflow's params schema; `path` names the field. */
export class InvalidParams extends ServerError {}
/** No run with that `workflow_id` (never started, or forgotten after its retention time). */
export class UnknownRun extends ServerError {}
/** The run has already ended. */
export class RunFinished extends ServerError {}
/** An answer to an input request was refused (already answered, unknown, not one of the options…). */
export class InputRejected extends ServerError {}

/**
 * The input request was closed unanswered (`input_closed`) before this answer landed.
 * `run.respond(...)` rejects with it when the run's `input_closed` for its request arrives
 * while the answer is still queued, waiting for a rate-limit retry or for its `ack`
 * (across a reconnect too): the gateway would refuse it with `unknown_request` (its
 * `code`). `reason` is the event's: `timeout` (nobody answered in time) or
 * `node_finished` (the node ended without waiting for it).
 */
export class InputClosed extends InputRejected {
  constructor(
    workflowId: string,
    readonly requestId: string,
    readonly reason: InputClosedReason,
  ) {
    super({
      type: "error",
      code: "unknown_request",
      message: `input request ${JSON.stringify(requestId)} was closed unanswered (${reason})`,
      path: "request_id",
      workflow_id: workflowId,
    });
  }
}
/** The `idempotency_key` was used before with other params. */
export class IdempotencyConflict extends ServerError {}
/**
 * Too many commands; wait `retryAfter` seconds (the command was not applied). A command
 * that is safe to repeat (see `isRepeatable`) is sent again after `retryAfter`, up to
 * three times, before its promise rejects with this; others reject with it at once.
 */
export class RateLimited extends ServerError {}
/** Nothing was started: the connection or the gateway already has as many runs in flight as allowed. */
export class TooManyRuns extends ServerError {}
/** Nothing changed: the connection already watches as many runs, topics and groups as allowed. */
export class TooManySubscriptions extends ServerError {}
/**
 * The gateway does not accept the token (missing, malformed, forged, signed with another
 * key). As an `error` frame it answers a `refresh_token` whose token does not verify (the
 * old token stays in force). As `ConnectionUnauthorized` (4001) or `TokenExpired` (4002)
 * the server closed the connection and the client is done. The client also ends with it,
 * before opening a socket, when its token is not a compact JWT.
 */
export class Unauthorized extends ServerError {}
/**
 * The token may not do this: it lacks the scope, the run belongs to another user, or a
 * `refresh_token` names another `sub`. The `error` frame leaves the connection usable;
 * `ConnectionForbidden` (4003) ends the client.
 */
export class Forbidden extends ServerError {}
/**
 * With several gateways, the gateway that runs the run did not answer in time; the command
 * may or may not have been applied. A command that is safe to repeat (see `isRepeatable`:
 * an answer with its `idempotency_key`, a `subscribe`) is sent again, the same frame, up
 * to three times before its promise rejects with this; a `cancel_workflow` rejects with
 * it at once: send it again if the run should still end.
 */
export class RunUnavailable extends ServerError {}
/**
 * With Redis, the user's mailbox could not be reached in time (an `ack_mail`). The client
 * sends its own `ack_mail` again, the same frame, after `retryAfter`, and once more after
 * the next reconnect; nothing is lost meanwhile: mail not acknowledged is only delivered
 * again (and the client skips the repeats).
 */
export class MailboxUnavailable extends ServerError {}
/** A bug on the server; the command may be retried. */
export class InternalServerError extends ServerError {}

const BY_CODE: Partial<Record<ErrorCode, typeof ServerError>> = {
  invalid_json: BadRequest,
  binary_not_supported: BadRequest,
  not_an_object: BadRequest,
  unknown_type: BadRequest,
  invalid_message: BadRequest,
  message_too_large: BadRequest,
  // A `subscribe` from a seq the run has not reached: nothing was attached.
  since_seq_ahead: BadRequest,
  unknown_workflow: UnknownWorkflow,
  invalid_params: InvalidParams,
  unknown_run: UnknownRun,
  run_finished: RunFinished,
  no_pending_input: InputRejected,
  unknown_request: InputRejected,
  input_already_answered: InputRejected,
  invalid_input: InputRejected,
  idempotency_conflict: IdempotencyConflict,
  rate_limited: RateLimited,
  too_many_runs: TooManyRuns,
  too_many_subscriptions: TooManySubscriptions,
  run_unavailable: RunUnavailable,
  mailbox_unavailable: MailboxUnavailable,
  unauthorized: Unauthorized,
  forbidden: Forbidden,
  internal_error: InternalServerError,
};

/**
 * The server closed with 4001: the token is missing, malformed or forged. Terminal and
 * not retried, not even with a `getToken`: the same refusal would come back.
 */
export class ConnectionUnauthorized extends Unauthorized {
  constructor(
    readonly closeCode: number = 4001,
    readonly reason: string = "",
  ) {
    super({ type: "error", code: "unauthorized", message: reason || "the server refused the token" });
    this.message = closeMessage(closeCode, reason);
  }
}

/**
 * The server closed with 4002 (the token expired) and the client has no `getToken`. A
 * static `token` cannot be renewed: make a client with a fresh one (runs can be followed
 * again with `attach(workflowId, { sinceSeq: run.lastSeq })`), or pass `getToken` so that
 * the client refreshes before expiry and reconnects after a 4002.
 */
export class TokenExpired extends Unauthorized {
  constructor(
    readonly closeCode: number = 4002,
    readonly reason: string = "",
  ) {
    super({ type: "error", code: "unauthorized", message: reason || "the token expired" });
    this.message = closeMessage(closeCode, reason);
  }
}

/** The server closed with 4003: the token is valid but may not connect. Terminal. */
export class ConnectionForbidden extends Forbidden {
  constructor(
    readonly closeCode: number = 4003,
    readonly reason: string = "",
  ) {
    super({ type: "error", code: "forbidden", message: reason || "the token may not connect" });
    this.message = closeMessage(closeCode, reason);
  }
}

function isAuthClose(value: unknown): boolean {
  return (
    value instanceof ConnectionUnauthorized || value instanceof TokenExpired || value instanceof ConnectionForbidden
  );
}

/**
 * The terminal error for a close code that forbids reconnecting (a `ConnectionRejected`),
 * or undefined when reconnecting may help. 4002 (token expired) is terminal only when
 * the client cannot get a fresh token (`canRefresh`: it has a `getToken`).
 */
export function closeRefusal(code: number, reason: string, canRefresh: boolean): ConnectionRejected | undefined {
  switch (code) {
    case 4001:
      return new ConnectionUnauthorized(code, reason);
    case 4002:
      return canRefresh ? undefined : new TokenExpired(code, reason);
    case 4003:
      return new ConnectionForbidden(code, reason);
    case 1008:
    case 1009:
      return new ConnectionRejected(code, reason);
    default:
      return undefined;
  }
}

/** The error for an `error` frame: the `ServerError` subclass of its `code`. */
export function errorFromFrame(frame: ErrorMessage): ServerError {
  const Class = BY_CODE[frame.code] ?? ServerError;
  return new Class(frame);
}

/** A run did not end with `workflow_completed`. */
export class RunError extends GraphwireError {
  constructor(
    readonly workflowId: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The run ended with `workflow_failed`; `error` is the spec's `ErrorDetail`. */
export class WorkflowFailed extends RunError {
  constructor(
    workflowId: string,
    readonly error: ErrorDetail,
  ) {
    const where = error.node_id ? ` in node ${JSON.stringify(error.node_id)}` : "";
    super(workflowId, `run ${workflowId} failed${where}: ${error.code}: ${error.message}`);
  }

  get code(): ErrorCode {
    return this.error.code;
  }

  get nodeId(): string | undefined {
    return this.error.node_id;
  }
}

/** The run ended with `workflow_cancelled`; `reason` says by whom, when the server tells. */
export class WorkflowCancelled extends RunError {
  constructor(
    workflowId: string,
    readonly reason?: string,
  ) {
    super(workflowId, `run ${workflowId} was cancelled${reason ? `: ${reason}` : ""}`);
  }
}

/** The run can no longer be followed: the server forgot it (`unknown_run` on resume). */
export class RunLost extends RunError {}

/** The run failed with `event_too_large`: a node produced an event above the gateway's `max_event_bytes`. */
export class EventTooLarge extends WorkflowFailed {}

/**
 * The run failed with `gateway_shutdown`: the gateway stopped while the run was in flight.
 * The run is gone (it cannot be resumed); start it again.
 */
export class GatewayShutdown extends WorkflowFailed {}

const FAILED_BY_CODE: Partial<Record<ErrorCode, typeof WorkflowFailed>> = {
  event_too_large: EventTooLarge,
  gateway_shutdown: GatewayShutdown,
};

/** The error for a run that ended with `workflow_failed`: the `WorkflowFailed` subclass of its `error.code`. */
export function workflowFailedError(workflowId: string, error: ErrorDetail): WorkflowFailed {
  const Class = FAILED_BY_CODE[error.code] ?? WorkflowFailed;
  return new Class(workflowId, error);
}
