"""The demo against a gateway with auth on, in real headless Chromium.

A browser cannot set headers on a WebSocket, so the SDK offers the subprotocols
``graphwire.v1`` and ``bearer.<token>``, and the gateway selects ``graphwire.v1`` (a
browser fails an opening whose answer selects none). The page reads the token from
``?token=``; the header's token field reloads the page so. A bad token is refused after
the handshake with close 4001, which the page shows; the client does not retry it.

The handshake is watched through the Chrome DevTools Protocol (``Network`` domain): what
the page offered, and what the gateway selected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from harness import Server, start_server, stop_server
from test_browser_pages import CHROMIUM_FLAGS, _chromium

SECRET = "graphwire-browser-auth-test-secret-0123456789"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("browser-auth"), env={"GRAPHWIRE_AUTH_JWT_SECRET": SECRET})
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


class Handshakes:
    """Every WebSocket handshake of a page, as Chromium's network stack saw it."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []

    @staticmethod
    def header(headers: dict[str, str], name: str) -> str | None:
        return next((value for key, value in headers.items() if key.lower() == name.lower()), None)

    def offered(self) -> list[str | None]:
        return [self.header(r["request"]["headers"], "Sec-WebSocket-Protocol") for r in self.requests]

    def selected(self) -> list[str | None]:
        return [self.header(r["response"]["headers"], "Sec-WebSocket-Protocol") for r in self.responses]


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Handshakes]]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    handshakes = Handshakes()
    cdp = context.new_cdp_session(page)
    cdp.on("Network.webSocketCreated", lambda event: handshakes.urls.append(event["url"]))
    cdp.on("Network.webSocketWillSendHandshakeRequest", lambda event: handshakes.requests.append(event))
    cdp.on("Network.webSocketHandshakeResponseReceived", lambda event: handshakes.responses.append(event))
    cdp.send("Network.enable")
    yield page, handshakes
    context.close()
    assert not errors, errors


def dev_token(sub: str, scope: str, ttl: int = 600) -> str:
    """A token from ``graphwire token``, the CLI the README gives for development."""
    done = subprocess.run(
        [sys.executable, "-m", "graphwire", "token", "--sub", sub, "--scope", scope, "--ttl", str(ttl)],
        env={**os.environ, "GRAPHWIRE_AUTH_JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = done.stdout.strip()
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token), done.stdout
    return token


def run_data_processing(page: Page) -> None:
    page.fill("#data-input", "1 2 3 6")
    page.fill("#data-delay", "0")
    page.click("#data-form button")
    expect(page.locator("#data-meta")).to_have_text(re.compile(r"completed$"), timeout=15_000)
    expect(page.locator("#data-result [data-field=mean] dd")).to_have_text("3")


def test_a_fresh_token_connects_through_the_subprotocol_and_runs(
    gateway: Server, page: tuple[Page, Handshakes]
) -> None:
    browser_page, handshakes = page
    token = dev_token("alice", "workflows:start runs:read")
    browser_page.goto(f"{gateway.http}/?token={token}")
    expect(browser_page.locator("#state")).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(browser_page.locator("#user")).to_have_text("as alice")
    expect(browser_page.locator("#connection-error")).to_be_hidden()
    # Read once, then gone from the address bar.
    assert "token" not in browser_page.url, browser_page.url

    assert handshakes.offered() == [f"graphwire.v1, bearer.{token}"]
    assert handshakes.selected() == ["graphwire.v1"]
    [url] = handshakes.urls
    assert "token" not in url, url

    run_data_processing(browser_page)
    assert token not in gateway.log(), "a token was logged"


def test_a_junk_token_shows_the_4001_refusal_and_is_not_retried(gateway: Server, page: tuple[Page, Handshakes]) -> None:
    browser_page, handshakes = page
    browser_page.goto(f"{gateway.http}/?token=junk.not-a.token")
    refusal = browser_page.locator("#connection-error")
    expect(refusal).to_be_visible(timeout=15_000)
    expect(refusal).to_have_attribute("data-close-code", "4001")
    expect(refusal).to_contain_text("4001 (unauthorized)")
    expect(refusal).to_contain_text("Paste a valid token above.")
    expect(browser_page.locator("#state")).to_have_attribute("data-state", "disconnected")
    # The handshake itself completed (so the page could read the close code), once.
    assert handshakes.selected() == ["graphwire.v1"]
    browser_page.wait_for_timeout(1500)
    assert len(handshakes.requests) == 1, "a 4001 is not retried"


def test_the_token_field_connects_a_page_opened_without_one(gateway: Server, page: tuple[Page, Handshakes]) -> None:
    browser_page, handshakes = page
    browser_page.goto(gateway.http + "/")
    refusal = browser_page.locator("#connection-error")
    expect(refusal).to_have_attribute("data-close-code", "4001", timeout=15_000)
    assert handshakes.offered() == [None], "no token, no subprotocol"

    browser_page.fill("#token-input", dev_token("bob", "workflows:start"))
    browser_page.click("#token-form button")
    expect(browser_page.locator("#state")).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(browser_page.locator("#user")).to_have_text("as bob")
    expect(refusal).to_be_hidden()
    run_data_processing(browser_page)
