/**
 * The browser demo served at `GET /`: a chat that streams tokens, a data-processing run
 * with a live bar per node, and an approval prompt — all through `@graphwire/client`.
 * Bundled by esbuild (`npm run demo`) into `server/src/graphwire/static/demo/`.
 *
 * A gateway with auth on needs a JWT: open the page as `/?token=<jwt>` (or paste one in
 * the header's field, which reloads the page so). The client sends it as the
 * `bearer.<jwt>` subprotocol beside `graphwire.v1`; a refusal is shown under the header.
 */

import {
  type ConnectionState,
  ConnectionRejected,
  GraphwireClient,
  GraphwireError,
  type RunEvent,
  Unauthorized,
} from "../src/index.js";

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) {
    throw new Error(`the page has no #${id}`);
  }
  return element as T;
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

function describe(error: unknown): string {
  return error instanceof GraphwireError || error instanceof Error ? error.message : String(error);
}

const query = new URLSearchParams(location.search);
const token = query.get("token") || undefined;
if (token !== undefined) {
  // Read once, then kept out of the address bar (and so of bookmarks and shared links).
  query.delete("token");
  const rest = query.toString();
  history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
}

const scheme = location.protocol === "https:" ? "wss" : "ws";
const client = new GraphwireClient(`${scheme}://${location.host}/ws/workflow`, {
  // Validate every frame in the browser too, when asked for with ?validate=1.
  validate: query.has("validate"),
  ...(token !== undefined && { token }),
});

// --- connection state ------------------------------------------------------------------

const statePill = byId("state");
const clientIdLabel = byId("client-id");
const userLabel = byId("user");
const connectionError = byId("connection-error");

function showState(state: ConnectionState): void {
  statePill.textContent = state;
  statePill.dataset.state = state;
  statePill.className = `pill pill--${state}`;
  clientIdLabel.textContent = state === "connected" ? (client.clientId ?? "") : "";
  const user = state === "connected" ? client.connection?.user : undefined;
  userLabel.textContent = user === undefined ? "" : `as ${user}`;
  userLabel.hidden = user === undefined;
}

/** Why the client stopped for good (a refused or expired token, a policy close), under the header. */
function showRefusal(error: Error): void {
  statePill.title = describe(error);
  const closeCode = error instanceof ConnectionRejected ? error.closeCode : undefined;
  const hint = error instanceof Unauthorized ? " Paste a valid token above." : "";
  connectionError.textContent = `⚠ ${describe(error)}.${hint}`;
  connectionError.dataset.closeCode = closeCode === undefined ? "" : String(closeCode);
  connectionError.hidden = false;
}

client.on("state", ({ newState, error }) => {
  showState(newState);
  if (newState === "disconnected" && error !== undefined) {
    showRefusal(error);
  }
});

// --- event log -------------------------------------------------------------------------

const eventLog = byId<HTMLOListElement>("event-log");
const MAX_LOG = 200;

function detail(event: RunEvent): string {
  switch (event.type) {
    case "workflow_started":
      return event.workflow;
    // Node events carry the node's payload in `data`, as `send_update(update_type, data)` sent it.
    case "node_update":
      return `${event.node_id} ${event.data.status}`;
    case "progress":
      return `${event.node_id} ${event.data.current}/${event.data.total}`;
    case "token":
      return JSON.stringify(event.data);
    case "input_request":
      return event.prompt;
    case "input_answered":
      return JSON.stringify(event.data);
    case "input_closed":
      return `${event.node_id} ${event.reason}`;
    case "result":
    case "node_event":
      return JSON.stringify(event.data);
    case "workflow_completed":
      return JSON.stringify(event.data);
    case "workflow_failed":
      return `${event.error.code}: ${event.error.message}`;
    case "workflow_cancelled":
      return event.reason ?? "";
    case "run_resumed":
      return `moved to another gateway; resumed from seq ${event.from_seq}`;
  }
}

function logEvent(event: RunEvent): void {
  const row = element("li");
  row.dataset.type = event.type;
  row.append(
    element("span", "run", event.workflow_id.slice(0, 12)),
    element("span", "seq", String(event.seq)),
    element("span", "type", event.type),
    element("span", "detail", detail(event)),
  );
  eventLog.prepend(row);
  while (eventLog.childElementCount > MAX_LOG) {
    eventLog.lastElementChild?.remove();
  }
}

