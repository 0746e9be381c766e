"""The gateway's pages in real headless Chromium: the demo at ``/`` driven end to end,
and the AsyncAPI docs at ``/docs/asyncapi`` checked against the spec.

Playwright for Python drives Debian's ``chromium`` (``executable_path``; no browser is
downloaded). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, expect, sync_playwright

from graphwire import app as gateway_app
from harness import ROOT, SPEC, Server, start_server, stop_server

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = os.environ.get("GRAPHWIRE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run `make setup` (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("browser-gateway"))
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def _open(page: Page, gateway: Server, path: str) -> None:
    response = page.goto(gateway.http + path)
    assert response is not None
    if response.status == 503:
        pytest.fail(f"{path} is not built: run `make setup` (and `make docs`)\n{response.text()}")
    assert response.status == 200


def _plain(markdown: str) -> str:
    """Spec text as the page shows it: markdown code ticks gone, whitespace collapsed."""
    return " ".join(markdown.replace("`", "").split())


# --- the pages themselves ---------------------------------------------------------------


def test_missing_pages_say_how_to_build_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(gateway_app, "STATIC", tmp_path)
    with TestClient(gateway_app.create_app()) as client:
        demo = client.get("/")
        assert demo.status_code == 503
        assert "make setup" in demo.text
        docs = client.get("/docs/asyncapi")
        assert docs.status_code == 503
        assert "make docs" in docs.text


def test_built_pages_and_their_assets_are_served() -> None:
    with TestClient(gateway_app.create_app()) as client:
        page = client.get("/")
        assert page.status_code == 200, "run `make setup` to build the demo"
        assert page.headers["content-type"].startswith("text/html")
        script = client.get("/static/demo/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        docs = client.get("/docs/asyncapi")
        assert docs.status_code == 200, "run `make docs` to build the AsyncAPI page"
        # Pre-rendered at build time: the protocol is in the HTML itself, no renderer script.
        assert 'id="messages"' in docs.text
        assert "AsyncApiStandalone.render" not in docs.text


# --- the demo -------------------------------------------------------------------------


# Records, synchronously, every value the demo gives the transform bar and the chat
# bubble: a batch frame can carry several events that the page applies in one task,
# between two paints, so the updates are counted where they happen, not on screen.
RECORD_UPDATES = """
window.__updates = { progress: [], chat: [] };
const setAttribute = Element.prototype.setAttribute;
Element.prototype.setAttribute = function (name, value) {
  if (name === "aria-valuenow" && this.getAttribute("aria-label") === "transform") {
    window.__updates.progress.push(Number(value));
  }
  return setAttribute.call(this, name, value);
};
const text = Object.getOwnPropertyDescriptor(Node.prototype, "textContent");
Object.defineProperty(Node.prototype, "textContent", {
  configurable: true,
  get: text.get,
  set(value) {
    if (this instanceof Element && this.classList.contains("bubble--bot")) {
      window.__updates.chat.push(String(value));
    }
    text.set.call(this, value);
  },
});
"""


PHONE_WIDTH = 390

# Every rendered element whose right edge passes `width`, and the page's scroll width.
OVERFLOW = """width => {
  const over = [];
  for (const node of document.querySelectorAll("body, body *")) {
    const box = node.getBoundingClientRect();
    if ((box.width > 0 || box.height > 0) && box.right > width) {
      const name = node.tagName.toLowerCase() + (node.id ? "#" + node.id : "");
      over.push(`${name}.${String(node.className).trim().replace(/\\s+/g, ".")} right=${box.right}`);
    }
  }
  return { scrollWidth: document.documentElement.scrollWidth, scrollX: window.scrollX, over };
}"""


def _assert_fits(page: Page, width: int) -> None:
    """Nothing runs off a screen `width` px wide: no horizontal scroll, no element past the edge."""
    layout: dict[str, Any] = page.evaluate(OVERFLOW, width)
    assert layout["scrollWidth"] <= width, layout
    assert layout["scrollX"] == 0, layout
    assert layout["over"] == [], layout


def _on_a_phone(page: Page) -> None:
    """The demo at 390 px wide, every panel filled: a long unbroken word in the chat, a
    result, an open input request, and refused non-numeric input with its message."""
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
    long_word = "supercalifragilistic" * 4
    page.fill("#chat-input", f"phone {long_word}")
    page.click("#chat-form button")
    expect(page.locator(".bubble--bot[data-done=true]").last).to_contain_text(long_word, timeout=10_000)

    page.fill("#data-input", "10 20 30")
    page.fill("#data-delay", "0")
    page.click("#data-form button")
    meta = page.locator("#data-meta")
    expect(meta).to_have_text(re.compile(r"completed$"), timeout=10_000)
    expect(page.locator("#data-result [data-field=mean] dd")).to_have_text("20")

    page.fill("#approval-input", "Ship it from a phone?")
    page.click("#approval-form button")
    expect(page.locator("#approval-prompt")).to_be_visible(timeout=10_000)

    # Input that is not a number is refused with a message, not dropped: no run starts.
    error = page.locator("#data-error")
    expect(error).to_be_hidden()
    finished = meta.inner_text()
    page.fill("#data-input", "1, two, 3; 4x")
    page.click("#data-form button")
    expect(error).to_be_visible()
    expect(error).to_have_text("“two”, “4x” are not numbers: enter numbers only, like 3, 1.5, -2.")
    expect(page.locator("#data-input")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#data-input")).to_be_focused()
    expect(meta).to_have_text(finished)  # the submit started nothing
    expect(page.locator("[data-node=aggregate]")).to_have_attribute("data-status", "completed")
    page.fill("#data-input", " , ;")
    page.click("#data-form button")
    expect(error).to_have_text("Enter some numbers, separated by commas or spaces.")
    expect(meta).to_have_text(finished)

    _assert_fits(page, PHONE_WIDTH)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-390.png", full_page=True)

    page.click("#approval-options button[data-option=yes]")
    expect(page.locator("#approval-result")).to_have_attribute("data-outcome", "approved", timeout=10_000)
    page.fill("#data-input", "1, 2")  # typing clears the message
    expect(error).to_be_hidden()
    expect(page.locator("#data-input")).not_to_have_attribute("aria-invalid", "true")
    _assert_fits(page, PHONE_WIDTH)


@pytest.mark.timeout(90)
def test_demo_chat_progress_and_approval(page: Page, gateway: Server) -> None:
    page.add_init_script(RECORD_UPDATES)
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    _open(page, gateway, "/")
    expect(page.locator("#state")).to_have_attribute("data-state", "connected", timeout=10_000)
    expect(page.locator("#client-id")).to_have_text(re.compile(r"^cl_"))
    # The SDK asks for batch frames (batching is negotiated) and unpacks them.
    assert sockets == [gateway.ws() + "?batch=1"], sockets

    # Start all three at once: they share one socket.
    page.fill("#chat-input", "hello from chromium")
    page.click("#chat-form button")
    page.fill("#data-input", "1, 2, 3, 4, 5, 6, 7, 8")
    page.fill("#data-delay", "60")
    page.click("#data-form button")
    page.fill("#approval-input", "Ship the browser demo?")
    page.click("#approval-form button")

    prompt = page.locator("#approval-prompt")
    expect(prompt).to_be_visible(timeout=10_000)
    expect(page.locator("#approval-question")).to_have_text("Ship the browser demo?")
    expect(page.locator("#approval-options button")).to_have_text(["yes", "no"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "demo-running.png", full_page=True)

    page.click("#approval-options button[data-option=yes]")
    expect(page.locator("#approval-result")).to_have_attribute("data-outcome", "approved", timeout=10_000)
    expect(page.locator("#approval-result")).to_contain_text("Approved")
    expect(prompt).to_be_hidden()

    full_reply = "You said: hello from chromium. This reply is streamed token by token by graphwire."
    expect(page.locator(".bubble--bot[data-done=true]")).to_have_text(full_reply, timeout=10_000)
    # The reply grew token by token, each text a prefix of the next.
    texts: list[str] = page.evaluate("window.__updates.chat")
    partial = [t for t in texts if t and t != full_reply]
    assert len(partial) >= 10, texts
    assert all(b.startswith(a) for a, b in itertools.pairwise(partial)), texts

    result = page.locator("#data-result")
    expect(result).to_be_visible(timeout=10_000)
    expect(result.locator("[data-field=count] dd")).to_have_text("8")
    expect(result.locator("[data-field=sum] dd")).to_have_text("36")
    expect(result.locator("[data-field=mean] dd")).to_have_text("4.500")
    for node in ("load", "transform", "aggregate"):
        row = page.locator(f"[data-node={node}]")
        expect(row).to_have_attribute("data-status", "completed")
        expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    # The transform bar took a step per item (one `progress` event each), not one jump.
    steps: list[int] = page.evaluate("window.__updates.progress")
    assert [v for v in steps if v < 100] == [13, 25, 38, 50, 63, 75, 88], steps  # rounded percents
    assert steps[-1] == 100, steps

    # A second approval, answered no.
    page.click("#approval-form button")
    page.locator("#approval-options button[data-option=no]").click(timeout=10_000)
    expect(page.locator("#approval-result")).to_have_attribute("data-outcome", "rejected", timeout=10_000)

    log_types = page.locator("#event-log li").evaluate_all("rows => rows.map(r => r.dataset.type)")
    for kind in ("workflow_started", "token", "progress", "input_request", "input_answered", "workflow_completed"):
        assert kind in log_types, kind
    # The log shows each node's payload (`data`): a token's text, progress, the result.
    rows: list[list[str]] = page.locator("#event-log li").evaluate_all(
        "rows => rows.map(r => [r.dataset.type, r.querySelector('.detail').textContent])"
    )
    details: dict[str, list[str]] = {}
    for kind, text in rows:  # newest first
        details.setdefault(kind, []).append(text)
    assert details["workflow_completed"][0] == '{"approved":false,"answer":"no"}', details
    assert '{"count":8,"sum":36,"mean":4.5}' in details["workflow_completed"], details
    assert "transform 4/8" in details["progress"], details
    assert "transform completed" in details["node_update"], details
    assert all(re.fullmatch(r'"[^"]+"', text) for text in details["token"]), details
    page.screenshot(path=ARTIFACTS / "demo.png", full_page=True)

    _on_a_phone(page)
    assert len(sockets) == 1, sockets  # one socket all along


# --- the AsyncAPI docs ----------------------------------------------------------------


def _visible_examples(page: Page) -> list[Any]:
    """Every JSON code block the page shows, parsed."""
    texts: list[str] = page.locator("pre").evaluate_all(
        "blocks => blocks.filter(b => b.offsetParent !== null).map(b => b.textContent)"
    )
    parsed: list[Any] = []
    for text in texts:
        try:
            parsed.append(json.loads(text))
        except ValueError:
            continue
    return parsed


@pytest.mark.timeout(120)
def test_docs_show_every_operation_and_message_with_its_example(page: Page, gateway: Server) -> None:
    _open(page, gateway, "/docs/asyncapi")
    # The component parses and renders the whole spec in the browser.
    page.wait_for_selector("#message-Error", timeout=60_000)
    expect(page).to_have_title(re.compile("graphwire"))

    for op_id, operation in SPEC["operations"].items():
        section = page.locator(f"#operations [id$='-{op_id}']").first
        expect(section).to_be_visible()
        text = _plain(section.inner_text())
        assert op_id in text
        described = operation.get("summary") or operation["title"]
        assert _plain(described) in text, (op_id, described)

    # Replies are folded away; unfold them so their examples show too.
    toggles = page.get_by_text("Expected Reply Message")
    for i in range(toggles.count()):
        toggles.nth(i).click()
    examples = _visible_examples(page)

    for name, message in SPEC["components"]["messages"].items():
        section = page.locator(f"#message-{name}")
        expect(section).to_be_visible()
        text = _plain(section.inner_text())
        payload = SPEC["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[-1]]
        for expected in (message["name"], message["summary"], payload["description"]):
            assert _plain(expected) in text, (name, expected)
        for example in message["examples"]:
            assert example["payload"] in examples, f"the example {example['name']} of {name} is not shown"

    ARTIFACTS.mkdir(exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=ARTIFACTS / "asyncapi-docs.png")
