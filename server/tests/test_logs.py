"""Structured logs (graphwire.logs): the JSON and text formatters, and where the context fields come from."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from graphwire import logs
from graphwire.graph import AsyncGraph, AsyncNode, Graph, Node, current_node, failed_node
from graphwire.transport import _UvicornLogFilter
from log_workflows import SAID, chatty

FIELDS = ["workflow_id", "workflow", "node_id", "client_id", "user"]


class Captured:
    """A logger whose records are formatted by ``formatter`` into ``text``."""

    def __init__(self, name: str, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.logger = logging.getLogger(name)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def records(self) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.lines()]
        assert all(isinstance(entry, dict) for entry in parsed)
        return parsed

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.propagate = True


@pytest.fixture
def as_json() -> Iterator[Captured]:
    captured = Captured("test.logs.json", logs.JsonFormatter())
    yield captured
    captured.close()


@pytest.fixture
def as_text() -> Iterator[Captured]:
    captured = Captured("test.logs.text", logs.TextFormatter())
    yield captured
    captured.close()


@pytest.fixture
def chatty_json() -> Iterator[Captured]:
    captured = Captured("log_workflows", logs.JsonFormatter())
    yield captured
    captured.close()


# -- the JSON line ------------------------------------------------------------------


def test_a_record_is_ts_level_logger_and_the_formatted_message(as_json: Captured) -> None:
    before = time.time()
    as_json.logger.info("%d runs in %s", 3, "flight")
    (entry,) = as_json.records()
    assert list(entry) == ["ts", "level", "logger", "message"]  # no context: no context fields
    assert entry["level"] == "INFO"
    assert entry["logger"] == "test.logs.json"
    assert entry["message"] == "3 runs in flight"
    assert entry["ts"].endswith("Z")
    ts = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
    assert ts.utcoffset() is not None
    assert ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert before - 0.01 <= ts.timestamp() <= time.time() + 0.01
    assert datetime.now(UTC) >= ts


def test_the_context_fields_follow_in_their_order(as_json: Captured) -> None:
    async def run() -> None:
        logs.enter_run("run_1", "boom", "alice")
        token = current_node.set("n1")
        try:
            as_json.logger.warning("inside")
        finally:
            current_node.reset(token)

    asyncio.run(run())
    (entry,) = as_json.records()
    assert list(entry) == ["ts", "level", "logger", "message", "workflow_id", "workflow", "node_id", "user"]
    assert (entry["workflow_id"], entry["workflow"], entry["node_id"], entry["user"]) == (
        "run_1",
        "boom",
        "n1",
        "alice",
    )


def test_exc_info_is_the_traceback_text(as_json: Captured) -> None:
    try:
        raise ValueError("kaput")
    except ValueError:
        as_json.logger.exception("it failed")
    (entry,) = as_json.records()
    assert entry["message"] == "it failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: kaput")
    assert list(entry)[-1] == "exc_info"


def test_a_message_with_newlines_quotes_and_odd_characters_stays_one_line(as_json: Captured) -> None:
    nasty = 'line one\nline "two"\r\n\ttab \\ backslash \x00 nul \u2028 sep \x85 nel é 😀 {"json": [1]}'
    as_json.logger.error("client said %s", nasty)
    as_json.logger.error("lone surrogate \udc80 from a client's string")
    try:
        raise RuntimeError("multi\nline")
    except RuntimeError:
        as_json.logger.exception("with a traceback")
    lines = as_json.lines()
    assert len(lines) == 3
    first, surrogate, traced = as_json.records()
    assert first["message"] == f"client said {nasty}"
    assert surrogate["message"] == "lone surrogate \udc80 from a client's string"
    assert traced["exc_info"].endswith("RuntimeError: multi\nline")


def test_arguments_that_do_not_fit_still_give_a_line() -> None:
    # Formatted directly: pytest's own capture handler would raise on this record first.
    record = logging.LogRecord("test.logs.json", logging.INFO, __file__, 1, "%d of %d", ("one",), None)
    entry = json.loads(logs.JsonFormatter().format(record))
    assert "'%d of %d'" in entry["message"]
    assert "do not fit" in entry["message"]


def test_extra_fields_win_over_the_context_and_none_leaves_a_field_out(as_json: Captured) -> None:
    async def run() -> None:
        logs.enter_connection("cl_a", "alice")
        as_json.logger.info("about another client", extra={"client_id": "cl_b", "user": None})
        as_json.logger.info("about this one")

    asyncio.run(run())
    other, this = as_json.records()
    assert (other["client_id"], "user" in other) == ("cl_b", False)
    assert (this["client_id"], this["user"]) == ("cl_a", "alice")


def test_scope_fields_name_the_scopes_connection_and_blank_the_rest() -> None:
    scope: dict[str, Any] = {}
    assert logs.scope_fields(scope) == dict.fromkeys(FIELDS)

    async def run() -> None:
        logs.enter_connection("cl_a", None, scope)

    asyncio.run(run())
    assert logs.scope_fields(scope) == {**dict.fromkeys(FIELDS), "client_id": "cl_a"}


def test_uvicorns_token_filter_works_on_json_lines(as_json: Captured) -> None:
    as_json.logger.addFilter(_UvicornLogFilter())
    try:
        as_json.logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/ws/workflow?batch=1&token=eyJsecret.x.y")
    finally:
        as_json.logger.filters.clear()
    (entry,) = as_json.records()
    assert entry["message"] == '127.0.0.1:5 - "WebSocket /ws/workflow?batch=1&token=***" [accepted]'


# -- the text line ------------------------------------------------------------------


def test_text_without_context_is_the_line_it_always_was(as_text: Captured) -> None:
    as_text.logger.warning("auth is %s", "off")
    (line,) = as_text.lines()
    date, clock, rest = line.split(" ", 2)
    datetime.strptime(f"{date} {clock}", "%Y-%m-%d %H:%M:%S,%f")
    assert rest == "WARNING test.logs.text: auth is off"


def test_text_appends_the_context_compactly(as_text: Captured) -> None:
    async def run() -> None:
        logs.enter_connection("cl_a", "Alice Smith")
        try:
            raise ValueError("kaput")
        except ValueError:
            as_text.logger.exception("internal error")

    asyncio.run(run())
    first, *traceback = as_text.lines()
    assert first.endswith('ERROR test.logs.text: internal error [client_id=cl_a user="Alice Smith"]')
    assert traceback[0] == "Traceback (most recent call last):"
    assert traceback[-1] == "ValueError: kaput"


# -- where the context comes from -------------------------------------------------------


async def test_a_run_started_from_a_connection_shares_no_fields_with_it(as_json: Captured) -> None:
    """A run's task is created inside a connection's; each task's fields stay its own."""
    started, logged = asyncio.Event(), asyncio.Event()

    async def run_task() -> None:
        as_json.logger.info("run, before enter_run")  # a copy of the starter's context
        logs.enter_run("run_1", "chat", "alice")
        started.set()
        await logged.wait()
        as_json.logger.info("run, later")

    async def connection() -> None:
        logs.enter_connection("cl_a", "alice")
        run = asyncio.create_task(run_task())
        await started.wait()
        as_json.logger.info("connection, while its run runs")
        logged.set()
        await run
        as_json.logger.info("connection, after its run")

    await asyncio.create_task(connection())
    as_json.logger.info("outside both")
    entries = {e["message"]: {k: v for k, v in e.items() if k in FIELDS} for e in as_json.records()}
    connection_fields = {"client_id": "cl_a", "user": "alice"}
    run_fields = {"workflow_id": "run_1", "workflow": "chat", "user": "alice"}
    assert entries == {
        "run, before enter_run": connection_fields,
        "connection, while its run runs": connection_fields,
        "run, later": run_fields,
        "connection, after its run": connection_fields,
        "outside both": {},
    }