// --- chat --------------------------------------------------------------------------------

const chatLog = byId("chat-log");
const chatForm = byId<HTMLFormElement>("chat-form");
const chatInput = byId<HTMLInputElement>("chat-input");

function bubble(kind: "me" | "bot", text: string): HTMLElement {
  chatLog.querySelector(".empty")?.remove();
  const node = element("div", `bubble bubble--${kind}`, text);
  chatLog.append(node);
  chatLog.scrollTop = chatLog.scrollHeight;
  return node;
}

chatForm.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const message = chatInput.value.trim();
  if (!message) {
    return;
  }
  chatInput.value = "";
  bubble("me", message);
  const reply = bubble("bot", "");
  reply.classList.add("bubble--streaming");
  void (async () => {
    try {
      const run = await client.startWorkflow("chat", { message, delay_ms: 60 });
      for await (const event of run) {
        logEvent(event);
        if (event.type === "token") {
          reply.textContent += event.data;
          chatLog.scrollTop = chatLog.scrollHeight;
        }
      }
      reply.textContent = (await run.result()).reply;
      reply.dataset.done = "true";
    } catch (error) {
      reply.textContent = `⚠ ${describe(error)}`;
    } finally {
      reply.classList.remove("bubble--streaming");
    }
  })();
});

// --- data processing ---------------------------------------------------------------------

const dataForm = byId<HTMLFormElement>("data-form");
const dataInput = byId<HTMLInputElement>("data-input");
const dataDelay = byId<HTMLInputElement>("data-delay");
const nodes = byId("nodes");
const dataResult = byId("data-result");
const dataMeta = byId("data-meta");
const dataError = byId("data-error");
const DATA_NODES = ["load", "transform", "aggregate"];

function nodeRow(nodeId: string): HTMLElement {
  let row = nodes.querySelector<HTMLElement>(`[data-node="${CSS.escape(nodeId)}"]`);
  if (row === null) {
    row = element("div", "node");
    row.dataset.node = nodeId;
    row.dataset.status = "pending";
    const bar = element("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-label", nodeId);
    bar.append(element("div", "bar__fill"));
    row.append(element("span", "node__name", nodeId), bar, element("span", "node__status", "pending"));
    nodes.append(row);
  }
  return row;
}

function setNode(nodeId: string, status: string, percent?: number): void {
  const row = nodeRow(nodeId);
  row.dataset.status = status;
  const label = row.querySelector(".node__status");
  const bar = row.querySelector(".bar");
  const fill = row.querySelector<HTMLElement>(".bar__fill");
  const value = percent ?? (status === "completed" ? 100 : undefined);
  if (value !== undefined && fill !== null && bar !== null) {
    fill.style.width = `${value}%`;
    bar.setAttribute("aria-valuenow", String(Math.round(value)));
  }
  if (label !== null) {
    label.textContent = value !== undefined && status === "running" ? `${Math.round(value)}%` : status;
  }
}

function showResult(result: { count: number; sum: number; mean: number }): void {
  dataResult.replaceChildren();
  for (const [name, value] of Object.entries(result)) {
    const cell = element("div");
    cell.dataset.field = name;
    cell.append(element("dt", "", name), element("dd", "", Number.isInteger(value) ? String(value) : value.toFixed(3)));
    dataResult.append(cell);
  }
  dataResult.hidden = false;
}

/** The numbers of the input, or what is wrong with it (shown, never silently dropped). */
function parseNumbers(text: string): { data: number[] } | { problem: string } {
  const entries = text.split(/[\s,;]+/).filter(Boolean);
  if (entries.length === 0) {
    return { problem: "Enter some numbers, separated by commas or spaces." };
  }
  const wrong = entries.filter((entry) => !Number.isFinite(Number(entry)));
  if (wrong.length > 0) {
    const shown = wrong.slice(0, 3).map((entry) => `“${entry.length > 24 ? `${entry.slice(0, 24)}…` : entry}”`);
    const more = wrong.length > 3 ? ` and ${wrong.length - 3} more` : "";
    const noun = wrong.length === 1 ? "is not a number" : "are not numbers";
    return { problem: `${shown.join(", ")}${more} ${noun}: enter numbers only, like 3, 1.5, -2.` };
  }
  return { data: entries.map(Number) };
}

