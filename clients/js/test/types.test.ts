/**
 * The type test: a program with wrong params for a built-in workflow must fail tsc, at
 * the right line, for the right reason. (The `@ts-expect-error` lines of
 * `test/types/usage.ts` are checked when the tests compile.)
 */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

describe("types", () => {
  it("startWorkflow('data_processing', { data: 'x' }) does not compile", () => {
    const tsc = path.join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
    const done = spawnSync(process.execPath, [tsc, "-p", "test/types/fail/tsconfig.json", "--pretty", "false"], {
      cwd: PACKAGE,
      encoding: "utf8",
    });
    const output = done.stdout + done.stderr;
    assert.notEqual(done.status, 0, `tsc accepted the wrong params:\n${output}`);
    const errors = output.split("\n").filter((line) => line.includes("error TS"));
    assert.equal(errors.length, 1, output);
    assert.match(
      errors[0] ?? "",
      /wrong-params\.ts\(7,\d+\): error TS2322: Type 'string' is not assignable to type 'number\[\]'/,
    );
  });

  it("the published declarations have no `any`", () => {
    const dist = path.join(PACKAGE, "dist");
    const files = readdirSync(dist, { recursive: true, encoding: "utf8" }).filter((name) => name.endsWith(".d.ts"));
    assert.ok(files.includes("index.d.ts") && files.length > 10, files.join(", "));
    for (const name of files) {
      const code = readFileSync(path.join(dist, name), "utf8")
        .replace(/\/\*[\s\S]*?\*\//g, "")
        .replace(/\/\/.*$/gm, "")
        .replace(/"(?:[^"\\]|\\.)*"/g, '""');
      assert.doesNotMatch(code, /\bany\b/, `${name} declares \`any\``);
    }
  });
});
