"""``clients/python/README.md`` as a user follows it: every command run, every promise checked.

- The install commands run as written, in a fresh virtualenv (activated: its ``bin`` first
  on ``PATH``), from the repository root; everything below uses that virtualenv, never the
  development one. (They fetch ``websockets``, ``pydantic`` and ``rich`` from the package
  index, as they would for the user.)
- Every ``python`` block (and the root README's "Python SDK" section) runs as a script
  against a real server, with only the port changed. A comment on a ``print`` line is what
  that line prints: it must equal a whole line of the script's output, ``…`` standing for
  any text.
- Every ``-> mypy: …`` comment is uncommented and must give that mypy error; a comment
  naming a type on an assignment (``# a DataProcessingResult``, ``# Run[ChatResult]``) is
  the type mypy infers; the blocks are otherwise clean under ``mypy --strict``.
- Every line of the CLI block runs in a terminal (a pty) and does what its comment says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness import ROOT, Server
from test_sdk_cli import SPINNER, Terminal

README = ROOT / "clients" / "python" / "README.md"
ROOT_README = ROOT / "README.md"
BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.DOTALL)
MYPY_CLAIM = re.compile(r"^(?P<indent>\s*)# (?P<code>.+?)\s+-> mypy: (?P<message>.+)$")
TYPE_CLAIM = re.compile(r"^(?P<indent>\s*)(?P<name>\w+) = .+  # (?:an? )?(?P<type>[A-Z]\w*(?:\[[\w, \[\]]+\])?)$")
MYPY_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<message>.*)$")


def blocks(kind: str, text: str | None = None) -> list[str]:
    return [body for lang, body in BLOCK.findall(text or README.read_text(encoding="utf-8")) if lang == kind]


def python_blocks() -> list[str]:
    section = ROOT_README.read_text(encoding="utf-8").split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    return blocks("python") + blocks("python", section)


def pattern(claim: str) -> re.Pattern[str]:
    """A comment as a pattern: literal text, ``…`` for any text."""
    return re.compile(".*".join(re.escape(part.strip()) for part in claim.split("…")))


def output_claims(block: str) -> list[str]:
    """The comments on ``print`` lines: what those lines print."""
    claims = []
    for line in block.splitlines():
        code, sep, comment = line.partition("  # ")
        if sep and "print(" in code and not code.lstrip().startswith("#"):
            claims.append(comment.strip())
    return claims


def activated(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell where ``venv`` is activated (and nothing else is set up)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the package installed by the README's own install commands."""
    venv = tmp_path_factory.mktemp("user") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    (install,) = [b for b in blocks("sh") if "pip install" in b]
    for line in install.splitlines():
        done = subprocess.run(
            ["bash", "-c", line], cwd=ROOT, env=activated(venv), capture_output=True, text=True, timeout=100
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
    return venv


def test_the_install_commands_give_the_library_then_the_cli(user_venv: Path) -> None:
    (install,) = [b for b in blocks("sh") if "pip install" in b]
    assert "# the library: websockets + pydantic" in install
    assert "# + rich, for the graphwire-client command" in install
    probe = """
import importlib.metadata as m, json
print(json.dumps(sorted(m.requires("graphwire-client"))))
import graphwire_client, rich
print(graphwire_client.__file__)
"""
    done = subprocess.run(
        ["python", "-c", probe], env=activated(user_venv), capture_output=True, text=True, timeout=30, cwd=user_venv
    )
    assert done.returncode == 0, done.stderr
    requires, location = done.stdout.splitlines()
    plain = [r for r in json.loads(requires) if "extra ==" not in r]
    cli = [r for r in json.loads(requires) if 'extra == "cli"' in r]
    assert sorted(re.split(r"[<>=\s]", r)[0] for r in plain) == ["pydantic", "websockets"]
    assert [re.split(r"[<>=\s]", r)[0] for r in cli] == ["rich"]
    assert location.startswith(str(ROOT / "clients" / "python" / "src")), "an editable install of this checkout"
    assert (user_venv / "bin" / "graphwire-client").exists()


def test_every_python_example_prints_what_its_comments_say(server: Server, user_venv: Path, tmp_path: Path) -> None:
    examples = python_blocks()
    assert len(examples) >= 11
    paths = []
    for index, block in enumerate(examples):
        assert "127.0.0.1:8000" in block, f"example {index} does not talk to `make run`"
        path = tmp_path / f"example_{index}.py"
        path.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"), encoding="utf-8")
        paths.append(path)

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["python", path.name], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=activated(user_venv)
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, paths))
    claims = 0
    for index, (block, done) in enumerate(zip(examples, results, strict=True)):
        assert done.returncode == 0, f"example {index}:\n{block}\n{done.stdout}{done.stderr}"
        lines = [line.rstrip() for line in done.stdout.splitlines()]
        for claim in output_claims(block):
            claims += 1
            assert any(pattern(claim).fullmatch(line) for line in lines), (
                f"example {index} promises a line `{claim}`; it printed:\n{done.stdout}"
            )
        if "def on_state" in block:  # what the text below that example promises, in order
            assert [line for line in lines if " -> " in line] == [
                "disconnected -> connecting",
                "connecting -> connected",
                "connected -> disconnected",
            ]
            reply = "You said: tokens please. This reply is streamed token by token by graphwire."
            assert lines.index(reply) < lines.index("connected -> disconnected"), "every token before result()"
    assert claims >= 15, "the output comments are found"


