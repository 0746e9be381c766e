/**
 * A TCP proxy between a client and the gateway that the test controls: it can cut every
 * open connection, refuse new ones, or cut a connection right after forwarding a chosen
 * client frame (so that the server acts on it but its answer is lost).
 */

import net from "node:net";

export class Proxy {
  readonly port: number;
  /** How many client connections the proxy has accepted (and not refused). */
  accepted = 0;
  /** How many times it cut connections. */
  cuts = 0;
  private readonly server: net.Server;
  private readonly pairs = new Set<[net.Socket, net.Socket]>();
  private refusing = false;
  private trigger: { needle: string; resolve: () => void } | undefined;

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

  /** Cut the connection right after forwarding the next client frame whose bytes contain `needle`. */
  cutAfterClientSends(needle: string): Promise<void> {
    return new Promise((resolve) => {
      this.trigger = { needle, resolve };
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
    let muted = false;
    upstream.on("data", (chunk: Buffer) => {
      if (!muted) {
        client.write(chunk);
      }
    });
    client.on("data", (chunk: Buffer) => {
      const trigger = this.trigger;
      // Client frames are masked; look for the needle in the unmasked payload.
      if (trigger === undefined || !unmask(chunk).includes(trigger.needle)) {
        upstream.write(chunk);
        return;
      }
      this.trigger = undefined;
      muted = true; // the server gets the frame, the client never sees the answer
      upstream.write(chunk, () => {
        setTimeout(() => {
          this.cuts++;
          drop();
          trigger.resolve();
        }, 50);
      });
    });
  }
}

/** The text payloads of the client's (masked) WebSocket frames in `chunk`, best effort. */
function unmask(chunk: Buffer): string {
  let text = "";
  let offset = 0;
  while (offset + 2 <= chunk.length) {
    const second = chunk[offset + 1] ?? 0;
    let length = second & 0x7f;
    let head = 2;
    if (length === 126) {
      length = chunk.readUInt16BE(offset + 2);
      head = 4;
    } else if (length === 127) {
      length = Number(chunk.readBigUInt64BE(offset + 2));
      head = 10;
    }
    const masked = (second & 0x80) !== 0;
    const maskAt = offset + head;
    const dataAt = maskAt + (masked ? 4 : 0);
    const payload = chunk.subarray(dataAt, Math.min(dataAt + length, chunk.length));
    const out = Buffer.alloc(payload.length);
    for (let i = 0; i < payload.length; i++) {
      out[i] = (payload[i] ?? 0) ^ (masked ? (chunk[maskAt + (i % 4)] ?? 0) : 0);
    }
    text += out.toString("utf8");
    offset = dataAt + length;
  }
  return text;
}
