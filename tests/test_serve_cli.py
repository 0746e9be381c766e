"""``graphwire serve`` as a user meets it: settings that say what they do, and one clear
line (never a traceback) for a variable it does not know or a value it cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from harness import start_server, stop_server


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "graphwire", "serve", "--port", "1", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"GRAPHWIRE_MAX_CONNECTION": "5"},
            "graphwire: unknown setting GRAPHWIRE_MAX_CONNECTION; did you mean GRAPHWIRE_MAX_CONNECTIONS?",
        ),
        (
            {"GRAPHWIRE_COMPRESION": "deflate"},
            "graphwire: unknown setting GRAPHWIRE_COMPRESION; did you mean GRAPHWIRE_COMPRESSION?",
        ),
        (
            {"GRAPHWIRE_PERMESSAGE_DEFLATE": "1"},
            "graphwire: unknown setting GRAPHWIRE_PERMESSAGE_DEFLATE; the README's Settings lists every setting",
        ),
    ],
)
def test_an_unknown_variable_stops_serve_with_one_line_naming_the_closest(env: dict[str, str], line: str) -> None:
    done = serve(env)
    assert done.returncode == 2
    assert done.stderr.strip() == line
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("env", "start"),
    [
        (
            {"GRAPHWIRE_MAX_CONNECTIONS": "abc"},
            "graphwire: GRAPHWIRE_MAX_CONNECTIONS='abc' is not valid: expected an integer",
        ),
        (
            {"GRAPHWIRE_PING_INTERVAL": "soon"},
            "graphwire: GRAPHWIRE_PING_INTERVAL='soon' is not valid: expected a number",
        ),
        (
            {"GRAPHWIRE_COMPRESSION": "gzip"},
            "graphwire: GRAPHWIRE_COMPRESSION='gzip' is not valid: expected one of 'none', 'deflate'",
        ),
        (
            {"GRAPHWIRE_WORKFLOWS": "myflows:register"},
            "graphwire: GRAPHWIRE_WORKFLOWS='myflows:register' is not valid: expected a JSON list",
        ),
    ],
)
def test_a_bad_value_gives_one_line_with_the_expected_form(env: dict[str, str], start: str) -> None:
    done = serve(env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(start), done.stderr
    assert "Traceback" not in done.stderr


def test_variables_of_the_other_tools_are_not_refused() -> None:
    # The client CLI's variables may well be exported in the shell that starts the gateway.
    done = serve({"GRAPHWIRE_URL": "ws://x", "GRAPHWIRE_TOKEN": "t", "GRAPHWIRE_MAX_CONNECTIONS": "abc"})
    assert "GRAPHWIRE_MAX_CONNECTIONS" in done.stderr  # it got past the unknown-variable check


def test_a_workflows_module_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    done = serve({}, "--workflows", "no_such_module:register")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "graphwire: cannot load workflows ['no_such_module:register']: "
        "ModuleNotFoundError: No module named 'no_such_module'"
    )


@pytest.mark.parametrize(("compression", "negotiated"), [("deflate", True), (None, False)])
async def test_compression_deflate_turns_on_permessage_deflate(
    tmp_path: Path, compression: str | None, negotiated: bool
) -> None:
    env = {"GRAPHWIRE_COMPRESSION": compression} if compression else {}
    server = start_server(tmp_path, env=env)
    try:
        # websockets offers permessage-deflate by default, as browsers do.
        async with websockets.connect(server.ws()) as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            assert ("permessage-deflate" in extensions) is negotiated
            await ws.send('{"type": "ping", "id": "p"}')
            frames = [await ws.recv(), await ws.recv()]
            assert '"type":"pong"' in frames[-1]
    finally:
        stop_server(server)
