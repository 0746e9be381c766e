/**
 * A TCP proxy between a client and the gateway that the test controls: it can cut every
 * open connection, refuse new ones, or cut a connection right after forwarding a chosen
 * client frame (so that the server acts on it but its answer is lost), or instead of
 * forwarding it (so that the server never sees it). It forwards the client's bytes a
 * whole WebSocket frame at a time, and records the client's text frames.
 */

import net from "node:net";

export class Proxy {
  readonly port: number;
  /** How many client connections the proxy has accepted (and not refused). */
  accepted = 0;
  /** How many times it cut connections. */
  cuts = 0;
  /** The payload of every text frame a client sent through the proxy (best effort), in order. */
  readonly clientFrames: string[] = [];
  private readonly server: net.Server;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private refusing = false;
  private trigger: { needle: string; forward: boolean; answer: string | undefined; resolve: () => void } | undefined;

  private constructor(server: net.Server, port: number) {
    this.server = server;
    this.port = port;
  }

  /** A proxy to `targetPort`, listening on `listenPort` (default: a free port). */
  static async start(targetPort: number, listenPort = 0): Promise<Proxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(listenPort, "127.0.0.1", resolve);
    });
    const address = server.address();
    if (address === null || typeof address === "string") {
      throw new Error("no port");
    }
    const proxy = new Proxy(server, address.port);
    server.on("connection", (client) => proxy.accept(client, targetPort));
    return proxy;
  }

  url(path = "/ws/workflow"): string {
    return `ws://127.0.0.1:${this.port}${path}`;
  }

  /** Destroy every open connection, both sides, without a close frame (like a network drop). */
  cut(): void {
    this.cuts++;
    for (const [client, upstream] of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** While refusing, new connections are closed at once. */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /**
   * Forward the next client frame that contains `needle`, keep the server's bytes from the
   * client from then on, and cut the connection: once those bytes contain `answer` (the
   * server has acted on the frame), or without `answer` 50 ms after the frame left.
   */
  cutAfterClientSends(needle: string, answer?: string): Promise<void> {
    return new Promise((resolve) => {
      this.trigger = { needle, forward: true, answer, resolve };
    });
  }

  /** Cut the connection instead of forwarding the next client frame that contains `needle`. */
  cutBeforeClientSends(needle: string): Promise<void> {
    return new Promise((resolve) => {
      this.trigger = { needle, forward: false, answer: undefined, resolve };
    });
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, targetPort: number): void {
    if (this.refusing) {
      client.destroy();
      return;
    }
    this.accepted++;
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair: [net.Socket, net.Socket] = [client, upstream];
    this.pairs.add(pair);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    // Once muted, the server's bytes are kept from the client; `answer` is looked for in them.
    let muted = false;
    let unseen: { answer: string; cut: () => void } | undefined;
    let kept = "";
    upstream.on("data", (chunk: Buffer) => {
      if (!muted) {
        client.write(chunk);
        return;
      }
      kept += chunk.toString("latin1");
      if (unseen !== undefined && kept.includes(unseen.answer)) {
        unseen.cut();
        unseen = undefined;
      }
    });
    let pending: Buffer = Buffer.alloc(0);
    let upgraded = false;
    client.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!upgraded) {
        const end = pending.indexOf("\r\n\r\n");
        if (end < 0) {
          return;
        }
        upstream.write(pending.subarray(0, end + 4)); // the HTTP upgrade request, as is
        pending = pending.subarray(end + 4);
        upgraded = true;
      }
      const { frames, rest } = clientFrames(pending);
      pending = rest;
      for (const { raw, text } of frames) {
        this.clientFrames.push(text);
        const trigger = this.trigger;
        if (trigger === undefined || !text.includes(trigger.needle)) {
          upstream.write(raw);
          continue;
        }
        this.trigger = undefined;
        muted = true; // the client never sees an answer
        const cut = (): void => {
          this.cuts++;
          drop();
          trigger.resolve();
        };
        if (!trigger.forward) {
          cut(); // the server never sees the frame
          return;
        }
        if (trigger.answer !== undefined) {
          unseen = { answer: trigger.answer, cut };
          upstream.write(raw);
        } else {
          upstream.write(raw, () => setTimeout(cut, 50));
        }
      }
    });
  }
}

/**
 * The complete (masked) WebSocket frames at the start of `data` (RFC 6455 §5.2), each with
 * its unmasked payload as text, and the bytes of the frame not yet complete.
 */
function clientFrames(data: Buffer): { frames: Array<{ raw: Buffer; text: string }>; rest: Buffer } {
  const frames: Array<{ raw: Buffer; text: string }> = [];
  let offset = 0;
  while (offset + 2 <= data.length) {
    const second = data[offset + 1] ?? 0;
    let length = second & 0x7f;
    let head = 2;
    if (length === 126) {
      if (offset + 4 > data.length) {
        break;
      }
      length = data.readUInt16BE(offset + 2);
      head = 4;
    } else if (length === 127) {
      if (offset + 10 > data.length) {
        break;
      }
      length = Number(data.readBigUInt64BE(offset + 2));
      head = 10;
    }
    const masked = (second & 0x80) !== 0;
    const maskAt = offset + head;
    const dataAt = maskAt + (masked ? 4 : 0);
    if (dataAt + length > data.length) {
      break;
    }
    const payload = data.subarray(dataAt, dataAt + length);
    const text = Buffer.alloc(payload.length);
    for (let i = 0; i < payload.length; i++) {
      text[i] = (payload[i] ?? 0) ^ (masked ? (data[maskAt + (i % 4)] ?? 0) : 0);
    }
    frames.push({ raw: data.subarray(offset, dataAt + length), text: text.toString("utf8") });
    offset = dataAt + length;
  }
  return { frames, rest: data.subarray(offset) };
}