def test_the_readme_type_claims_hold_under_mypy(tmp_path: Path) -> None:
    files: list[Path] = []
    errors_expected: dict[tuple[str, int], str] = {}
    reveals_expected: dict[tuple[str, int], str] = {}
    for index, block in enumerate(python_blocks()):
        out: list[str] = []
        for line in block.splitlines():
            claim = MYPY_CLAIM.match(line)
            if claim:
                out.append(claim["indent"] + claim["code"])
                errors_expected[(f"example_{index}.py", len(out))] = claim["message"]
                continue
            out.append(line)
            typed = TYPE_CLAIM.match(line)
            if typed:
                out.append(f"{typed['indent']}reveal_type({typed['name']})")
                reveals_expected[(f"example_{index}.py", len(out))] = typed["type"]
        path = tmp_path / f"example_{index}.py"
        path.write_text("\n".join(out) + "\n", encoding="utf-8")
        files.append(path)
    assert len(errors_expected) >= 2
    assert len(reveals_expected) >= 2
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    errors: dict[tuple[str, int], list[str]] = {}
    reveals: dict[tuple[str, int], str] = {}
    for line in done.stdout.splitlines():
        match = MYPY_LINE.match(line)
        if match is None:
            continue
        where = (Path(match["path"]).name, int(match["line"]))
        if match["kind"] == "error":
            errors.setdefault(where, []).append(match["message"])
        elif match["message"].startswith("Revealed type is"):
            revealed = match["message"].removeprefix("Revealed type is ").strip('"')
            reveals[where] = re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", revealed)
    assert set(errors) == set(errors_expected), done.stdout
    for where, claim in errors_expected.items():
        assert any(pattern(claim).search(message) for message in errors[where]), (where, claim, errors[where])
    assert reveals == reveals_expected, done.stdout


# --- the CLI block ------------------------------------------------------------------------------


def run_id(text: str) -> str:
    match = re.search(r"\brun_[0-9a-f]+\b", text)
    assert match, text
    return match.group(0)


def json_lines(terminal: Terminal) -> list[dict[str, Any]]:
    return [json.loads(line) for line in terminal.raw.decode().split("\r\n") if line.strip()]


def test_every_cli_command_does_what_its_comment_says(server: Server, user_venv: Path) -> None:
    (cli,) = [b for b in blocks("sh") if "graphwire-client run" in b]
    env = activated(user_venv, GRAPHWIRE_URL=server.ws())
    started: list[str] = []  # ids of the runs the commands above started (for `watch`)

    def progress_bars(terminal: Terminal) -> None:
        lines = terminal.screen.lines
        for node in ("load", "transform", "aggregate"):
            assert any(re.fullmatch(rf"✓ {node} +━+ (\d+)/\1 done", line) for line in lines), terminal.screen.text
        assert '"mean": 2.0' in terminal.screen.text

    def tokens(terminal: Terminal) -> None:
        reply = "You said: hi. This reply is streamed token by token by graphwire."
        assert terminal.screen.lines.count(reply) == 1, terminal.screen.text

    def asks(terminal: Terminal) -> None:
        assert "> yes" in terminal.screen.lines
        assert '"approved": true' in terminal.screen.text

    def watches(terminal: Terminal) -> None:
        assert terminal.screen.lines[0].startswith("approval "), terminal.screen.text
        assert '"approved": true' in terminal.screen.text

    def one_json_event_per_line(terminal: Terminal) -> None:
        events = json_lines(terminal)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "workflow_completed"
        assert events[-1]["data"] == {"count": 1, "sum": 1.0, "mean": 1.0}

    def answer_from_stdin(terminal: Terminal) -> None:
        events = json_lines(terminal)
        assert [e["data"] for e in events if e["type"] == "input_answered"] == [{"value": "yes"}]
        assert events[-1]["data"] == {"approved": True, "answer": "yes"}

    checks: dict[str, Callable[[Terminal], None]] = {
        "a live progress bar per node": progress_bars,
        "tokens printed as they come": tokens,
        "asks at the terminal": asks,
        "follow a run started elsewhere": watches,
        "one JSON event per line": one_json_event_per_line,
        "the answer from stdin": answer_from_stdin,
    }
    lines = cli.strip().splitlines()
    assert sorted(line.rsplit("  # ", 1)[1] for line in lines) == sorted(checks)
    for line in lines:
        command, comment = line.rsplit("  # ", 1)
        if "watch run_" in command:
            command = command.replace(run_id(command), started[-1])
        terminal = Terminal(["bash", "-c", command], env=env)
        try:
            if "asks at the terminal" in comment:
                terminal.wait_for(r"\? Ship it\? \[yes/no\]\n>$")
                terminal.type("yes\r")
            code = terminal.finish()
        finally:
            terminal.kill()
        assert code == 0, f"{command}\n{terminal.screen.text}"
        if "--json" not in command:
            assert not SPINNER & set(terminal.screen.text), f"a spinner was left on the screen:\n{terminal.screen.text}"
            assert "running" not in terminal.screen.text, terminal.screen.text
            started.append(run_id(terminal.screen.lines[0]))
        checks[comment.strip()](terminal)