async def test_each_node_logs_with_its_node_id_in_threads_and_batches_too(chatty_json: Captured) -> None:
    async def run() -> None:
        logs.enter_run("run_2", "chatty", None)
        await chatty().run_async({})
        chatty_json.logger.info("after the graph")

    await asyncio.create_task(run())
    entries = chatty_json.records()
    said = [(e["node_id"], e["workflow_id"]) for e in entries if e["message"].startswith(SAID)]
    assert said == [("sync_step", "run_2"), ("batch_step", "run_2"), ("batch_step", "run_2"), ("async_step", "run_2")]
    assert entries[-1]["message"] == "after the graph"
    assert "node_id" not in entries[-1]
    assert entries[-1]["workflow"] == "chatty"


class Fails(AsyncNode[None, None]):
    async def exec_async(self, prep_res: None) -> None:
        raise ValueError("kaput")


class Fine(AsyncNode[None, None]):
    async def exec_async(self, prep_res: None) -> None:
        return None


async def test_a_failure_is_logged_with_the_node_that_raised(as_json: Captured) -> None:
    """What RunManager logs when a run fails ("run ... failed") names the failing node."""
    first = Fine(node_id="fine")
    first >> Fails(node_id="fails")

    async def run() -> None:
        try:
            await AsyncGraph(AsyncGraph(first, node_id="inner"), node_id="outer").run_async({})
        except ValueError:
            as_json.logger.exception("run failed")
        as_json.logger.info("later, in the same task")

    await asyncio.create_task(run())
    failed, later = as_json.records()
    assert failed["node_id"] == "fails"  # the innermost node that raised, not the graphs around it
    assert "ValueError: kaput" in failed["exc_info"]
    assert "node_id" not in later


