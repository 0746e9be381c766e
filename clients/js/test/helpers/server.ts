/**
 * The gateway the tests talk to: `GRAPHWIRE_TEST_HTTP` (set by `scripts/with-server.mjs`
 * or the pytest wrapper, which start a real `graphwire serve` on a free port).
 */

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
