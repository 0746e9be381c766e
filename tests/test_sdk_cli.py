"""The ``graphwire-client`` CLI as a script or a person uses it: a subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from graphwire_client import GraphwireClient
from graphwire_client.cli import (
    EXIT_CANCELLED,
    EXIT_COMPLETED,
    EXIT_CONNECTION_LOST,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
)
from harness import Server, free_port

CLI = [sys.executable, "-m", "graphwire_client"]
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}


async def spawn(server_url: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CLI,
        "--url",
        server_url,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
        # As at a terminal, whatever the test runner's own SIGINT disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


async def run_cli(server_url: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    process = await spawn(server_url, *args)
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def read_until(stream: asyncio.StreamReader, text: str) -> str:
    seen = ""
    while text not in seen:
        chunk = await asyncio.wait_for(stream.read(4096), 15)
        assert chunk, f"the CLI ended before printing {text!r}; it printed:\n{seen}"
        seen += chunk.decode()
    return seen


def test_the_console_script_is_installed() -> None:
    assert (Path(sys.executable).parent / "graphwire-client").exists()


async def test_run_approval_answers_at_the_prompt(server: Server) -> None:
    process = await spawn(server.ws(), "run", "approval", "--params", '{"message": "Ship v2?"}')
    assert process.stdin is not None
    assert process.stdout is not None
    shown = await read_until(process.stdout, "Ship v2? [yes/no]")
    assert "approval run_" in shown
    await asyncio.sleep(0.1)  # still waiting for us
    assert process.returncode is None
    process.stdin.write(b"maybe\n")  # not an option: asked again
    await read_until(process.stdout, "data.value must be one of")
    process.stdin.write(b"yes\n")
    await process.stdin.drain()
    rest, err = await asyncio.wait_for(process.communicate(), 15)
    output = shown + rest.decode()
    assert process.returncode == EXIT_COMPLETED, output + err.decode()
    assert "completed" in output
    assert '"approved": true' in output


async def test_run_prints_progress_tokens_and_result(server: Server) -> None:
    (code, out, err), (chat_code, chat_out, _) = await asyncio.gather(
        run_cli(server.ws(), "run", "data_processing", "--params", '{"data": [1, 2, 3, 4]}'),
        run_cli(server.ws(), "run", "chat", "--params", '{"message": "hello cli"}'),
    )
    assert code == EXIT_COMPLETED, out + err
    for node in ("load", "transform", "aggregate"):
        assert f"✓ {node}" in out
    assert '"mean": 2.5' in out
    assert chat_code == EXIT_COMPLETED
    assert "You said: hello cli. This reply is streamed token by token by graphwire.\n" in chat_out


async def test_json_output_is_one_event_per_line_and_watch_replays_it(server: Server) -> None:
    code, out, err = await run_cli(server.ws(), "--json", "run", "data_processing", "--params", '{"data": [5, 7]}')
    assert code == EXIT_COMPLETED, err
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "workflow_completed"
    assert events[-1]["result"] == {"count": 2, "sum": 12.0, "mean": 6.0}
    watched_code, watched, _ = await run_cli(server.ws(), "--json", "watch", events[0]["workflow_id"])
    assert watched_code == EXIT_COMPLETED
    replayed = [json.loads(line) for line in watched.splitlines()]
    assert replayed == events


async def test_json_mode_reads_answers_from_stdin(server: Server) -> None:
    code, out, err = await run_cli(
        server.ws(), "--json", "run", "approval", "--params", '{"message": "ok?"}', stdin='{"value": "no"}\n'
    )
    assert code == EXIT_COMPLETED, err
    assert json.loads(out.splitlines()[-1])["result"] == {"approved": False, "answer": "no"}


async def test_exit_codes(server: Server) -> None:
    url = server.ws()
    nowhere = f"ws://127.0.0.1:{free_port()}/ws/workflow"
    results = await asyncio.gather(
        run_cli(url, "run", "approval", "--params", '{"message": "late", "timeout": 0.1}'),
        run_cli(url, "run", "data_processing", "--params", "{not json"),
        run_cli(url, "run", "data_processing", "--params", '{"data": "x"}'),
        run_cli(url, "run", "no_such_workflow"),
        run_cli(url, "watch", "run_unknown"),
        run_cli(nowhere, "--max-attempts", "1", "run", "chat", "--params", '{"message": "x"}'),
    )
    codes = [code for code, _, _ in results]
    assert codes == [EXIT_FAILED, EXIT_USAGE, EXIT_USAGE, EXIT_USAGE, EXIT_USAGE, EXIT_CONNECTION_LOST], results
    assert "input_timeout" in results[0][1]
    assert "params.data" in results[2][2]
    assert "unknown_workflow" in results[3][2]
    assert "could not connect" in results[5][2]


async def test_watch_exits_3_when_the_run_is_cancelled(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        run = await client.workflows["tick"].start({"count": 1000, "delay_ms": 5})
        watcher = await spawn(server.ws(), "--json", "watch", run.workflow_id)
        assert watcher.stdout is not None
        await read_until(watcher.stdout, '"node_event"')
        await run.cancel()
        _, err = await asyncio.wait_for(watcher.communicate(), 15)
        assert watcher.returncode == EXIT_CANCELLED, err.decode()


async def test_ctrl_c_cancels_the_run_and_exits_130(server: Server) -> None:
    process = await spawn(server.ws(), "--json", "run", "tick", "--params", '{"count": 1000, "delay_ms": 5}')
    assert process.stdout is not None
    first = json.loads(await asyncio.wait_for(process.stdout.readline(), 15))
    await read_until(process.stdout, '"node_event"')
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == EXIT_INTERRUPTED, err.decode()
    async with GraphwireClient(server.ws()) as client:
        run = await client.attach(first["workflow_id"])
        await run.wait()
        assert run.status.value == "cancelled"
