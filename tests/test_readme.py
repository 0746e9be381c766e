"""The README's examples run as written: the plain-websockets client and the custom workflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness import ROOT, Server, connect, start_server, stop_server

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_websockets_example_runs_a_workflow(server: Server, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(BLOCKS[0].replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("workflow_completed")
    assert "'mean': 2.0" in last


async def test_readme_custom_workflow_registers_and_runs(tmp_path: Path) -> None:
    (tmp_path / "myflows.py").write_text(next(b for b in BLOCKS if "def register" in b))
    path = f"{tmp_path}:{ROOT / 'server' / 'tests'}"
    custom = start_server(tmp_path, "--workflows", "myflows:register", env={"PYTHONPATH": path})
    try:
        client = await connect(custom.ws())
        started = await client.start("count_words", {"text": "one two three"})
        before = await client.until(lambda m: m["type"] == "input_request")
        request = before[-1]
        assert request["options"] == ["yes", "no"]
        await client.answer(request, "yes")
        events = before + await client.run_events(started["workflow_id"])
        assert events[-1]["result"] == {"words": 3}
        assert any(e["type"] == "node_event" and e["event"] == "cache_hit" for e in events)
        await client.close()
    finally:
        stop_server(custom)
