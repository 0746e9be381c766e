"""``docs/kaygraph.md`` works as written: every step's file runs and prints what the page shows.

Each file comes from the page (a fenced block whose first line names it), is written to a
folder of its own, and runs as a user runs it: the servers are started with the page's own
commands from that folder, with the venv's ``bin`` first on ``PATH`` and no ``PYTHONPATH``
(``--port`` added); the clients run in this process with only the port changed, and every
frame they receive is recorded (and, on ``/ws/workflow``, checked against the spec).
"""

from __future__ import annotations

import ast
import difflib
import functools
import http.server
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import websockets
from playwright.sync_api import expect, sync_playwright
from websockets.asyncio.client import ClientConnection
from websockets.typing import Data

from harness import ROOT, SERVER_MESSAGE, assert_gap_free, connect, free_port
from test_browser_pages import CHROMIUM_FLAGS, _chromium

PAGE = (ROOT / "docs" / "kaygraph.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
FILE_NAME = {"python": re.compile(r"# (\w+\.py)"), "html": re.compile(r"<!-- (\w+\.html) -->")}
IMPORT = re.compile(r"(from (kaygraph|graphwire\.graph)(\.\w+)* import .+|import (kaygraph|graphwire\.graph)\b.*)")
VENV_BIN = ROOT / ".venv" / "bin"
GATEWAY_URL = "127.0.0.1:8000"
PATH_OF_THE_RUN = ["load", "count", "summarize", "finish"]  # load >> count - "long" >> summarize >> finish


def section(title: str) -> str:
    """The text of the page's ``### <title>…`` section."""
    return re.split(r"\n##+ ", PAGE.split(f"\n### {title}", 1)[1], maxsplit=1)[0]


def blocks(lang: str, text: str = PAGE) -> list[str]:
    return [body for kind, body in BLOCK.findall(text) if kind == lang]


def page_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for lang, name in FILE_NAME.items():
        for body in blocks(lang):
            first = name.fullmatch(body.splitlines()[0])
            if first is not None:
                assert first[1] not in files, f"{first[1]} is shown twice"
                files[first[1]] = body
    return files


def page_outputs() -> dict[str, list[str]]:
    """``$ python <file>`` blocks: what that file prints, line by line."""
    outputs = {}
    for body in blocks("text"):
        command, *lines = body.splitlines()
        if command.startswith("$ python "):
            outputs[command.removeprefix("$ python ")] = lines
    return outputs


FILES = page_files()
OUTPUTS = page_outputs()
COMMANDS = [line.strip() for body in blocks("sh") for line in body.splitlines() if line.strip()]


@dataclass(frozen=True)
class Promised:
    """What the page's outputs say a run does: progress per line, a streamed summary, the result."""

    progress: list[tuple[str, int, int]]
    summary: str
    result: dict[str, Any]


def promised(name: str) -> Promised:
    *progress, summary, result = OUTPUTS[name]
    matches = [re.fullmatch(r"(\w+): (\d+)/(\d+)", line) for line in progress]
    assert all(matches), progress
    assert result.startswith("result: "), result
    return Promised(
        [(m[1], int(m[2]), int(m[3])) for m in matches if m is not None],
        summary,
        ast.literal_eval(result.removeprefix("result: ")),
    )


def test_the_page_shows_every_step() -> None:
    assert sorted(FILES) == [
        "client.py",
        "step1_app.py",
        "step2_app.py",
        "step3_client.py",
        "step3_flows.py",
        "step3_page.html",
        "step4_client.py",
    ]
    assert sorted(OUTPUTS) == ["client.py", "step3_client.py", "step4_client.py"]
    assert COMMANDS == [
        "uvicorn step1_app:app",
        "uvicorn step2_app:app",
        "graphwire serve --workflows step3_flows:register",
    ]
    assert "\n## Where graphwire differs from KayGraph\n" in PAGE  # the intro links it
    assert "(#where-graphwire-differs-from-kaygraph)" in PAGE


def test_step1_is_step0_with_only_its_kaygraph_import_changed() -> None:
    step1 = FILES["step1_app.py"]
    step0 = step1.replace("graphwire.graph", "kaygraph")
    changed = [line for line in difflib.ndiff(step0.splitlines(), step1.splitlines()) if line[:2] in ("- ", "+ ")]
    assert changed
    assert all(IMPORT.fullmatch(line[2:]) for line in changed), changed
    # Nothing else in step 1 is graphwire's: every mention of it is that import.
    assert all(IMPORT.fullmatch(line) for line in step1.splitlines() if "graphwire" in line)
    (diff,) = blocks("diff", section("Step 0"))
    assert diff.splitlines() == [line[0] + line[2:] for line in changed]


def test_step3_nodes_are_step2_nodes_reading_params() -> None:
    def nodes(source: str) -> list[str]:
        start = source.index("class LoadDocument")
        end = source.index("return AsyncGraph(load)")
        return source[start:end].splitlines()

    changed = [
        line
        for line in difflib.ndiff(nodes(FILES["step2_app.py"]), nodes(FILES["step3_flows.py"]))
        if line[:2] in ("- ", "+ ")
    ]
    assert len(changed) == 4, changed  # "The nodes change in two lines only"
    assert all('shared["params"]' in line for line in changed if line.startswith("+"))
    assert "change in two lines only" in section("Step 3")


# -- running the files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder holding every file of the page."""
    path = tmp_path_factory.mktemp("kaygraph-migration")
    for name, body in FILES.items():
        (path / name).write_text(body, encoding="utf-8")
    return path


def user_env() -> dict[str, str]:
    """A shell with graphwire's venv activated and nothing else of the test run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("GRAPHWIRE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    output: list[str]


@contextmanager
def serve(command: str, cwd: Path) -> Iterator[Served]:
    """Run one of the page's server commands from ``cwd`` on a free port until the block ends.

    Ready means uvicorn logged that it listens (its socket is bound by then); the process's
    output is drained by a thread so it can never block on a full pipe.
    """
    assert command in COMMANDS
    port = free_port()
    env = user_env()
    program, *args = shlex.split(command)
    executable = shutil.which(program, path=env["PATH"])
    assert executable is not None, program
    process = subprocess.Popen(
        [executable, *args, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    listening = threading.Event()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Uvicorn running on" in line:
                listening.set()
        listening.set()  # the process ended

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        listening.wait(15)
        assert process.poll() is None, "".join(output)
        assert any("Uvicorn running on" in line for line in output), "".join(output)
        yield Served(process, port, output)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()
    assert "Traceback" not in "".join(output), "".join(output)


@pytest.fixture(scope="module")
def gateway(folder: Path) -> Iterator[Served]:
    with serve("graphwire serve --workflows step3_flows:register", folder) as served:
        yield served


def load_client(folder: Path, name: str, port: int) -> Any:
    """The page's client ``name`` as a module, talking to ``port`` instead of 8000."""
    source = FILES[name]
    assert GATEWAY_URL in source, name
    path = folder / f"{Path(name).stem}_on_{port}.py"
    path.write_text(source.replace(GATEWAY_URL, f"127.0.0.1:{port}"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recording(frames: list[dict[str, Any]], check_spec: bool) -> type[ClientConnection]:
    """A ``websockets`` connection class that records (and checks) every frame it receives."""

    class Recording(ClientConnection):
        async def recv(self, decode: bool | None = None) -> Data:  # type: ignore[override]
            raw = await super().recv(decode)
            assert isinstance(raw, str), "text frames only"
            frame = json.loads(raw)
            if check_spec:
                errors = SERVER_MESSAGE.errors(frame)
                assert not errors, f"frame breaks the spec: {frame}: {errors}"
            frames.append(frame)
            return raw

    return Recording


async def run_client(module: Any, monkeypatch: pytest.MonkeyPatch, *, check_spec: bool = False) -> list[dict[str, Any]]:
    """Run the client module's ``main()``; return the frames its ``websockets.connect`` received."""
    frames: list[dict[str, Any]] = []
    with monkeypatch.context() as patch:
        connect = functools.partial(websockets.connect, create_connection=recording(frames, check_spec))
        patch.setattr(websockets, "connect", connect)
        main = cast(Callable[[], Awaitable[None]], module.main)
        await main()
    return frames


def step1_messages(promise: Promised) -> list[dict[str, Any]]:
    """What the step 1 endpoint sends, by hand, for the page's run."""
    progress = [
        {"type": "progress", "node": node, "data": {"current": current, "total": total}}
        for node, current, total in promise.progress
    ]
    words = promise.summary.split(" ")
    tokens = [
        {"type": "token", "node": "summarize", "data": word if i == len(words) - 1 else word + " "}
        for i, word in enumerate(words)
    ]
    return [*progress, *tokens, {"type": "result", "data": promise.result}]


def step2_messages(promise: Promised) -> list[dict[str, Any]]:
    """Step 1's messages with a ``node_status`` around each node of the run."""
    by_node: dict[str, list[dict[str, Any]]] = {node: [] for node in PATH_OF_THE_RUN}
    *updates, result = step1_messages(promise)
    for message in updates:
        by_node[message["node"]].append(message)
    messages = []
    for node, sent in by_node.items():
        messages.append({"type": "node_status", "node": node, "data": {"status": "running"}})
        messages.extend(sent)
        messages.append({"type": "node_status", "node": node, "data": {"status": "completed"}})
    return [*messages, result]


async def test_step1_the_fastapi_endpoint_pushes_progress_by_hand(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve("uvicorn step1_app:app", folder) as served:
        frames = await run_client(load_client(folder, "client.py", served.port), monkeypatch)
    assert capsys.readouterr().out.splitlines() == OUTPUTS["client.py"]
    assert frames == step1_messages(promised("client.py"))


async def test_step2_nodes_report_through_the_endpoints_run_context(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve("uvicorn step2_app:app", folder) as served:
        frames = await run_client(load_client(folder, "client.py", served.port), monkeypatch)
    assert capsys.readouterr().out.splitlines() == OUTPUTS["client.py"]  # "prints what it printed in step 1"
    assert frames == step2_messages(promised("client.py"))
    (example,) = re.findall(r'`(\{"type": "node_status".*?\})`', section("Step 2"))
    assert json.loads(example) in frames


async def test_step3_a_plain_client_speaks_the_protocol(
    gateway: Served, folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = load_client(folder, "step3_client.py", gateway.port)
    frames = await run_client(client, monkeypatch, check_spec=True)
    assert capsys.readouterr().out.splitlines() == OUTPUTS["step3_client.py"]
    assert frames[0]["type"] == "connected"
    events = frames[1:]
    assert_gap_free(events)
    assert {e["workflow_id"] for e in events} == {events[0]["workflow_id"]}
    # The table of step 3: each of step 2's messages became its protocol event.
    renamed = {"node_status": "node_update", "progress": "progress", "token": "token"}
    expected: list[dict[str, Any]] = [{"type": "workflow_started", "workflow": "summarize"}]
    promise = promised("step3_client.py")
    for message in step2_messages(promise)[:-1]:
        data = message["data"]
        if message["type"] == "progress":
            data = {"percent": 100.0 * data["current"] / data["total"], **data}
        expected.append({"type": renamed[message["type"]], "node_id": message["node"], "data": data})
    expected.append({"type": "workflow_completed", "data": promise.result})
    assert len(events) == len(expected), events
    assert [{k: e.get(k) for k in x} for e, x in zip(events, expected, strict=True)] == expected
    assert client.START == {
        "type": "start_workflow",
        "workflow": "summarize",
        "params": {"document": client.DOCUMENT, "max_words": 20},
    }
    # "bad ones get `error {code: invalid_params, path}` and no run"
    plain = await connect(f"ws://127.0.0.1:{gateway.port}/ws/workflow")
    await plain.send({"type": "start_workflow", "id": "bad", "workflow": "summarize", "params": {"document": 3}})
    (refused,) = await plain.until(lambda m: m.get("reply_to") == "bad")
    assert (refused["type"], refused["code"], refused["path"]) == ("error", "invalid_params", "params.document")
    await plain.close()
    assert "`error {code: invalid_params, path}` and no run" in section("Step 3")


def test_step3_the_browser_snippet_shows_the_run(gateway: Served, folder: Path) -> None:
    page_html = FILES["step3_page.html"].replace(GATEWAY_URL, f"127.0.0.1:{gateway.port}")
    (folder / "index.html").write_text(page_html, encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(f"http://127.0.0.1:{site.server_address[1]}/index.html")
                out = page.locator("#out")
                expect(out).to_contain_text("result: ", timeout=10_000)
                shown = out.inner_text().splitlines()
            finally:
                browser.close()
    finally:
        site.shutdown()
        site.server_close()
    assert not errors, errors
    # The same lines as the Python clients, with the result as JSON.
    assert shown[:-1] == OUTPUTS["step3_client.py"][:-1]
    assert json.loads(shown[-1].removeprefix("result: ")) == promised("step3_client.py").result


async def test_step4_the_sdk_runs_the_workflow(
    gateway: Served, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = load_client(folder, "step4_client.py", gateway.port)
    main = cast(Callable[[], Awaitable[None]], client.main)
    await main()
    assert capsys.readouterr().out.splitlines() == OUTPUTS["step4_client.py"]
    assert OUTPUTS["step4_client.py"] == OUTPUTS["step3_client.py"] == OUTPUTS["client.py"]
