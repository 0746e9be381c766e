"""``GET /docs/asyncapi`` (issue 9, item 6): pre-rendered, compressed, right.

A real ``graphwire serve`` and Debian's chromium (Playwright, no browser download), as in
``test_browser_pages.py``. The page is built by ``make docs``; these tests say how fast it
shows the protocol, how little goes over the wire, and that what it shows is right: inline
code as code, both versions in the header, this gateway's own address, HEAD, and the
component's toggles working on the static markup.
"""

from __future__ import annotations

import gzip
import http.client
import os
import re
import shutil
import statistics
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from harness import SPEC, Server, start_server, stop_server

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PATH = "/docs/asyncapi"
# The bound: the protocol's content is on screen within 1 s of navigation.
VISIBLE_WITHIN_S = 1.0
LOADS = 5
# What goes over the wire (it was 4.1 MB uncompressed).
MAX_TRANSFER_BYTES = 150_000
TICKED = re.compile(r"`[^`\n]+`")


def _chromium() -> str:
    path = os.environ.get("GRAPHWIRE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run `make setup` (apt-get install chromium)")
    return path


def _plain(markdown: str) -> str:
    """Spec text as the page shows it: markdown code ticks gone, whitespace collapsed."""
    return " ".join(markdown.replace("`", "").split())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("docs-gateway"))
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


