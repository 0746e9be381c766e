#!/usr/bin/env node
// Runs a command with a real `graphwire serve` on a free port, named by the environment
// variable GRAPHWIRE_TEST_HTTP. If GRAPHWIRE_TEST_HTTP is already set (the pytest
// wrapper starts its own server), the command just runs against it.
//
//   node scripts/with-server.mjs node --test build-test/test/*.test.js

import { spawn } from "node:child_process";
import { once } from "node:events";
import { openSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const [command, ...args] = process.argv.slice(2);
if (command === undefined) {
  console.error("usage: with-server.mjs COMMAND [ARGS...]");
  process.exit(2);
}

async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

async function startServer() {
  const port = await freePort();
  const bin = process.env.GRAPHWIRE_BIN ?? path.join(root, ".venv", "bin", "graphwire");
  const log = path.join(tmpdir(), `graphwire-js-tests-${port}.log`);
  const child = spawn(bin, ["serve", "--port", String(port), "--workflows", "sample_workflows:register"], {
    env: { ...process.env, PYTHONPATH: path.join(root, "server", "tests") },
    stdio: ["ignore", openSync(log, "w"), "inherit"],
  });
  const http = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`graphwire serve exited with ${child.exitCode}; see ${log}`);
    }
    try {
      const health = await fetch(`${http}/ws/health`);
      if (health.ok) {
        return { child, http, log };
      }
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill();
  throw new Error(`graphwire serve did not become healthy; see ${log}`);
}

let server;
if (!process.env.GRAPHWIRE_TEST_HTTP) {
  server = await startServer();
  process.env.GRAPHWIRE_TEST_HTTP = server.http;
  console.error(`with-server: graphwire serve on ${server.http} (log: ${server.log})`);
}
const child = spawn(command, args, { stdio: "inherit", env: process.env });
const [code, signal] = await once(child, "exit");
if (server !== undefined) {
  server.child.kill("SIGTERM");
  await once(server.child, "exit");
}
process.exit(code ?? (signal ? 1 : 0));
