#!/usr/bin/env node
// Bundles the browser demo (demo/main.ts, built on the SDK's source) with esbuild into
// server/src/graphwire/static/demo/, beside its page and stylesheet. The gateway serves
// the page at GET / and the folder at /static/demo/.

import { cp, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..");
const out = path.resolve(pkg, "../../server/src/graphwire/static/demo");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await build({
  entryPoints: { app: path.join(pkg, "demo", "main.ts") },
  outdir: out,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  splitting: true, // ajv (validate.js) stays in its own chunk, loaded only with ?validate=1
  minify: true,
  sourcemap: "linked",
  // Node's WebSocket package; browsers use their own and never load it.
  external: ["ws"],
  chunkNames: "chunks/[name]-[hash]",
  legalComments: "linked",
  metafile: true,
  logLevel: "warning",
});
await cp(path.join(pkg, "demo", "index.html"), path.join(out, "index.html"));
await cp(path.join(pkg, "demo", "demo.css"), path.join(out, "demo.css"));
const bytes = Object.entries(result.metafile.outputs)
  .filter(([name]) => name.endsWith(".js"))
  .map(([name, { bytes }]) => `${path.basename(name)} ${(bytes / 1024).toFixed(1)} KiB`);
console.log(`demo built into ${path.relative(process.cwd(), out)}: ${bytes.join(", ")}`);
