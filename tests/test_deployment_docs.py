"""docs/deployment.md and deploy/ stay true: settings exist, the fault table names real tests, the nginx
blocks are the files, the systemd unit outlasts the gateway's shutdown, the README links the page."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from graphwire.settings import PREFIX, Settings, load_settings
from graphwire.supervisor import KILL_MARGIN

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "deployment.md"
DEPLOY = ROOT / "deploy"


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


def test_the_page_shows_the_nginx_files_as_they_are() -> None:
    blocks = dict(re.findall(r"^`(deploy/[\w.-]+)`:\n\n```nginx\n(.*?)^```$", PAGE.read_text(), re.S | re.M))
    assert sorted(blocks) == ["deploy/nginx-main.conf", "deploy/nginx.conf"]
    assert len(re.findall(r"^```nginx$", PAGE.read_text(), re.M)) == len(blocks), "no other nginx block"
    for path, block in blocks.items():
        assert block == (ROOT / path).read_text(), f"docs/deployment.md's copy of {path} differs from the file"


def test_the_nginx_config_serves_every_gateway_without_stickiness() -> None:
    config = (DEPLOY / "nginx.conf").read_text()
    directives = "\n".join(line.split("#", 1)[0] for line in config.splitlines())
    assert len(re.findall(r"^\s+server \S+:\d+;", directives, re.M)) >= 2
    assert "ip_hash" not in directives
    assert "sticky" not in directives
    assert "proxy_http_version 1.1;" in directives
    assert "proxy_set_header Upgrade $http_upgrade;" in directives
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        timeout = int(re.search(rf"{name} (\d+)s;", directives).group(1))  # type: ignore[union-attr]
        assert timeout > Settings().ping_interval, name
    assert re.search(r"^worker_shutdown_timeout \d+s;$", (DEPLOY / "nginx-main.conf").read_text(), re.M)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd's keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def seconds(value: str) -> float:
    """A systemd time span as this unit writes it: ``30s``, ``2min``, ``30``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value.strip())
    assert match, f"not a time span this test reads: {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_the_systemd_unit_stops_the_gateway_gracefully() -> None:
    service = unit("graphwire.service")["Service"]
    grace = Settings.model_fields["shutdown_grace"].default
    assert isinstance(grace, float)
    # The process ends within its grace plus about 3 s (the supervisor kills a worker
    # KILL_MARGIN after it); systemd's SIGKILL must come later.
    assert seconds(service["TimeoutStopSec"]) > grace + max(3.0, KILL_MARGIN)
    assert service["KillSignal"] == "SIGTERM"
    # The supervisor forwards SIGTERM to its workers itself.
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"] == "/etc/graphwire/env"
    assert service["User"] not in ("", "root")
    assert int(service["LimitNOFILE"]) >= 65536
    assert re.fullmatch(r"\S+/graphwire serve", service["ExecStart"])


def env_file() -> dict[str, str]:
    """``deploy/graphwire.env``'s assignments, with one level of quotes removed as systemd does."""
    values = {}
    for line in (DEPLOY / "graphwire.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value[1:-1] if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"" else value
    return values


def test_the_example_env_file_holds_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = env_file()
    assert values, "the example sets something"
    for key in [k for k in os.environ if k.startswith(PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # an unknown GRAPHWIRE_* variable, or a bad value, raises here
    assert settings.workers > 1
    assert settings.redis_url is not None
    assert settings.origins == ["https://gateway.example"]
    grace = settings.shutdown_grace
    assert seconds(unit("graphwire.service")["Service"]["TimeoutStopSec"]) > grace + 3


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (optional)")
    text = (DEPLOY / "graphwire.service").read_text()
    # verify checks that ExecStart exists: point it at this checkout's graphwire.
    executable = Path(sys.executable).with_name("graphwire")
    assert executable.exists(), executable
    local = tmp_path / "graphwire.service"
    local.write_text(re.sub(r"^ExecStart=\S+/graphwire ", f"ExecStart={executable} ", text, flags=re.M))
    done = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60, check=False)
    # It exits 0 on unknown keys and bad values, but names them.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


def test_the_readme_links_the_page() -> None:
    assert "(docs/deployment.md)" in (ROOT / "README.md").read_text()
