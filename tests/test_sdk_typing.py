"""The SDK's typing, checked by ``mypy --strict`` the way a user's editor and CI would.

``sdk_typing/good_usage.py`` uses the public API as the README shows and must pass.
``sdk_typing/bad_usage.py`` gets params, results, answers and event handlers wrong; mypy
must report an error on each line marked ``# error`` and nowhere else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOOD = HERE / "sdk_typing" / "good_usage.py"
BAD = HERE / "sdk_typing" / "bad_usage.py"
ERROR_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def test_mypy_strict_accepts_typed_use_and_rejects_wrong_params() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", "pyproject.toml", str(GOOD), str(BAD)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    errors: dict[str, set[int]] = {GOOD.name: set(), BAD.name: set()}
    for line in done.stdout.splitlines():
        match = ERROR_LINE.match(line)
        if match:
            errors.setdefault(Path(match["path"]).name, set()).add(int(match["line"]))
    assert errors[GOOD.name] == set(), done.stdout
    marked = {n for n, text in enumerate(BAD.read_text(encoding="utf-8").splitlines(), start=1) if "  # error:" in text}
    assert len(marked) >= 10
    assert errors[BAD.name] == marked, done.stdout
    assert set(errors) == {GOOD.name, BAD.name}, done.stdout
    assert done.returncode == 1, done.stdout + done.stderr
