"""The ``graphwire-client`` CLI as a script or a person uses it: a subprocess against a real server."""

from __future__ import annotations

import asyncio
import codecs
import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
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
    assert events[-1]["data"] == {"count": 2, "sum": 12.0, "mean": 6.0}
    watched_code, watched, _ = await run_cli(server.ws(), "--json", "watch", events[0]["workflow_id"])
    assert watched_code == EXIT_COMPLETED
    replayed = [json.loads(line) for line in watched.splitlines()]
    assert replayed == events


async def test_json_mode_reads_answers_from_stdin(server: Server) -> None:
    code, out, err = await run_cli(
        server.ws(), "--json", "run", "approval", "--params", '{"message": "ok?"}', stdin='{"value": "no"}\n'
    )
    assert code == EXIT_COMPLETED, err
    assert json.loads(out.splitlines()[-1])["data"] == {"approved": False, "answer": "no"}


async def test_run_and_watch_print_input_closed(server: Server) -> None:
    process = await spawn(server.ws(), "--json", "run", "second_chance", "--params", '{"timeout": 0.2}')
    assert process.stdin is not None
    assert process.stdout is not None
    # Nobody types for the first question: it closes, and the CLI asks the next one.
    shown = await read_until(process.stdout, '"node_id":"again"')
    process.stdin.write(b'{"value": "ok"}\n')
    await process.stdin.drain()
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == EXIT_COMPLETED, err.decode()
    events = [json.loads(line) for line in (shown + out.decode()).splitlines()]
    (closed,) = [e for e in events if e["type"] == "input_closed"]
    assert (closed["node_id"], closed["reason"]) == ("first", "timeout")
    note = f"input request {closed['request_id']} of first was closed unanswered (timeout)"
    assert note in err.decode()
    assert events[-1]["type"] == "workflow_completed"
    watched_code, watched, _ = await run_cli(server.ws(), "watch", events[0]["workflow_id"])
    assert watched_code == EXIT_COMPLETED
    assert note in watched


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
    assert "was closed unanswered (timeout)" in results[0][1]
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


# --- at a real terminal ---------------------------------------------------------------------

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")
SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


class Screen:
    """What a terminal shows for a byte stream: printable text, CR/LF/BS, cursor moves, erases.

    Enough of a VT100 for rich's output; anything else fails the test instead of being
    guessed at. Rows are kept for the whole session (scrollback included).
    """

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.row = 0
        self.col = 0
        self.pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def feed(self, data: bytes) -> None:
        text = self.pending + self._decoder.decode(data)
        self.pending = ""
        index = 0
        while index < len(text):
            char = text[index]
            if char == "\x1b":
                match = CSI.match(text, index) or OSC.match(text, index)
                if match is None:
                    if len(text) - index < 32:  # a sequence cut between two reads
                        self.pending = text[index:]
                        return
                    raise AssertionError(f"unknown escape sequence {text[index : index + 8]!r}")
                if match.re is CSI:
                    self._csi(match.group(1), match.group(2))
                index = match.end()
                continue
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self.row += 1
                while len(self.rows) <= self.row:
                    self.rows.append([])
            elif char == "\b":
                self.col = max(0, self.col - 1)
            elif char in "\x07\x00":
                pass
            elif char < " ":
                raise AssertionError(f"unexpected control character {char!r}")
            else:
                self._put(char)
            index += 1

    def _put(self, char: str) -> None:
        if self.col >= self.columns:  # auto-wrap
            self.col = 0
            self.feed(b"\n")
        line = self.rows[self.row]
        line.extend(" " * (self.col + 1 - len(line)))
        line[self.col] = char
        self.col += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?") or final == "m":
            return  # cursor visibility, modes, colours: nothing on the screen
        numbers = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        line = self.rows[self.row]
        if final == "A":
            self.row = max(0, self.row - max(n, 1))
        elif final == "B":
            self.row += max(n, 1)
            while len(self.rows) <= self.row:
                self.rows.append([])
        elif final == "C":
            self.col += max(n, 1)
        elif final == "D":
            self.col = max(0, self.col - max(n, 1))
        elif final == "G":
            self.col = max(n, 1) - 1
        elif final == "K" and n == 0:
            del line[self.col :]
        elif final == "K" and n == 1:
            line[: self.col + 1] = " " * min(len(line), self.col + 1)
        elif final == "K" and n == 2:
            line.clear()
        elif final == "J" and n == 0:
            del line[self.col :]
            del self.rows[self.row + 1 :]
        else:
            raise AssertionError(f"unsupported CSI {params!r}{final}")

    @property
    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    @property
    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n")


