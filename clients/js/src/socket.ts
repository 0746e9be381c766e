/**
 * The transport seam: how the client opens a socket. The default uses the browser's
 * native `WebSocket`, or the `ws` package in Node (Node 20 has no global `WebSocket`).
 * Tests and unusual hosts can pass their own `transport`.
 */

import { GraphwireError } from "./errors.js";

/** An open socket, as the client uses it. */
export interface Socket {
  send(text: string): void;
  /** Starts the closing handshake; resolves once the socket is closed (or after a short wait). */
  close(code: number, reason: string): Promise<void>;
}

/** What the transport reports about an open socket. */
export interface SocketEvents {
  message(text: string): void;
  close(code: number, reason: string): void;
}

/** Opens a socket to `url`; resolves when it is open, rejects with `SocketOpenFailed` when it cannot be. */
export type Transport = (url: string, events: SocketEvents, options: { token?: string | undefined }) => Promise<Socket>;

/**
 * A WebSocket class with the browser's API: the browser's own `WebSocket`, or `ws`'s.
 * A third constructor argument with `headers` is used when present (the `ws` package).
 */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string> },
) => object;

/**
 * The socket could not be opened (`closeCode` is 1006 when there was no close frame).
 * Where the WebSocket class shows the server's answer to the handshake (`ws` in Node;
 * a browser never does), `status` is its HTTP status and `retryAfterMs` its
 * `Retry-After`: the gateway refuses a handshake above `max_connections` with 503 and
 * `Retry-After: 1`, and the client waits at least that long before the next attempt.
 */
export class SocketOpenFailed extends GraphwireError {
  constructor(
    readonly url: string,
    readonly closeCode: number,
    readonly reason: string,
    readonly status?: number,
    readonly retryAfterMs?: number,
  ) {
    const refused = status === undefined ? "" : `, HTTP ${status} at the handshake`;
    super(`could not open ${url} (close code ${closeCode}${reason ? `: ${reason}` : ""}${refused})`);
  }
}

/** A `Retry-After` header's delay-seconds (RFC 9110 §10.2.3) in milliseconds; undefined when absent or a date. */
export function retryAfterMs(value: string | string[] | undefined): number | undefined {
  const text = (Array.isArray(value) ? value[0] : value)?.trim();
  return text !== undefined && /^\d+$/.test(text) ? Number(text) * 1000 : undefined;
}

// The members of a browser-style WebSocket the transport touches.
interface BrowserStyleSocket {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

// `ws`'s Node API on top: the handshake's HTTP answer when the server did not upgrade.
interface HandshakeResponse {
  readonly statusCode?: number;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}
interface NodeStyleSocket {
  on(event: "unexpected-response", listener: (request: unknown, response: HandshakeResponse) => void): unknown;
  terminate(): void;
}

function isNodeStyle(socket: object): socket is NodeStyleSocket {
  const candidate = socket as Partial<NodeStyleSocket>;
  return typeof candidate.on === "function" && typeof candidate.terminate === "function";
}

const CLOSED = 3;
const CLOSE_WAIT_MS = 1000;

async function defaultConstructor(): Promise<{ ctor: WebSocketConstructor; headers: boolean }> {
  const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (native !== undefined) {
    return { ctor: native, headers: false };
  }
  const ws = await import("ws");
  return { ctor: ws.default as unknown as WebSocketConstructor, headers: true };
}

/** The subprotocol a browser offers beside `bearer.<token>`; the gateway selects it. */
export const SUBPROTOCOL = "graphwire.v1";

/**
 * The default transport, over `WebSocketClass` or else the host's `WebSocket` or `ws`.
 * The token travels as an `Authorization: Bearer` header where the WebSocket class can
 * send headers (`ws`), else (browsers cannot set headers on a WebSocket) as a pair of
 * subprotocols, `graphwire.v1` and `bearer.<token>`: the gateway reads the token from the
 * second and selects the first, and a browser fails an opening whose answer selects none.
 * Without a token nothing is offered.
 */
export function webSocketTransport(WebSocketClass?: WebSocketConstructor): Transport {
  return async (url, events, options) => {
    const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    // A class other than the host's own (e.g. `ws` passed explicitly) is asked for headers.
    const chosen =
      WebSocketClass !== undefined
        ? { ctor: WebSocketClass, headers: WebSocketClass !== native }
        : await defaultConstructor();
    const token = options.token;
    let raw: object;
    if (token === undefined) {
      raw = new chosen.ctor(url);
    } else if (chosen.headers) {
      raw = new chosen.ctor(url, [], { headers: { Authorization: `Bearer ${token}` } });
    } else {
      raw = new chosen.ctor(url, [SUBPROTOCOL, `bearer.${token}`]);
    }
    const socket = raw as BrowserStyleSocket;
    let closed: () => void = () => {};
    const whenClosed = new Promise<void>((resolve) => {
      closed = resolve;
    });
    // A browser shows nothing of a refused handshake (the attempt just fails); `ws` does.
    let refusal: { status: number | undefined; retryAfterMs: number | undefined } | undefined;
    if (isNodeStyle(raw)) {
      raw.on("unexpected-response", (_request, response) => {
        refusal = { status: response.statusCode, retryAfterMs: retryAfterMs(response.headers["retry-after"]) };
        raw.terminate(); // with a listener, `ws` leaves aborting the handshake to us; close (1006) follows
      });
    }
    return new Promise<Socket>((resolve, reject) => {
      let open = false;
      socket.onerror = () => {}; // the close event that follows carries the outcome
      socket.onopen = () => {
        open = true;
        resolve({
          send: (text) => socket.send(text),
          close: async (code, reason) => {
            if (socket.readyState !== CLOSED) {
              socket.close(code, reason);
              let timer: ReturnType<typeof setTimeout> | undefined;
              await Promise.race([whenClosed, new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
              clearTimeout(timer);
            }
          },
        });
      };
      socket.onmessage = (event) => {
        events.message(typeof event.data === "string" ? event.data : "");
      };
      socket.onclose = (event) => {
        closed();
        if (open) {
          events.close(event.code, event.reason);
        } else {
          reject(new SocketOpenFailed(url, event.code, event.reason, refusal?.status, refusal?.retryAfterMs));
        }
      };
    });
  };
}
