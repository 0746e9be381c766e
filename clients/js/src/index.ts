/**
 * `@graphwire/client`: a typed client for the graphwire WebSocket gateway, for browsers
 * (native `WebSocket`) and Node 20 (the `ws` package).
 *
 * The message types, the per-workflow params and results and the raw commands are
 * generated from `spec/asyncapi.yaml` (`./generated/`); the rest is hand-written.
 */

export {
  DEFAULT_REFRESH_MARGIN_MS,
  type TokenProvider,
  TokenSource,
  checkedToken,
  refreshDelay,
  tokenExpiry,
} from "./auth.js";
export { DEFAULT_RECONNECT, type ReconnectPolicy, backoffDelay, rateLimitDelay } from "./backoff.js";
export {
  type AttachOptions,
  type ClientEvents,
  type ClientOptions,
  type ConnectionState,
  GraphwireClient,
  MAIL_ACK_DELAY_MS,
  type ParamsOf,
  type ResultOf,
  type StartOptions,
  type StateChange,
} from "./client.js";
export {
  ClientCore,
  type CoreSink,
  type Gap,
  RATE_LIMIT_RETRIES,
  RUN_UNAVAILABLE_RETRIES,
  isRepeatable,
} from "./core.js";
// Explicit, so that the errors named like the Python SDK's (`WorkflowFailed`,
// `WorkflowCancelled`) win over the message types of the same name, which stay
// reachable as `messages.WorkflowFailed` and `WorkflowFailedEvent`.
export {
  BadRequest,
  ClientClosed,
  CommandInterrupted,
  CommandTimeout,
  ConnectionForbidden,
  ConnectionLost,
  ConnectionRejected,
  ConnectionUnauthorized,
  EventTooLarge,
  Forbidden,
  GatewayShutdown,
  GraphwireError,
  IdempotencyConflict,
  InputClosed,
  InputRejected,
  InternalServerError,
  InvalidFrame,
  InvalidParams,
  MailboxUnavailable,
  RateLimited,
  RunError,
  RunFinished,
  RunLost,
  RunUnavailable,
  ServerError,
  TokenExpired,
  TooManyRuns,
  TooManySubscriptions,
  Unauthorized,
  UnknownRun,
  UnknownWorkflow,
  WorkflowCancelled,
  WorkflowFailed,
  closeRefusal,
  errorFromFrame,
  workflowFailedError,
} from "./errors.js";
export { type FrameValidator, decodeFrame } from "./frames.js";
export { MailboxState } from "./mail.js";
export * from "./generated/index.js";
export * as messages from "./generated/index.js";
export type {
  WorkflowCancelled as WorkflowCancelledEvent,
  WorkflowFailed as WorkflowFailedEvent,
} from "./generated/index.js";
export { Run, type RunHost } from "./run.js";
export { type Accepted, type Outcome, RunState, type TerminalEvent, isTerminal } from "./run-state.js";
export {
  SUBPROTOCOL,
  type Socket,
  SocketOpenFailed,
  type SocketEvents,
  type Transport,
  type WebSocketConstructor,
  retryAfterMs,
  webSocketTransport,
} from "./socket.js";