def _get(gateway: Server, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """One raw request: no decoding, so what is measured is what goes over the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        connection.putrequest(method, PATH, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _open(page: Page, gateway: Server) -> None:
    response = page.goto(gateway.http + PATH)
    assert response is not None
    if response.status == 503:
        pytest.fail(f"{PATH} is not built: run `make docs`\n{response.text()}")
    assert response.status == 200


def _first_operation() -> tuple[str, str]:
    op_id, operation = next(iter(SPEC["operations"].items()))
    return op_id, operation.get("summary") or operation["title"]


def _last_message() -> tuple[str, dict[str, Any]]:
    name, message = list(SPEC["components"]["messages"].items())[-1]
    return name, message


# --- fast ------------------------------------------------------------------------------


def test_the_protocol_is_on_screen_within_a_second(browser: Browser, gateway: Server) -> None:
    op_id, described = _first_operation()
    name, message = _last_message()  # the last message is near the end of the page
    seconds: list[float] = []
    transfers: list[dict[str, int]] = []
    for _ in range(LOADS):
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        try:
            page = context.new_page()
            started = time.perf_counter()
            response = page.goto(gateway.http + PATH, wait_until="commit")
            assert response is not None
            assert response.status == 200, "run `make docs` to build the AsyncAPI page"
            operation = page.locator(f"#operations [id$='-{op_id}']").first
            operation.wait_for(state="visible", timeout=10_000)
            last = page.locator(f"#message-{name}")
            last.wait_for(state="visible", timeout=10_000)
            seconds.append(time.perf_counter() - started)
            # What it was: the content really is there, not just its boxes.
            assert _plain(described) in _plain(operation.inner_text())
            assert message["name"] in last.inner_text()
            page.wait_for_load_state("load")
            transfers.append(
                page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return {encoded: n.encodedBodySize, decoded: n.decodedBodySize}; })()"
                )
            )
        finally:
            context.close()
    median = statistics.median(seconds)
    print(f"\n{PATH}: content visible after {', '.join(f'{s:.3f}' for s in seconds)} s (median {median:.3f} s)")
    print(f"{PATH}: body over the wire {transfers[-1]['encoded']} B for {transfers[-1]['decoded']} B of HTML")
    assert median < VISIBLE_WITHIN_S, seconds
    assert all(t["encoded"] < MAX_TRANSFER_BYTES for t in transfers), transfers


def test_the_page_is_gzip_compressed_when_the_client_accepts_it(gateway: Server) -> None:
    status, headers, compressed = _get(gateway, **{"Accept-Encoding": "gzip, deflate, br"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert "accept-encoding" in headers["vary"].lower()
    assert int(headers["content-length"]) == len(compressed)
    assert len(compressed) < MAX_TRANSFER_BYTES

    status, headers, plain = _get(gateway)  # no Accept-Encoding: identity
    assert status == 200
    assert "content-encoding" not in headers
    assert headers["content-type"].startswith("text/html")
    assert gzip.decompress(compressed) == plain
    assert len(plain) > 5 * len(compressed)
    print(f"\n{PATH}: {len(compressed)} B gzip, {len(plain)} B plain")

    # q=0 refuses gzip; a matching ETag is answered 304.
    status, headers, _ = _get(gateway, **{"Accept-Encoding": "gzip;q=0, identity"})
    assert status == 200
    assert "content-encoding" not in headers
    status, _, body = _get(gateway, **{"If-None-Match": headers["etag"]})
    assert status == 304
    assert body == b""


def test_head_answers_like_get_without_a_body(gateway: Server) -> None:
    status, headers, body = _get(gateway, "HEAD", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert body == b""
    assert headers["content-type"].startswith("text/html")
    assert headers["content-encoding"] == "gzip"
    _, got, compressed = _get(gateway, **{"Accept-Encoding": "gzip"})
    assert int(headers["content-length"]) == len(compressed)
    assert headers["etag"] == got["etag"]

    request = urllib.request.Request(gateway.http + PATH, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


# --- right -----------------------------------------------------------------------------


def test_inline_code_renders_as_code(page: Page, gateway: Server) -> None:
    _open(page, gateway)
    text = page.locator("body").inner_text()
    assert not TICKED.findall(text), TICKED.findall(text)[:10]
    assert page.locator("#asyncapi code").count() > 0

    # A summary with code (the component prints summaries as plain text) shows it as code.
    ticked = {
        name: message["summary"]
        for name, message in SPEC["components"]["messages"].items()
        if TICKED.search(message.get("summary", ""))
    }
    assert ticked, "the spec has no message summary with inline code any more: pick another check"
    for name, summary in ticked.items():
        section = page.locator(f"#message-{name}")
        shown = section.locator("code").all_inner_texts()
        for code in re.findall(r"`([^`\n]+)`", summary):
            assert code in shown, (name, code, shown)
    # Markdown descriptions' code too, and no backticks drawn around it by the stylesheet.
    ticks: list[str] = page.evaluate(
        "[...document.querySelectorAll('#asyncapi code')].filter(c => !c.closest('pre'))"
        ".map(c => getComputedStyle(c, '::before').content + getComputedStyle(c, '::after').content)"
    )
    assert ticks
    assert not [t for t in ticks if "`" in t], set(ticks)


def test_header_shows_the_asyncapi_and_the_protocol_version(page: Page, gateway: Server) -> None:
    _open(page, gateway)
    header = page.locator("header.gw-bar")
    expect(header).to_be_visible()
    expect(header).to_contain_text(f"AsyncAPI {SPEC['asyncapi']}")
    expect(header).to_contain_text(f"version {SPEC['info']['version']}")
    assert SPEC["asyncapi"] == "3.0.0"
    expect(page).to_have_title(re.compile(re.escape(f"{SPEC['info']['title']} {SPEC['info']['version']}")))


def test_servers_show_the_address_the_page_was_served_from(page: Page, gateway: Server) -> None:
    _open(page, gateway)
    servers = page.locator("#servers")
    expect(servers).to_contain_text(f"127.0.0.1:{gateway.port}")
    assert "__GRAPHWIRE" not in page.content()
    if gateway.port != 8000:
        assert "127.0.0.1:8000" not in servers.inner_text()

    # Whatever the client asked for, as long as it is a host[:port]; anything else is not echoed.
    _, _, body = _get(gateway, Host="docs.example.org:9443")
    assert b"ws://docs.example.org:9443/" in body
    _, _, body = _get(gateway, Host="[::1]:8123")
    assert b"ws://[::1]:8123/" in body
    _, _, body = _get(gateway, Host='"><script>alert(1)</script>')
    assert b"<script>alert(1)" not in body
    assert b"ws://127.0.0.1:8000/" in body


# --- still the component's page --------------------------------------------------------


def test_the_components_toggles_work_on_the_static_page(page: Page, gateway: Server) -> None:
    _open(page, gateway)
    assert page.locator("script[src]").count() == 0  # no renderer shipped
    name = "StartWorkflow"
    payload = SPEC["components"]["schemas"][SPEC["components"]["messages"][name]["payload"]["$ref"].rsplit("/", 1)[-1]]
    section = page.locator(f"#message-{name}-payload")
    toggle = section.get_by_role("button", name="Payload")
    properties = list(payload["properties"])
    # Folded, as the component starts.
    expect(toggle).to_have_attribute("aria-expanded", "false")
    assert properties[-1] not in _plain(section.inner_text()).split()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    for prop in properties:
        expect(section.get_by_text(prop, exact=True).first).to_be_visible()
    toggle.click()
    expect(section.get_by_text(properties[-1], exact=True).first).to_be_hidden()

    # "Expand all" opens every level below; "Collapse all" folds them again.
    deep = section.get_by_role("button", name="Expand all").first
    deep.click()
    expect(section.get_by_role("button", name="Collapse all").first).to_be_visible()
    assert section.locator('button[data-gw-toggle="schema"][aria-expanded="false"]').count() == 0
    section.get_by_role("button", name="Collapse all").first.click()
    expect(toggle).to_have_attribute("aria-expanded", "false")

    # A reply, folded in its operation, shows its message and example when asked.
    reply_toggle = page.get_by_text("Expected Reply Message").first
    reply = reply_toggle.locator("xpath=ancestor::button[1]/following-sibling::div[1]")
    expect(reply).to_be_hidden()
    reply_toggle.click()
    expect(reply).to_be_visible()
    expect(reply.locator("pre").first).to_be_visible()


def test_links_point_into_the_page(page: Page, gateway: Server) -> None:
    _open(page, gateway)
    broken: list[str] = page.evaluate(
        "[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
        ".filter(h => !/^(#|\\/|https?:)/.test(h) || (h.startsWith('#') && !document.getElementById(h.slice(1))))"
    )
    assert not broken, sorted(set(broken))
    assert page.locator('a[href="#server-local"]').count() > 0


def test_the_sidebar_opens_from_the_burger_on_a_narrow_screen(browser: Browser, gateway: Server) -> None:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    try:
        page = context.new_page()
        _open(page, gateway)
        menu = page.locator(".aui-root .sidebar").get_by_role("link", name="Messages", exact=True)
        expect(menu).to_be_hidden()
        page.locator(".aui-root .burger-menu").click()
        expect(menu).to_be_visible()
        menu.click()
        expect(menu).to_be_hidden()
        expect(page.locator("#messages")).to_be_in_viewport()
    finally:
        context.close()
