/** A transport whose sockets the test drives: each greets at once; it records what the client writes. */

import type { Connected, SocketEvents, Transport, WorkflowCommand } from "@graphwire/client";

export interface FakeTransport {
  readonly transport: Transport;
  /** Every frame the client wrote, over every socket. */
  readonly sent: WorkflowCommand[];
  /** The token each connection attempt was given, in order. */
  readonly tokens: Array<string | undefined>;
  /** A message from the server on the newest socket. */
  push(frame: object): void;
  /** The server closes the newest socket. */
  drop(code: number, reason?: string): void;
}

/** `greeting(n)` adds fields to the n-th socket's `connected` (1-based), e.g. `expires_at`. */
export function fakeTransport(greeting: (n: number) => Partial<Connected> = () => ({})): FakeTransport {
  const sent: WorkflowCommand[] = [];
  const tokens: Array<string | undefined> = [];
  const sockets: SocketEvents[] = [];
  const transport: Transport = async (_url, events, options) => {
    sockets.push(events);
    tokens.push(options.token);
    const n = sockets.length;
    setImmediate(() =>
      events.message(
        JSON.stringify({
          type: "connected",
          client_id: `cl_${n}`,
          protocol_version: "1",
          max_message_size: 1024,
          ...greeting(n),
        }),
      ),
    );
    return { send: (text) => sent.push(JSON.parse(text) as WorkflowCommand), close: async () => {} };
  };
  return {
    transport,
    sent,
    tokens,
    push: (frame) => sockets.at(-1)?.message(JSON.stringify(frame)),
    drop: (code, reason = "test") => sockets.at(-1)?.close(code, reason),
  };
}
