"""Every Python example of the SDK's READMEs runs, as written, against a real server.

That is each ``python`` block of ``clients/python/README.md`` and of the root README's
"Python SDK" section.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from harness import ROOT, Server

README = ROOT / "clients" / "python" / "README.md"
ROOT_README = ROOT / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
RUNNER = """
import runpy, sys
for path in sys.argv[1:]:
    print(f"--- {path}", flush=True)
    runpy.run_path(path, run_name="__main__")
"""


def test_every_readme_example_runs(server: Server, tmp_path: Path) -> None:
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 9
    section = ROOT_README.read_text(encoding="utf-8").split("\n## Python SDK\n", 1)[1].split("\n## ", 1)[0]
    blocks += BLOCK.findall(section)
    paths = []
    for index, block in enumerate(blocks):
        assert "127.0.0.1:8000" in block, f"example {index} does not talk to `make run`"
        path = tmp_path / f"example_{index}.py"
        path.write_text(block.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}"), encoding="utf-8")
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *paths], capture_output=True, text=True, timeout=100, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("--- ") == len(blocks)
    assert "approved=True answer='yes'" in done.stdout
    assert "cancelled:" in done.stdout
    assert "connecting -> connected" in done.stdout