class SyncFails(Node[None, None]):
    def exec(self, prep_res: None) -> None:
        raise ValueError("kaput")


def test_a_sync_graph_that_fails_leaves_no_node_behind(as_json: Captured) -> None:
    with pytest.raises(ValueError, match="kaput") as raised:
        Graph(SyncFails(node_id="sync_fails")).run({})
    assert failed_node(raised.value) == "sync_fails"
    as_json.logger.error("failed", exc_info=raised.value)
    assert current_node.get() is None
    as_json.logger.info("later")
    failed, later = as_json.records()
    assert (failed.get("node_id"), later.get("node_id")) == ("sync_fails", None)


# -- configure and uvicorn ----------------------------------------------------------


def test_uvicorn_keeps_its_own_config_in_text_and_none_in_json() -> None:
    text = logs.uvicorn_log_config("text")
    assert text is not None
    assert set(text["loggers"]) >= {"uvicorn", "uvicorn.error", "uvicorn.access"}
    assert logs.uvicorn_log_config("json") is None


def test_in_json_mode_warnings_and_uncaught_errors_are_json_lines_too() -> None:
    script = textwrap.dedent(
        """
        import logging, threading, warnings
        from graphwire import logs
        logs.configure("json", "info")
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 1)
        warnings.warn("a warning\\nover two lines", UserWarning, stacklevel=1)
        thread = threading.Thread(target=lambda: 1 / 0, name="worker")
        thread.start()
        thread.join()
        raise SystemError("the end")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(e["logger"], e["level"]) for e in entries] == [
        ("uvicorn.error", "INFO"),
        ("py.warnings", "WARNING"),
        ("graphwire", "ERROR"),
        ("graphwire", "CRITICAL"),
    ]
    assert "a warning\nover two lines" in entries[1]["message"]
    assert entries[2]["message"] == "uncaught exception in thread worker"
    assert entries[2]["exc_info"].endswith("ZeroDivisionError: division by zero")
    assert entries[3]["exc_info"].endswith("SystemError: the end")