def test_the_screen_emulator_interprets_what_rich_sends() -> None:
    screen = Screen(20)
    screen.feed("a ⠋ run\r\n\x1b[1mb\x1b[0m\r\n\x1b[?25l\r\x1b[2K\x1b[1A\x1b[2Kc\x1b]8;;x\x1b\\".encode())
    assert screen.lines == ["a ⠋ run", "c", ""]
    screen.feed(b"abcdef\x1b[3D\x1b[Kxy\x1b[")
    screen.feed(b"1Gz")
    assert screen.lines[1] == "zabcxy"


class Terminal:
    """A program on a pseudo-terminal, as a person would run it: ``COLUMNS`` x ``rows``, echo on."""

    def __init__(self, argv: list[str], columns: int = 100, rows: int = 50, env: dict[str, str] | None = None) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        environment = {k: v for k, v in (env or os.environ).items() if k not in ("NO_COLOR", "COLUMNS", "LINES")}
        environment["TERM"] = "xterm-256color"
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=environment, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.screen = Screen(columns)
        self.raw = b""

    def _read(self, timeout: float) -> bool:
        """Feed what the program printed within ``timeout``; False once it closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            return False
        self.raw += data
        self.screen.feed(data)
        return bool(data)

    def wait_for(self, pattern: str, timeout: float = 15) -> None:
        """Until the screen's text matches the regex ``pattern``."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.screen.text):
            assert time.monotonic() < deadline, f"{pattern!r} never showed; the screen:\n{self.screen.text}"
            assert self._read(0.05) or re.search(pattern, self.screen.text), f"ended; screen:\n{self.screen.text}"

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while self._read(0.05):
            assert time.monotonic() < deadline, f"the program did not end; the screen:\n{self.screen.text}"
        code = self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_at_a_terminal_the_prompt_replaces_the_spinner_and_the_answers_stay(server: Server) -> None:
    script = str(Path(sys.executable).parent / "graphwire-client")
    terminal = Terminal([script, "run", "approval", "--params", '{"message":"Ship?"}', "--url", server.ws()])
    try:
        terminal.wait_for(r"\? Ship\? \[yes/no\]\n>$")  # (lines are shown without trailing spaces)
        terminal.type("maybe\r")  # not an option: told so, and asked again
        terminal.wait_for(r"> maybe\n.*must be one of.*\n\? Ship\? \[yes/no\]\n>$")
        terminal.type("yes\r")
        code = terminal.finish()
    finally:
        terminal.kill()
    lines = terminal.screen.lines
    assert code == EXIT_COMPLETED, terminal.screen.text
    assert lines[0].startswith("approval run_")
    assert lines[1:6] == ["? Ship? [yes/no]", "> maybe", lines[3], "? Ship? [yes/no]", "> yes"], terminal.screen.text
    assert "must be one of" in lines[3]
    after = "\n".join(lines[6:])
    assert re.search(r"✓ approve .* done", after), terminal.screen.text
    assert after.index("✓ approve") < after.index("completed") < after.index('"approved": true')
    assert not SPINNER & set(terminal.screen.text), "a frozen spinner stayed on the screen"
    assert "running" not in terminal.screen.text, "a stale progress line stayed on the screen"
