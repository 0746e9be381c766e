"""The TypeScript SDK's own tests, run as ``clients/js/README.md`` tells a user to run them.

Node's test runner covers every built-in workflow, approvals, two clients on one run,
forced disconnects through a TCP proxy, the reconnect budget, batch negotiation, the
sans-I/O core, and the type test (a program with wrong params must fail ``tsc``). This
wrapper runs the README's command verbatim (``cd clients/js && npm test``, from the
repository root): ``scripts/with-server.mjs`` starts a ``graphwire serve`` on a free
port for it. It reports the failures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import ROOT

JS = ROOT / "clients" / "js"
README = (JS / "README.md").read_text(encoding="utf-8")


def readme_command(needle: str) -> str:
    """The one command of the README's ``sh`` blocks that contains ``needle``, without its comment."""
    lines = [line for block in re.findall(r"```sh\n(.*?)```", README, re.S) for line in block.splitlines()]
    commands = [line.split(" #", 1)[0].strip() for line in lines if needle in line.split(" #", 1)[0]]
    assert len(commands) == 1, (needle, lines)
    return commands[0]


NPM_TEST = readme_command("npm test")


@pytest.mark.timeout(300)
def test_typescript_sdk_as_the_readme_runs_it(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if shutil.which("npm") is None or bash is None or not (JS / "node_modules" / "typescript").is_dir():
        pytest.fail("the TypeScript SDK is not set up: run `make setup` (needs Node.js 20 and npm)")
    assert NPM_TEST == "cd clients/js && npm test"
    # As a user's shell has it: no gateway address handed over, so the tests start their own.
    env = {key: value for key, value in os.environ.items() if key != "GRAPHWIRE_TEST_HTTP"}
    done = subprocess.run(
        [bash, "-c", NPM_TEST],
        cwd=ROOT,
        env={**env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=290,
    )
    output = done.stdout + done.stderr
    (tmp_path / "npm-test.log").write_text(output, encoding="utf-8")
    failed = re.findall(r"^\s*not ok \d+ - (.+)$", output, flags=re.MULTILINE)
    assert done.returncode == 0, f"npm test failed ({', '.join(failed) or 'see output'}):\n{output[-12000:]}"
    # "against a `graphwire serve` they start on a free port"
    started = re.findall(r"^with-server: graphwire serve on http://127\.0\.0\.1:(\d+) ", output, flags=re.MULTILINE)
    assert len(started) == 1, output[-4000:]
    summary = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", output, flags=re.MULTILINE))
    assert summary.get("fail") == "0", output[-4000:]
    assert int(summary.get("pass", "0")) >= 30, f"fewer JS tests ran than expected: {summary}"
    # The gateway logs to the same stderr; `boom` raises on purpose, nothing else may.
    assert output.count("Traceback") <= output.count("ValueError: kaput"), output[-12000:]
