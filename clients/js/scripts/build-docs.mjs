#!/usr/bin/env node
// `make docs`: renders spec/asyncapi.yaml into one static HTML page, written to
// server/src/graphwire/static/docs/asyncapi.html and served at GET /docs/asyncapi.
//
// AsyncAPI's React component (its standalone browser bundle, which includes the parser)
// renders the spec once, here, in Debian's chromium driven by Playwright for Python
// (prerender-docs.py). The rendered markup is kept with the component's stylesheet and a
// small script of ours that makes its collapsible parts work again; the 4 MB bundle is not
// shipped, so the page shows the protocol as soon as it arrives.
//
// Only the component's published tarball is fetched (`npm pack`, 2.7 MB, checked against
// the pinned integrity below), not its 119 MB dependency tree: the standalone bundle needs
// nothing else. It is cached in clients/js/.cache/.
//
// Environment: GRAPHWIRE_PYTHON (a Python with Playwright; default the repository's
// .venv), GRAPHWIRE_CHROMIUM (default `chromium` on PATH).

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { parse } from "yaml";

const RENDERER = {
  name: "@asyncapi/react-component",
  version: "3.2.1",
  integrity: "sha512-k5ZqJd6+oxYaQ2o6F3rGWJ1MTIjXdpsUYB3NKQbVqr4yzrN0Ovj5c7eZx8NGd3wfKPhbOrLREtYl9K2OPfnSsA==",
  files: ["browser/standalone/index.js", "styles/default.min.css", "LICENSE"],
};

// Stands for the address the page is served from: graphwire.docs_page puts the request's
// Host there (the spec's own host when there is none). Keep the two in step.
const SERVED_HOST = "__GRAPHWIRE_SERVED_HOST__";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..");
const root = path.resolve(pkg, "../..");
const specPath = path.join(root, "spec", "asyncapi.yaml");
const outDir = path.join(root, "server", "src", "graphwire", "static", "docs");
const cache = path.join(pkg, ".cache", `asyncapi-react-component-${RENDERER.version}`);

