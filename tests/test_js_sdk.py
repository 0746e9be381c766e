"""The TypeScript SDK's own tests (``npm test`` in ``clients/js``) against a real gateway.

Node's test runner covers every built-in workflow, approvals, two clients on one run,
forced disconnects through a TCP proxy, the reconnect budget, the sans-I/O core, and the
type test (a program with wrong params must fail ``tsc``). This wrapper starts the
gateway, hands its address over in ``GRAPHWIRE_TEST_HTTP`` and reports the failures.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import ROOT, Server, start_server, stop_server

JS = ROOT / "clients" / "js"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("js-gateway"))
    yield server
    stop_server(server)
    log = server.log()
    # The `boom` workflow raises on purpose; its traceback goes to the server log.
    assert log.count("Traceback") <= log.count("ValueError: kaput"), log


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None or not (JS / "node_modules" / "typescript").is_dir():
        pytest.fail("the TypeScript SDK is not set up: run `make setup` (needs Node.js 20 and npm)")
    return npm


@pytest.mark.timeout(240)
def test_typescript_sdk_against_a_real_gateway(gateway: Server, tmp_path: Path) -> None:
    env = {**os.environ, "GRAPHWIRE_TEST_HTTP": gateway.http, "NO_COLOR": "1"}
    done = subprocess.run(
        [_npm(), "test"],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
    )
    output = done.stdout + done.stderr
    (tmp_path / "npm-test.log").write_text(output, encoding="utf-8")
    failed = re.findall(r"^\s*not ok \d+ - (.+)$", output, flags=re.MULTILINE)
    assert done.returncode == 0, f"npm test failed ({', '.join(failed) or 'see output'}):\n{output[-12000:]}"
    summary = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", output, flags=re.MULTILINE))
    assert summary.get("fail") == "0", output[-4000:]
    assert int(summary.get("pass", "0")) >= 30, f"fewer JS tests ran than expected: {summary}"
