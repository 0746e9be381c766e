/**
 * The gateway the tests talk to: `GRAPHWIRE_TEST_HTTP` (set by `scripts/with-server.mjs`
 * or the pytest wrapper, which start a real `graphwire serve` on a free port); and
 * `startGateway(env)` for a test that needs a gateway with other settings.
 */

import { spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, openSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const HTTP = process.env.GRAPHWIRE_TEST_HTTP ?? "";
if (HTTP === "") {
  throw new Error("GRAPHWIRE_TEST_HTTP is not set: run the tests with `npm test` (scripts/with-server.mjs)");
}
export const WS = `${HTTP.replace(/^http/, "ws")}/ws/workflow`;
export const PORT = Number(new URL(HTTP).port);

/** POST a JSON body to the gateway's HTTP API. */
export async function post(path: string, body: object): Promise<unknown> {
  const response = await fetch(HTTP + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  }
  return response.json();
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A `graphwire serve` of the test's own, on a free port, with extra `GRAPHWIRE_*` settings. */
export interface Gateway {
  readonly http: string;
  readonly ws: string;
  /** SIGTERM, and wait for the process to exit. */
  stop(): Promise<void>;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../../..");

/** Starts a gateway as `scripts/with-server.mjs` does, with `env` on top (its log goes to a temp file). */
export async function startGateway(env: Record<string, string>): Promise<Gateway> {
  const probe = net.createServer().listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  await once(probe, "close");
  if (address === null || typeof address === "string") {
    throw new Error("no port");
  }
  const port = String(address.port);
  const bin = process.env.GRAPHWIRE_BIN ?? path.join(ROOT, ".venv", "bin", "graphwire");
  const log = openSync(path.join(tmpdir(), `graphwire-js-gateway-${port}.log`), "w");
  const child = spawn(bin, ["serve", "--port", port, "--workflows", "sample_workflows:register"], {
    env: { ...process.env, ...env, PYTHONPATH: path.join(ROOT, "server", "tests") },
    stdio: ["ignore", log, log],
  });
  closeSync(log); // the child has its own copy
  const http = `http://127.0.0.1:${port}`;
  const gateway: Gateway = {
    http,
    ws: `ws://127.0.0.1:${port}/ws/workflow`,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await once(child, "exit");
      }
    },
  };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && child.exitCode === null) {
    try {
      if ((await fetch(`${http}/ws/health`)).ok) {
        return gateway;
      }
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await gateway.stop();
  throw new Error(`graphwire serve (${JSON.stringify(env)}) did not become healthy`);
}
