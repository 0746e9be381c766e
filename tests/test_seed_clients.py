"""The seed's own clients, verbatim, against ``make run``: a bare ``websockets`` script and
a bare browser page. Only the port differs from the product description's text.

They know nothing of graphwire's SDKs: no ``?batch=1``, no envelope handling, no resume.
That is the point: a gateway that only works with its own SDKs is not the product.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from harness import ROOT, free_port
from test_browser_pages import CHROMIUM_FLAGS, _chromium

SEED_PYTHON_CLIENT = """\
import asyncio
import websockets
import json

async def client():
    async with websockets.connect('ws://localhost:8000/ws/workflow') as ws:
        await ws.send(json.dumps({
            'type': 'start_workflow',
            'workflow': 'data_processing',
            'params': {'data': [1, 2, 3, 4, 5]}
        }))
        async for message in ws:
            data = json.loads(message)
            print(f"Received: {data['type']} - {data.get('data')}")
            if data['type'] == 'workflow_completed':
                break

asyncio.run(client())
"""

SEED_BROWSER_PAGE = """\
<div id="messages"></div>
<input type="text" id="input" placeholder="Enter message">
<button onclick="sendMessage()">Send</button>
<script>
    const ws = new WebSocket('ws://localhost:8000/ws/chat');
    const messages = document.getElementById('messages');
    ws.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        messages.innerHTML += `<p>${msg.type}: ${JSON.stringify(msg.data)}</p>`;
    };
    function sendMessage() {
        const input = document.getElementById('input');
        ws.send(JSON.stringify({ type: 'message', content: input.value }));
        input.value = '';
    }
</script>
"""


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``make run PORT=<free port>``: the gateway with its embedded defaults, as a user starts it."""
    port = free_port()
    log = tmp_path_factory.mktemp("make-run") / "make-run.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "-s", "run", f"PORT={port}"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ws/health", timeout=2):
                break
        except OSError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    yield port
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def test_the_seed_python_client_runs_to_its_end_and_prints_the_data(make_run: int, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(SEED_PYTHON_CLIENT.replace("localhost:8000", f"localhost:{make_run}"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Received: connected - ")
    assert "Received: workflow_started - None" in lines
    # Every progress event prints the node's own payload, as the seed's ProcessingNode sends it.
    progress = [line for line in lines if line.startswith("Received: progress - ")]
    assert progress[-1] == "Received: progress - {'percent': 100.0, 'current': 5, 'total': 5}"
    assert len(progress) == 5
    assert not any(line.startswith("Received: batch") for line in lines), "a plain client never gets a batch"
    assert lines[-1] == "Received: workflow_completed - {'count': 5, 'sum': 15.0, 'mean': 3.0}"


def test_the_seed_browser_page_shows_the_streamed_reply(make_run: int, tmp_path: Path) -> None:
    # Served from its own origin, as a user's page on a dev server would be.
    (tmp_path / "index.html").write_text(SEED_BROWSER_PAGE.replace("localhost:8000", f"localhost:{make_run}"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"http://localhost:{site.server_address[1]}/index.html")
            paragraphs = page.locator("#messages p")
            expect(paragraphs.first).to_contain_text("connected: {")  # the socket is open
            page.locator("#input").fill("hello from the seed page")
            page.locator("button").click()
            expect(paragraphs.last).to_contain_text("workflow_completed: ", timeout=20_000)
            lines = paragraphs.all_inner_texts()
            assert page.locator("#input").input_value() == ""
            (ROOT / "test-artifacts").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "test-artifacts" / "seed-chat-page.png"), full_page=True)
            browser.close()
    finally:
        site.shutdown()
        site.server_close()
    assert not errors, errors
    assert not any("undefined" in line for line in lines), lines
    assert not any(line.startswith("batch") for line in lines), lines
    tokens = [line.removeprefix("token: ") for line in lines if line.startswith("token: ")]
    assert len(tokens) > 5, lines
    # Each token is readable text (a JSON string), and together they are the reply.
    reply = "".join(json.loads(token) for token in tokens)
    assert "hello from the seed page" in reply
    assert lines[1].startswith('workflow_started: {"workflow_id":"run_')
    assert lines[-1] == f"workflow_completed: {json.dumps({'reply': reply}, separators=(',', ':'))}"