async function renderer() {
  if (RENDERER.files.every((file) => existsSync(path.join(cache, file)))) {
    return cache;
  }
  const work = await mkdtemp(path.join(tmpdir(), "graphwire-docs-"));
  try {
    const spec = `${RENDERER.name}@${RENDERER.version}`;
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", spec, "--json", "--silent", "--pack-destination", work], { encoding: "utf8" }),
    );
    const tarball = path.join(work, packed.filename);
    const integrity = `sha512-${createHash("sha512")
      .update(await readFile(tarball))
      .digest("base64")}`;
    if (integrity !== RENDERER.integrity) {
      throw new Error(`${spec}: integrity ${integrity} is not the pinned ${RENDERER.integrity}`);
    }
    execFileSync("tar", ["-xzf", tarball, "-C", work, ...RENDERER.files.map((file) => `package/${file}`)]);
    await mkdir(path.dirname(cache), { recursive: true });
    await rm(cache, { recursive: true, force: true });
    await rename(path.join(work, "package"), cache);
    return cache;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

// Text that is safe inside an inline <script> or <style> element.
function inlineSafe(text, what) {
  if (/<\/(script|style)/i.test(text)) {
    throw new Error(`${what} contains a closing tag and cannot be inlined`);
  }
  return text;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// A server of the spec that is the local gateway (`make run`): the page shows the address
// it was served from instead.
function isLocalHost(host) {
  return /^(127\.0\.0\.1|localhost|0\.0\.0\.0|\[::1\])(:\d+)?$/.test(host ?? "");
}

/**
 * Runs in the component's page, in chromium, at build time. Waits for the component, opens
 * every schema so that all of its markup exists, then turns the live React page into static
 * markup: inline code in plain-text spots (summaries, titles) becomes <code>; whatever the
 * component shows folded (schema bodies, reply messages, channel details) is moved out of
 * the page into `parts` (deduplicated HTML, filled in by docsRuntime when opened); toggles
 * are marked for docsRuntime. Returns { html, parts, warnings }.
 */
async function freezeDocs() {
  const root = document.getElementById("asyncapi");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // Resolves once the component has made no change for `quiet` ms.
  const settle = (quiet = 150) =>
    new Promise((resolve) => {
      let timer;
      const observer = new MutationObserver(() => {
        clearTimeout(timer);
        timer = setTimeout(done, quiet);
      });
      const done = () => {
        observer.disconnect();
        resolve();
      };
      observer.observe(root, { subtree: true, childList: true, attributes: true, characterData: true });
      timer = setTimeout(done, quiet);
    });
  const deadline = Date.now() + 180_000;
  while (!root.querySelector(".aui-root .panel--center")) {
    const error = root.querySelector(".aui-root .border-red-500");
    if (error) throw new Error(`the component could not render the spec: ${error.innerText}`);
    if (Date.now() > deadline) throw new Error(`the component did not render: ${root.innerText.slice(0, 500)}`);
    await sleep(50);
  }
  await settle(300);
  const problem = root.querySelector(".aui-root .border-red-500");
  if (problem) throw new Error(`the component reports: ${problem.innerText}`);

  // A CollapseButton: <button><div class="inline-block">label</div><svg>chevron</svg></button>.
  const isToggle = (button) =>
    button.firstElementChild?.matches("div.inline-block") && button.lastElementChild?.tagName.toLowerCase() === "svg";
  // A schema: <div.border> <header div.flex-col> … button …</header> <div.flex>body</div> </div>.
  const schemaHeader = (button) => {
    const header = button.parentElement?.parentElement?.parentElement?.parentElement;
    const box = header?.parentElement;
    return header?.matches("div.flex.flex-col.justify-center") && box.children.length === 2 ? header : null;
  };
  const isDeepToggle = (button) => /^(Expand|Collapse) all$/.test(button.textContent);
  // Any other toggle shows and hides (`block` / `hidden`) the element after it or after a parent.
  const cssTarget = (button) => {
    for (let el = button, depth = 0; el && depth < 3; el = el.parentElement, depth++) {
      const next = el.nextElementSibling;
      if (next && (next.classList.contains("block") || next.classList.contains("hidden"))) return next;
    }
    return null;
  };
  const schemaToggles = () => [...root.querySelectorAll("button")].filter((b) => isToggle(b) && schemaHeader(b));

  // What the component shows open before anything is clicked.
  for (const button of schemaToggles()) {
    const body = schemaHeader(button).nextElementSibling;
    body.dataset.gwOpen = body.firstElementChild ? "1" : "0";
  }

  // Open every schema, all the way down ("Expand all" on each one still folded).
  root.style.display = "none"; // no layout while the tree grows
  for (;;) {
    if (Date.now() > deadline) throw new Error("the component's schemas did not finish opening");
    const closed = [...root.querySelectorAll("button")].filter((b) => b.textContent === "Expand all");
    if (closed.length === 0) {
      await settle();
      if (![...root.querySelectorAll("button")].some((b) => b.textContent === "Expand all")) break;
      continue;
    }
    for (const button of closed) {
      if (button.isConnected && button.textContent === "Expand all") button.click();
    }
    await sleep(0);
  }
  // Rules and Conditions of one schema: only the open tab is rendered, so the static page
  // cannot switch. No schema of the spec has both today; the build says so when one does.
  const warnings = [];
  for (const tab of root.querySelectorAll("button[role=tab][aria-selected=false]")) {
    tab.disabled = true;
    tab.title = "not kept in the static page";
    const where = tab.closest("[id]")?.id ?? "?";
    warnings.push(`the ${tab.textContent} tab of a schema in #${where} is not kept (only the open tab is)`);
  }

  // `code` in spots the component prints as plain text (operation and message summaries).
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) =>
      node.parentElement.closest("pre, code, script, style, textarea") || !/`[^`\n]+`/.test(node.data)
        ? NodeFilter.FILTER_REJECT
        : NodeFilter.FILTER_ACCEPT,
  });
  const ticked = [];
  while (walker.nextNode()) ticked.push(walker.currentNode);
  for (const node of ticked) {
    const fragment = document.createDocumentFragment();
    node.data.split(/`([^`\n]+)`/).forEach((piece, i) => {
      if (i % 2 === 0) {
        if (piece) fragment.append(piece);
      } else {
        const code = document.createElement("code");
        code.className = "gw-code";
        code.textContent = piece;
        fragment.append(code);
      }
    });
    node.replaceWith(fragment);
  }

  // Links the component made from the page's own path: this page is served elsewhere.
  for (const link of root.querySelectorAll("a[href]")) {
    const href = link.getAttribute("href");
    if (href.startsWith(`${location.pathname}#`)) link.setAttribute("href", href.slice(location.pathname.length));
  }
  // The sidebar links messages by name, the Messages section by id (the id is the link's text).
  for (const link of root.querySelectorAll(".sidebar a[href^='#message-']")) {
    const byId = `message-${link.textContent.trim()}`;
    if (!document.getElementById(link.getAttribute("href").slice(1)) && document.getElementById(byId)) {
      link.setAttribute("href", `#${byId}`);
    }
  }

  // Mark every toggle for docsRuntime and give it the state the component starts in.
  for (const button of root.querySelectorAll("button")) {
    if (!isToggle(button)) continue;
    const chevron = button.lastElementChild;
    const header = schemaHeader(button);
    if (header) {
      const body = header.nextElementSibling;
      const open = body.dataset.gwOpen === "1";
      delete body.dataset.gwOpen;
      body.dataset.gwBody = open ? "open" : "closed";
      button.dataset.gwToggle = "schema";
      button.setAttribute("aria-expanded", String(open));
      chevron.classList.toggle("-rotate-90", open);
      for (const deep of header.querySelectorAll("button")) {
        if (isDeepToggle(deep)) {
          deep.dataset.gwDeep = "";
          deep.textContent = open ? "Collapse all" : "Expand all";
        }
      }
      continue;
    }
    const target = cssTarget(button);
    if (!target) throw new Error(`a toggle with nothing to show: ${button.outerHTML.slice(0, 300)}`);
    const open = target.classList.contains("block");
    target.dataset.gwBody = open ? "open" : "closed";
    button.dataset.gwToggle = "css";
    button.setAttribute("aria-expanded", String(open));
  }

  // What is folded leaves the page: deepest first, so a part holds only its own level.
  const parts = [];
  const known = new Map();
  const bodies = [...root.querySelectorAll("[data-gw-body]")].reverse();
  for (const body of bodies) {
    if (body.dataset.gwBody === "open") continue;
    const html = body.innerHTML;
    body.textContent = "";
    if (!html) continue;
    if (!known.has(html)) {
      known.set(html, parts.length);
      parts.push(html);
    }
    body.dataset.gwPart = String(known.get(html));
  }
  root.style.display = "";
  return { html: root.innerHTML, parts, warnings };
}