function showDataError(problem: string | undefined): void {
  dataError.textContent = problem ?? "";
  dataError.hidden = problem === undefined;
  if (problem === undefined) {
    dataInput.removeAttribute("aria-invalid");
  } else {
    dataInput.setAttribute("aria-invalid", "true");
  }
}

dataInput.addEventListener("input", () => showDataError(undefined));

dataForm.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const parsed = parseNumbers(dataInput.value);
  if ("problem" in parsed) {
    showDataError(parsed.problem);
    dataInput.focus();
    return;
  }
  showDataError(undefined);
  const data = parsed.data;
  nodes.replaceChildren();
  for (const nodeId of DATA_NODES) {
    nodeRow(nodeId);
  }
  dataResult.hidden = true;
  dataMeta.textContent = "starting…";
  void (async () => {
    try {
      const run = await client.startWorkflow("data_processing", { data, delay_ms: Number(dataDelay.value) || 0 });
      for await (const event of run) {
        logEvent(event);
        dataMeta.textContent = `${run.workflowId} · seq ${event.seq}`;
        if (event.type === "node_update") {
          setNode(event.node_id, event.data.status, event.data.progress);
        } else if (event.type === "progress") {
          setNode(event.node_id, "running", event.data.percent);
        }
      }
      showResult(await run.result());
      dataMeta.textContent = `${run.workflowId} · ${run.lastSeq} events · completed`;
    } catch (error) {
      dataMeta.textContent = `⚠ ${describe(error)}`;
    }
  })();
});

// --- approval ------------------------------------------------------------------------------

const approvalForm = byId<HTMLFormElement>("approval-form");
const approvalInput = byId<HTMLInputElement>("approval-input");
const approvalPrompt = byId("approval-prompt");
const approvalQuestion = byId("approval-question");
const approvalOptions = byId("approval-options");
const approvalResult = byId("approval-result");
const approvalMeta = byId("approval-meta");

function showOutcome(kind: "approved" | "rejected" | "failed", text: string): void {
  approvalResult.className = `outcome outcome--${kind}`;
  approvalResult.dataset.outcome = kind;
  approvalResult.textContent = text;
  approvalResult.hidden = false;
}

approvalForm.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const message = approvalInput.value.trim();
  if (!message) {
    return;
  }
  approvalResult.hidden = true;
  approvalPrompt.hidden = true;
  approvalMeta.textContent = "starting…";
  void (async () => {
    try {
      const run = await client.startWorkflow("approval", { message, timeout: 300 });
      for await (const event of run) {
        logEvent(event);
        approvalMeta.textContent = `${run.workflowId} · ${run.status}`;
        if (event.type === "input_request") {
          approvalQuestion.textContent = event.prompt;
          approvalOptions.replaceChildren(
            ...(event.options ?? ["yes", "no"]).map((option) => {
              const button = element("button", option === "yes" ? "yes" : option === "no" ? "no" : "", option);
              button.type = "button";
              button.dataset.option = option;
              button.addEventListener("click", () => {
                for (const other of approvalOptions.querySelectorAll("button")) {
                  other.disabled = true;
                }
                run.respond(event.request_id, { value: option }).catch((error: unknown) => {
                  approvalMeta.textContent = `⚠ ${describe(error)}`;
                });
              });
              return button;
            }),
          );
          approvalPrompt.hidden = false;
        } else if (event.type === "input_answered" || event.type === "input_closed") {
          approvalPrompt.hidden = true;
        }
      }
      const result = await run.result();
      showOutcome(
        result.approved ? "approved" : "rejected",
        result.approved ? `✔ Approved (“${result.answer}”)` : `✖ Rejected (“${result.answer}”)`,
      );
      approvalMeta.textContent = `${run.workflowId} · completed`;
    } catch (error) {
      approvalPrompt.hidden = true;
      showOutcome("failed", `⚠ ${describe(error)}`);
    }
  })();
});

// --- start -----------------------------------------------------------------------------------

showState(client.state);
client.connect().catch((error: unknown) => {
  showState("disconnected");
  showRefusal(error instanceof Error ? error : new GraphwireError(String(error)));
});
