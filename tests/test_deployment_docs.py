"""docs/deployment.md stays true: its settings exist, its fault table names real tests, the README links it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from graphwire.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "deployment.md"


def section(title: str) -> str:
    text = PAGE.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_every_setting_named_is_a_real_one() -> None:
    named = set(re.findall(rf"`({PREFIX}[A-Z_]+)`", PAGE.read_text()))
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    assert named, "the page names the settings that matter"
    assert named <= known, named - known
    assert {"GRAPHWIRE_REDIS_URL", "GRAPHWIRE_REDIS_TIMEOUT", "GRAPHWIRE_WORKERS"} <= named


def test_each_fault_row_names_a_test_that_exists() -> None:
    rows = [line for line in section("What survives what").splitlines() if line.startswith("| ") and "---" not in line]
    named = [re.search(r"`((?:server/)?tests/[\w/]+\.py)::(\w+)`", row) for row in rows[1:]]
    found = [m for m in named if m is not None]
    assert len(found) >= 6, rows
    for match in found:
        path, name = match.groups()
        tree = ast.parse((ROOT / path).read_text())
        tests = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}
        assert name in tests, f"{path} has no {name}"


def test_the_nginx_example_serves_every_gateway_without_stickiness() -> None:
    (config,) = re.findall(r"```nginx\n(.*?)```", PAGE.read_text(), re.S)
    assert len(re.findall(r"^\s+server \S+:\d+;", config, re.M)) >= 2
    assert "ip_hash" not in config.replace("No ip_hash", "")
    assert "proxy_http_version 1.1;" in config
    assert "proxy_set_header Upgrade $http_upgrade;" in config
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", config).group(1))  # type: ignore[union-attr]
    assert timeout > Settings().ping_interval


def test_the_readme_links_the_page() -> None:
    assert "(docs/deployment.md)" in (ROOT / "README.md").read_text()