/** The page's own script: the component's toggles, burger menu and layout, on static markup. */
function docsRuntime() {
  let parts = null;
  const part = (index) => {
    parts ??= JSON.parse(document.getElementById("gw-parts").textContent);
    return parts[Number(index)];
  };
  const schemaBody = (button) => button.closest("div.flex.flex-col.justify-center").nextElementSibling;
  const chevron = (button, open) => {
    button.setAttribute("aria-expanded", String(open));
    button.lastElementChild.classList.toggle("-rotate-90", open);
  };
  // What a toggle shows: filled in from its part the first time it opens.
  const fill = (element) => {
    if (element.dataset.gwPart !== undefined) {
      element.innerHTML = part(element.dataset.gwPart);
      delete element.dataset.gwPart;
    }
  };
  const setSchema = (button, open) => {
    const body = schemaBody(button);
    if (open) fill(body);
    body.classList.toggle("hidden", !open);
    chevron(button, open);
    const deep = body.previousElementSibling.querySelector("[data-gw-deep]");
    if (deep) deep.textContent = open ? "Collapse all" : "Expand all";
  };
  const setDeep = (button, open) => {
    setSchema(button, open);
    const body = schemaBody(button);
    const state = `[aria-expanded="${!open}"]`;
    for (let inner; (inner = body.querySelectorAll(`button[data-gw-toggle="schema"]${state}`)).length;) {
      inner.forEach((b) => setSchema(b, open));
    }
  };
  const cssTarget = (button) => {
    for (let el = button, depth = 0; el && depth < 3; el = el.parentElement, depth++) {
      const next = el.nextElementSibling;
      if (next && (next.classList.contains("block") || next.classList.contains("hidden"))) return next;
    }
    return null;
  };
  const sidebar = document.querySelector(".aui-root .sidebar");
  const showSidebar = (show) => {
    if (!sidebar) return;
    sidebar.classList.toggle("hidden", !show);
    ["block", "fixed", "w-full"].forEach((name) => sidebar.classList.toggle(name, show));
    sidebar.firstElementChild?.classList.toggle("sidebar--wrapper", show);
    document.querySelector(".aui-root .burger-menu")?.setAttribute("data-lol", String(show));
  };
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const button = target?.closest("button[data-gw-toggle], button[data-gw-deep]");
    if (button?.dataset.gwToggle === "schema") {
      setSchema(button, button.getAttribute("aria-expanded") !== "true");
    } else if (button?.dataset.gwToggle === "css") {
      const shown = cssTarget(button);
      const open = !shown.classList.contains("block");
      if (open) fill(shown);
      shown.classList.toggle("block", open);
      shown.classList.toggle("hidden", !open);
      chevron(button, open);
    } else if (button) {
      const toggle = button.closest("div.flex.flex-col.justify-center").querySelector("[data-gw-toggle]");
      setDeep(toggle, toggle.getAttribute("aria-expanded") !== "true");
    } else if (target?.closest(".aui-root .burger-menu")) {
      showSidebar(sidebar?.classList.contains("hidden"));
    } else if (target?.closest(".aui-root .sidebar a")) {
      showSidebar(false);
    }
  });
  // The component's layout switch: two columns when it is wider than 1536 px.
  const layout = document.querySelector(".aui-root [class*='container:']");
  if (layout && "ResizeObserver" in window) {
    new ResizeObserver(([entry]) => {
      const wide = entry.contentRect.width > 1536;
      layout.classList.toggle("container:base", wide);
      layout.classList.toggle("container:xl", !wide);
    }).observe(layout);
  }
}

