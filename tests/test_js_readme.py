"""Every block and command of ``clients/js/README.md``, run as the README tells a user to.

- ``make setup`` runs from the repository root; ``cd clients/js && npm test`` is run,
  verbatim, by ``tests/test_js_sdk.py``.
- The gateway is ``make run`` (on a free port instead of 8000; the examples' URLs follow).
- Each ``js`` block is saved as ``example.mjs`` inside ``clients/js`` and run with
  ``node example.mjs``; what it prints must be the ``text`` block under it, line for line
  (``…`` stands for anything). One runs from a project of its own after
  ``npm install /path/to/graphwire/clients/js``.
- Each ``ts`` block is checked with ``npx tsc --noEmit --ignoreConfig example.ts`` inside
  ``clients/js``; its output must be the ``text`` block under it (none: it compiles). The
  ``js`` blocks compile as TypeScript too ("fully typed").
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import ROOT, free_port
from test_js_sdk import NPM_TEST, readme_command

JS = ROOT / "clients" / "js"
README = (JS / "README.md").read_text(encoding="utf-8")
STATIC = ROOT / "server" / "src" / "graphwire" / "static"
# Commands the README's prose gives; each is run below exactly so.
PROSE_COMMANDS = [
    "make run",
    "node example.mjs",
    "npm install /path/to/graphwire/clients/js",
    "npx tsc --noEmit --ignoreConfig example.ts",
    "npx tsc --noEmit --ignoreConfig --types node example.ts",
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)


@dataclass(frozen=True)
class Example:
    lang: str  # js or ts
    code: str
    prints: str | None  # the text block right under it
    line: int  # where it starts in the README

    @property
    def key(self) -> str:
        return f"{self.lang}-line{self.line}"


def _blocks() -> list[tuple[str, str, int, int]]:
    return [(m[1], m[2], m.start(), m.end()) for m in FENCE.finditer(README)]


def _examples() -> list[Example]:
    blocks = _blocks()
    examples = []
    for i, (lang, code, start, end) in enumerate(blocks):
        if lang not in ("js", "ts"):
            continue
        after = blocks[i + 1] if i + 1 < len(blocks) else None
        # Its output is the `text` block that follows it with nothing but blank lines between.
        prints = after[1] if after and after[0] == "text" and README[end : after[2]].strip() == "" else None
        examples.append(Example(lang, code, prints, README.count("\n", 0, start) + 1))
    return examples


EXAMPLES = _examples()
JS_EXAMPLES = [e for e in EXAMPLES if e.lang == "js"]
TS_EXAMPLES = [e for e in EXAMPLES if e.lang == "ts"]


def _matches(expected: str, actual: str) -> bool:
    """``actual`` is ``expected`` line for line, ``…`` matching anything within a line."""
    want = expected.splitlines()
    got = [line.rstrip() for line in actual.splitlines()]
    if len(want) != len(got):
        return False
    patterns = (".*".join(map(re.escape, line.rstrip().split("…"))) for line in want)
    return all(re.fullmatch(pattern, line) for pattern, line in zip(patterns, got, strict=True))


def _folder(name: str) -> Path:
    """A fresh folder inside ``clients/js`` (the README's "inside clients/js")."""
    folder = JS / "build-test" / "readme" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None or not (JS / "node_modules" / "typescript").is_dir():
        pytest.fail(f"`{name}` or the TypeScript SDK's node_modules are missing: run `make setup` (Node.js 20, npm)")
    return path


@dataclass
class Gateway:
    port: int
    log: Path

    def localise(self, code: str) -> str:
        return code.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``make run`` from the repository root, as in the README (on a free port)."""
    port = free_port()
    log = tmp_path_factory.mktemp("js-readme-gateway") / "make-run.log"
    with log.open("wb") as out:
        # Its own process group, so that make and the gateway it started stop together.
        process = subprocess.Popen(
            ["make", "run", f"PORT={port}"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"`make run` exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ws/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"`make run` did not become healthy:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Gateway(port, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text


def _run_node(folder: Path, gateway: Gateway, example: Example) -> None:
    (folder / "example.mjs").write_text(gateway.localise(example.code), encoding="utf-8")
    done = subprocess.run(
        [_tool("node"), "example.mjs"], cwd=folder, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert example.prints is not None
    expected = gateway.localise(example.prints)
    assert _matches(expected, done.stdout), f"README promises:\n{expected}\nit printed:\n{done.stdout}{done.stderr}"


# --- the README as a whole ---------------------------------------------------------------


def test_every_block_and_command_is_covered() -> None:
    blocks = _blocks()
    assert {lang for lang, *_ in blocks} == {"sh", "js", "ts", "text"}
    # Every output block belongs to the example above it, every js example has one.
    assert sum(lang == "text" for lang, *_ in blocks) == sum(e.prints is not None for e in EXAMPLES)
    assert all(e.prints is not None for e in JS_EXAMPLES), [e.key for e in JS_EXAMPLES if e.prints is None]
    assert len(JS_EXAMPLES) >= 6
    assert len(TS_EXAMPLES) >= 2
    # What an example prints is promised in its text block, not in comments that no test reads.
    for example in JS_EXAMPLES:
        for line in example.code.splitlines():
            if "console.log(" in line or "process.stdout.write(" in line:
                assert "//" not in line, f"{example.key}: put the output in the text block: {line}"
    # The sh block: `make setup` (below) and the tests (tests/test_js_sdk.py runs NPM_TEST).
    commands = [
        line.split(" #", 1)[0].strip()
        for lang, code, *_ in blocks
        if lang == "sh"
        for line in code.splitlines()
        if line.strip()
    ]
    assert commands == [readme_command("make setup"), NPM_TEST] == ["make setup", "cd clients/js && npm test"]
    prose = " ".join(README.split())  # a command may wrap across lines
    for command in PROSE_COMMANDS:
        assert f"`{command}`" in prose, command


@pytest.mark.timeout(600)
def test_make_setup_builds_the_package_the_demo_and_the_docs() -> None:
    # "from the repository root: npm ci, build (dist/), demo, docs"
    done = subprocess.run(["make", "setup"], cwd=ROOT, capture_output=True, text=True, timeout=590, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for built in (
        JS / "node_modules" / ".graphwire-installed",
        JS / "dist" / "index.js",
        JS / "dist" / "index.d.ts",
        STATIC / "demo" / "index.html",
        STATIC / "demo" / "app.js",
        STATIC / "docs" / "asyncapi.html",
    ):
        assert built.is_file(), built


# --- the examples ----------------------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("example", JS_EXAMPLES, ids=lambda e: e.key)
def test_js_example_prints_what_the_readme_says(gateway: Gateway, example: Example) -> None:
    if not (JS / "dist" / "index.js").is_file():
        pytest.fail("the TypeScript SDK is not built: run `make setup` (needs Node.js 20 and npm)")
    _run_node(_folder(example.key), gateway, example)


@pytest.mark.timeout(120)
def test_js_example_runs_in_a_project_of_your_own(gateway: Gateway, tmp_path: Path) -> None:
    # "In a project of your own, `npm install /path/to/graphwire/clients/js` first."
    command = "npm install /path/to/graphwire/clients/js".replace("/path/to/graphwire", str(ROOT))
    done = subprocess.run(
        [_tool("npm"), *command.split()[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "node_modules" / "@graphwire" / "client" / "package.json").is_file()
    _run_node(tmp_path, gateway, JS_EXAMPLES[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", TS_EXAMPLES, ids=lambda e: e.key)
def test_ts_example_checks_as_the_readme_says(example: Example) -> None:
    folder = _folder(example.key)
    (folder / "example.ts").write_text(example.code, encoding="utf-8")
    done = subprocess.run(
        [_tool("npx"), "tsc", "--noEmit", "--ignoreConfig", "example.ts"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    if example.prints is None:
        assert done.returncode == 0, f"the example does not compile:\n{done.stdout}{done.stderr}"
        assert done.stdout.strip() == ""
    else:
        assert done.returncode != 0, "tsc accepted an example the README says does not compile"
        assert _matches(example.prints, done.stdout), f"README promises:\n{example.prints}\ntsc said:\n{done.stdout}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("example", JS_EXAMPLES, ids=lambda e: e.key)
def test_js_example_is_fully_typed(example: Example) -> None:
    # "In TypeScript the same code is fully typed: saved as `example.ts`, it passes `npx tsc …`"
    folder = _folder(f"{example.key}-as-ts")
    (folder / "example.ts").write_text(example.code, encoding="utf-8")
    done = subprocess.run(
        [_tool("npx"), "tsc", "--noEmit", "--ignoreConfig", "--types", "node", "example.ts"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""
