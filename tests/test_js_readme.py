"""Every ``js`` example of ``clients/js/README.md`` runs, as written, against a real gateway.

Each block is a whole ES module; it runs from inside ``clients/js`` so that
``import … from "@graphwire/client"`` resolves to the built package, as for a user.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from harness import ROOT, Server, start_server, stop_server

JS = ROOT / "clients" / "js"
BLOCKS = re.findall(r"```js\n(.*?)```", (JS / "README.md").read_text(encoding="utf-8"), re.S)
# What each example prints, keyed by a line of the example.
EXPECTED = {
    'startWorkflow("data_processing"': [r"transform 100%", r"\{ count: 3, sum: 6, mean: 2 \}"],
    'startWorkflow("chat"': [r"reply: You said: Hello!\. This reply is streamed token by token by graphwire\."],
    'startWorkflow("approval"': [r"Deploy v2\? \[ 'yes', 'no' \]", r"refused: input_already_answered"],
    "reconnect: {": [r"disconnected -> connecting", r"connecting -> connected", r"pong at \d{4}-"],
    'joinGroup("admins")': [r"alert: Maintenance at 18:00"],
    "client.commands.startWorkflow": [r"workflow_started 1 run_", r"join_group"],
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("js-readme-gateway"))
    yield server
    stop_server(server)
    assert "Traceback" not in server.log(), server.log()


def test_every_example_is_checked() -> None:
    assert len(BLOCKS) == len(EXPECTED)
    for key in EXPECTED:
        assert sum(key in block for block in BLOCKS) == 1, key


@pytest.mark.parametrize("key", list(EXPECTED))
def test_readme_example_runs(gateway: Server, key: str) -> None:
    node = shutil.which("node")
    if node is None or not (JS / "dist" / "index.js").is_file():
        pytest.fail("the TypeScript SDK is not built: run `make setup` (needs Node.js 20 and npm)")
    block = next(block for block in BLOCKS if key in block)
    folder = JS / "build-test"
    folder.mkdir(exist_ok=True)
    script = folder / f"readme-{abs(hash(key))}.mjs"
    script.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{gateway.port}"), encoding="utf-8")
    try:
        done = subprocess.run([node, str(script)], cwd=JS, capture_output=True, text=True, timeout=30)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stdout + done.stderr
    for pattern in EXPECTED[key]:
        assert re.search(pattern, done.stdout), f"{pattern!r} not in:\n{done.stdout}"