// Runs where the component's layout element opens, before anything below it is painted.
const LAYOUT_NOW = `(() => { const el = document.currentScript.parentElement; const wide = document.documentElement.clientWidth > 1536; el.classList.toggle("container:base", wide); el.classList.toggle("container:xl", !wide); })();`;

const OUR_CSS = `
  body { margin: 0; background: #fff; }
  .aui-root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
  .aui-root button { cursor: pointer; }
  .aui-root .prose code::before, .aui-root .prose code::after { content: none; }
  .aui-root .prose :not(pre) > code, .aui-root code.gw-code {
    font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.85em;
    font-weight: 500; color: #1a202c; background: #edf0f5; border-radius: 4px; padding: 0.1em 0.35em; }
  .gw-bar { display: flex; flex-wrap: wrap; gap: 0.4rem 1.25rem; align-items: baseline; padding: 0.6rem 1.5rem;
    background: #1b2333; color: #fff; font: 14px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  .gw-bar strong { font-size: 15px; }
  .gw-bar .gw-version { color: #c7d2fe; font-variant-numeric: tabular-nums; }
  .gw-bar nav { display: flex; gap: 1rem; margin-left: auto; }
  .gw-bar a { color: #c7d2fe; text-decoration: none; }
  .gw-bar a:hover { text-decoration: underline; }
`;

