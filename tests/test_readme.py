"""The root README works as written: every example runs and prints what its comments say,
every command it gives is exercised somewhere, and every setting it lists is real.

Examples run as a user runs them: from a folder of their own, with the venv's ``bin`` on
``PATH`` (what ``source .venv/bin/activate`` does) and no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest

from graphwire.settings import Settings
from harness import ROOT, Server, connect, free_port

README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
JS_BLOCKS = re.findall(r"```js\n(.*?)```", README, re.S)
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README, re.S)
VENV_BIN = ROOT / ".venv" / "bin"

# Every command of the README's sh blocks, and where it is exercised.
COMMANDS = {
    "make run": "tests/test_seed_clients.py starts `make run PORT=...` and drives it",
    "make test": ".ci/run runs it on a clean clone",
    "graphwire serve --workflows myflows:register": "test_custom_workflow_from_the_users_folder",
    "GRAPHWIRE_REDIS_URL=redis://127.0.0.1:6379/0 graphwire serve --workers 4": (
        "tests/test_serve_workers.py starts `graphwire serve --workers 3` (2 for SIGTERM) on a real Redis"
    ),
    "make fuzz": "the contract suite of `make test`; test_make_fuzz_runs_the_contract_suite_with_the_long_profile",
    "make fuzz FUZZ_EXAMPLES=20000": "test_make_fuzz_runs_the_contract_suite_with_the_long_profile",
    'export GRAPHWIRE_AUTH_JWT_SECRET=$(python3 -c "import secrets; print(secrets.token_hex(32))")': (
        "test_the_auth_block_mints_a_token"
    ),
    'graphwire token --sub alice --scope "workflows:start" --ttl 3600': "test_the_auth_block_mints_a_token",
}


def user_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("GRAPHWIRE_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_every_command_is_exercised() -> None:
    commands = [line.split("#", 1)[0].strip() for block in SH_BLOCKS for line in block.splitlines() if line.strip()]
    assert sorted(set(commands)) == sorted(COMMANDS)


def test_websockets_example_prints_what_its_comments_say(server: Server, tmp_path: Path) -> None:
    block = PYTHON_BLOCKS[0]
    progress = re.search(r"# (progress .*)$", block, re.M)
    last = re.search(r"# last line: (.*)$", block, re.M)
    assert progress is not None
    assert last is not None
    script = tmp_path / "example.py"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, cwd=tmp_path, env=user_env()
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert progress[1] in lines
    assert lines[-1] == last[1]


def test_the_mailbox_example_prints_what_its_comments_say(server: Server, tmp_path: Path) -> None:
    block = next(b for b in PYTHON_BLOCKS if "ack_mail" in b)
    claims = re.findall(r"^\s+print\(.*\)  # (.*)$", block, re.M)
    assert len(claims) == 3
    script = tmp_path / "mailbox.py"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, cwd=tmp_path, env=user_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == claims


async def test_custom_workflow_from_the_users_folder(tmp_path: Path) -> None:
    (tmp_path / "myflows.py").write_text(next(b for b in PYTHON_BLOCKS if "def register" in b))
    port = free_port()
    command = next(line for b in SH_BLOCKS for line in b.splitlines() if "--workflows myflows" in line)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            # `exec`: the shell becomes the gateway, so terminate() below stops the gateway
            # itself rather than only the shell (which left the gateway running).
            f"exec {command} --port {port}",
            shell=True,
            cwd=tmp_path,
            env=user_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client = None
        deadline = time.monotonic() + 30
        while client is None:
            assert process.poll() is None, log.read_text()
            try:
                client = await connect(f"ws://127.0.0.1:{port}/ws/workflow")
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        started = await client.start("count_words", {"text": "one two three"})
        before = await client.until(lambda m: m["type"] == "input_request")
        request = before[-1]
        assert request["options"] == ["yes", "no"]
        await client.answer(request, "yes")
        events = before + await client.run_events(started["workflow_id"])
        assert events[-1]["data"] == {"words": 3}
        progress = next(e for e in events if e["type"] == "progress")
        assert progress["data"] == {"percent": 100.0, "current": 1, "total": 1}
        assert any(e["type"] == "node_event" and e["event"] == "cache_hit" for e in events)
        await client.close()
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "Traceback" not in log.read_text()


def test_python_sdk_example_prints_its_comment(server: Server, tmp_path: Path) -> None:
    section = README.split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.S)
    promised = re.search(r"print\(await run\.result\(\)\)\s+# (.*)$", block, re.M)
    assert promised is not None
    script = tmp_path / "sdk_example.py"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=user_env()
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == promised[1]


def test_typescript_sdk_example_prints_its_comment(server: Server) -> None:
    node = shutil.which("node")
    js = ROOT / "clients" / "js"
    if node is None or not (js / "dist" / "index.js").is_file():
        pytest.fail("the TypeScript SDK is not built: run `make setup` (needs Node.js 20 and npm)")
    (block,) = JS_BLOCKS
    promised = re.search(r"console\.log\(await run\.result\(\)\); // (.*)$", block, re.M)
    assert promised is not None
    folder = js / "build-test"
    folder.mkdir(exist_ok=True)
    script = folder / f"root-readme-{os.getpid()}.mjs"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"), encoding="utf-8")
    try:
        done = subprocess.run([node, str(script)], cwd=js, capture_output=True, text=True, timeout=60)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == promised[1]


def test_every_setting_is_listed_with_its_default() -> None:
    section = README.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(GRAPHWIRE_[A-Z_]+)` \| `([^`]*)` \|", section, re.M))
    expected = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        expected[f"GRAPHWIRE_{name.upper()}"] = str(default).replace("'", '"')
    assert rows == expected


def test_make_fuzz_runs_the_contract_suite_with_the_long_profile() -> None:
    # The suite itself runs in `make test` (bounded profile); a real long run takes minutes,
    # so here the target is checked to run that suite with the profile and the count asked.
    done = subprocess.run(
        ["make", "-n", "fuzz", "FUZZ_EXAMPLES=20000"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    command = " ".join(done.stdout.replace("\\\n", " ").split())
    assert "GRAPHWIRE_CONTRACT_PROFILE=fuzz" in command
    assert "GRAPHWIRE_CONTRACT_EXAMPLES=20000" in command
    assert "-m pytest tests/contract" in command


def test_the_auth_block_mints_a_token() -> None:
    block = next(b for b in SH_BLOCKS if "graphwire token" in b)
    done = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=60, env=user_env())
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    assert (claims["sub"], claims["scope"]) == ("alice", "workflows:start")
    assert 3500 < claims["exp"] - time.time() <= 3600