// The component's page, as the browser would run it: rendered once by prerender-docs.py.
function livePage(spec, config) {
  // The spec as a JS literal; `<` escaped so no sequence in it can end the script.
  const specLiteral = JSON.stringify(spec).replace(/</g, "\\u003c");
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>render</title></head>
<body><div id="asyncapi"></div>
<script src="standalone.js"></script>
<script>AsyncApiStandalone.render({ schema: ${specLiteral}, config: ${JSON.stringify(config)} }, document.getElementById("asyncapi"));</script>
</body></html>
`;
}

function python() {
  if (process.env.GRAPHWIRE_PYTHON) return process.env.GRAPHWIRE_PYTHON;
  const venv = path.join(root, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

const dir = await renderer();
const css = inlineSafe(await readFile(path.join(dir, "styles/default.min.css"), "utf8"), "the stylesheet");
const specText = await readFile(specPath, "utf8");
const sha = createHash("sha256").update(specText).digest("hex");
const spec = parse(specText);
const title = spec.info?.title ?? "AsyncAPI";
const version = spec.info?.version ?? "";
const asyncapiVersion = spec.asyncapi ?? "";
// The component shows an operation's summary and description but not its title: an
// operation with neither shows its title as its summary, so every operation says what it does.
for (const operation of Object.values(spec.operations ?? {})) {
  if (operation.summary === undefined && operation.description === undefined && operation.title !== undefined) {
    operation.summary = operation.title;
  }
}
// The local gateway's server shows the address the page is served from.
const localHosts = [];
for (const server of Object.values(spec.servers ?? {})) {
  if (isLocalHost(server.host)) {
    localHosts.push(server.host);
    server.host = SERVED_HOST;
  }
}
const config = { show: { sidebar: true }, expand: { messageExamples: true } };

const work = await mkdtemp(path.join(tmpdir(), "graphwire-docs-"));
let frozen;
try {
  await copyFile(path.join(dir, "browser/standalone/index.js"), path.join(work, "standalone.js"));
  await writeFile(path.join(work, "live.html"), livePage(spec, config));
  await writeFile(path.join(work, "freeze.js"), `(${freezeDocs.toString()})()`);
  execFileSync(
    python(),
    [
      path.join(here, "prerender-docs.py"),
      path.join(work, "live.html"),
      path.join(work, "freeze.js"),
      path.join(work, "frozen.json"),
    ],
    { stdio: "inherit" },
  );
  frozen = JSON.parse(await readFile(path.join(work, "frozen.json"), "utf8"));
} finally {
  await rm(work, { recursive: true, force: true });
}

for (const warning of frozen.warnings) console.warn(`build-docs: ${warning}`);

// The layout class is chosen as soon as the layout element is parsed (docsRuntime follows it).
const opening = frozen.html.match(/<div class="[^"]*container:[^"]*"[^>]*>/);
if (!opening) throw new Error("the component's layout element is missing from the rendered page");
const body =
  frozen.html.slice(0, opening.index + opening[0].length) +
  `<script>${LAYOUT_NOW}</script>` +
  frozen.html.slice(opening.index + opening[0].length);
// JSON inside a script element: `<` escaped so nothing in it can end the script.
const partsLiteral = JSON.stringify(frozen.parts).replace(/</g, "\\u003c");

const html = `<!doctype html>
<!-- GENERATED by clients/js/scripts/build-docs.mjs from spec/asyncapi.yaml sha256:${sha} - DO NOT EDIT -->
<!-- Rendered at build time by ${RENDERER.name} ${RENDERER.version} (Apache-2.0; LICENSE-asyncapi-react-component.txt) -->
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="graphwire-spec-host" content="${escapeHtml(localHosts[0] ?? "")}">
<title>${escapeHtml(title)} ${escapeHtml(version)} · AsyncAPI</title>
<link rel="icon" href="data:,">
<style>${css}</style>
<style>${OUR_CSS}</style>
</head>
<body>
<header class="gw-bar"><strong>${escapeHtml(title)} protocol</strong>
<span>version <span class="gw-version" data-version="protocol">${escapeHtml(version)}</span></span>
<span>AsyncAPI <span class="gw-version" data-version="asyncapi">${escapeHtml(asyncapiVersion)}</span></span>
<nav><a href="/">Live demo</a><a href="/asyncapi.yaml">asyncapi.yaml</a></nav></header>
<div id="asyncapi">${body}</div>
<script type="application/json" id="gw-parts">${partsLiteral}</script>
<script>(${docsRuntime.toString()})();</script>
</body>
</html>
`;

await mkdir(outDir, { recursive: true });
await writeFile(path.join(outDir, "asyncapi.html"), html);
await writeFile(path.join(outDir, "LICENSE-asyncapi-react-component.txt"), await readFile(path.join(dir, "LICENSE")));
const size = Buffer.byteLength(html);
console.log(
  `docs rendered into ${path.relative(process.cwd(), path.join(outDir, "asyncapi.html"))} (${(size / 1024).toFixed(0)} KiB, ${frozen.parts.length} folded parts, ${RENDERER.name} ${RENDERER.version})`,
);
