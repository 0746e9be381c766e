"""``graphwire-client``: start or watch a run from a terminal or a script.

::

    graphwire-client run data_processing --params '{"data": [1, 2, 3]}'
    graphwire-client run approval --params '{"message": "Ship it?"}'   # asks at the terminal
    graphwire-client watch run_4f2a9c --json                          # one JSON event per line

Exit codes (``EXIT_*``), for scripts:

====  ==========================================================================
0     the run completed (``workflow_completed``)
1     the run failed (``workflow_failed``)
2     usage error, or the server refused the command (unknown workflow or run,
      invalid params)
3     the run was cancelled (``workflow_cancelled``)
4     the connection was lost for good (reconnecting gave up) or refused (4001…),
      or the token expired (4002)
130   interrupted (Ctrl-C); ``run`` cancels its run first
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
from typing import Any

from pydantic import ValidationError

from graphwire_client._backoff import ReconnectPolicy
from graphwire_client._cli_output import HumanOutput, JsonOutput, Output
from graphwire_client._client import DEFAULT_URL, GraphwireClient
from graphwire_client._generated.messages import ErrorCode, InputAnswered, InputClosed, InputRequest, PendingInput
from graphwire_client._generated.workflows import WORKFLOW_SCHEMAS
from graphwire_client._run import Run
from graphwire_client.exceptions import (
    ConnectionLost,
    ConnectionRejected,
    GraphwireError,
    InputRejected,
    ServerError,
    WorkflowCancelled,
    WorkflowFailed,
)

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_COMPLETED",
    "EXIT_CONNECTION_LOST",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "main",
]

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_CONNECTION_LOST = 4
EXIT_INTERRUPTED = 130

_EPILOG = """exit codes: 0 completed, 1 failed, 2 usage error or command refused by the server,
3 cancelled, 4 connection lost or refused, 130 interrupted (run cancels its run first).
When a node waits for input, the CLI asks on the terminal; with --json it reads one
answer per stdin line (a JSON object, or text sent as {"value": text})."""


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--url``, ``--token``, ``--json``, ``--max-attempts``: before or after the command.

    The command's copies default to ``SUPPRESS``, so one given before the command is not
    overwritten by the command's default.
    """

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url",
        default=default(os.environ.get("GRAPHWIRE_URL", DEFAULT_URL)),
        help=f"the gateway's /ws/workflow endpoint (default: $GRAPHWIRE_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", default=default(os.environ.get("GRAPHWIRE_TOKEN")), help="bearer token ($GRAPHWIRE_TOKEN)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="machine output: every run event as one JSON line"
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=default(8),
        metavar="N",
        help="give up (exit 4) after N failed connection attempts in a row (default 8)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphwire-client",
        description="Start or watch graphwire workflow runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _connection_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="start a workflow and follow it to its end", epilog=_EPILOG)
    run.add_argument("workflow", metavar="WORKFLOW", help=f"workflow name ({', '.join(sorted(WORKFLOW_SCHEMAS))}, …)")
    run.add_argument("--params", default="{}", metavar="JSON", help="the params, a JSON object (default {})")
    run.add_argument("--idempotency-key", default=None, metavar="KEY", help="repeat-safe start key")
    watch = sub.add_parser("watch", help="follow a run started elsewhere", epilog=_EPILOG)
    watch.add_argument("workflow_id", metavar="WORKFLOW_ID")
    watch.add_argument("--since-seq", type=int, default=0, metavar="N", help="replay events after seq N (default 0)")
    for command in (run, watch):
        _connection_options(command, defaults=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script: parse arguments, run, return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_attempts < 1:
        parser.error("--max-attempts must be at least 1")
    params: dict[str, Any] = {}
    if args.command == "run":
        try:
            params = _params(args.workflow, args.params)
        except ValueError as exc:
            parser.error(str(exc))  # exits with EXIT_USAGE
    try:
        output: Output = JsonOutput() if args.json else HumanOutput()
    except ImportError:
        print("graphwire-client: the human output needs rich: pip install 'graphwire-client[cli]'", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_main(args, params, output))
    except KeyboardInterrupt:
        output.stop()
        print("graphwire-client: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _params(workflow: str, text: str) -> dict[str, Any]:
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--params is not JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ValueError("--params must be a JSON object")
    schema = WORKFLOW_SCHEMAS.get(workflow)
    if schema is not None:  # a spec workflow: check before connecting
        try:
            schema.params.model_validate(params)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in ("params", *first["loc"]))
            raise ValueError(f"{where}: {first['msg']}") from None
    return params


async def _main(args: argparse.Namespace, params: dict[str, Any], output: Output) -> int:
    policy = ReconnectPolicy(max_attempts=args.max_attempts)
    try:
        async with GraphwireClient(args.url, args.token, reconnect=policy) as client:
            if args.command == "run":
                run = await client.workflows[args.workflow].start(params, idempotency_key=args.idempotency_key)
            else:
                run = await client.attach(args.workflow_id, args.since_seq)
            return await _follow(run, output, json_mode=args.json, cancel_on_interrupt=args.command == "run")
    except (ConnectionLost, ConnectionRejected) as exc:
        output.stop()
        print(f"graphwire-client: {exc}", file=sys.stderr)
        return EXIT_CONNECTION_LOST
    except ServerError as exc:
        output.stop()
        print(f"graphwire-client: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _follow(run: Run[dict[str, Any]], output: Output, *, json_mode: bool, cancel_on_interrupt: bool) -> int:
    output.start(run.workflow, run.workflow_id)
    prompter = _Prompter(run, output, json_mode)
    try:
        for request in run.pending_inputs:  # open before we attached (watch --since-seq)
            prompter.add(request)
        async for event in run:
            output.event(event)
            if isinstance(event, InputRequest):
                prompter.add(_pending(event))
            elif isinstance(event, InputAnswered):
                prompter.answered(event.request_id)
            elif isinstance(event, InputClosed):
                prompter.closed_unanswered(event)
    except asyncio.CancelledError:
        if cancel_on_interrupt:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run.cancel(), 2)
        raise
    finally:
        await prompter.close()
    try:
        result = await run.result()
    except WorkflowFailed as exc:
        output.outcome("failed", f"{exc.code.value}: {exc.error.message}")
        return EXIT_FAILED
    except WorkflowCancelled as exc:
        output.outcome("cancelled", exc.reason or "")
        return EXIT_CANCELLED
    output.outcome("completed", result)
    return EXIT_COMPLETED


def _pending(event: InputRequest) -> PendingInput:
    return PendingInput(
        request_id=event.request_id,
        node_id=event.node_id,
        prompt=event.prompt,
        options=event.options,
        expires_at=event.expires_at,
    )


class _StdinLines:
    """Lines of stdin as an asyncio queue, read by a daemon thread (never blocks exit)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._thread: threading.Thread | None = None

    async def get(self) -> str | None:
        """The next line without its newline; ``None`` at end of input."""
        if self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(target=self._read, args=(loop,), daemon=True, name="stdin")
            self._thread.start()
        return await self.queue.get()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(self.queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(self.queue.put_nowait, None)


class _Prompter:
    """Asks for each open input request in turn and sends the answer with ``run.respond``."""

    def __init__(self, run: Run[dict[str, Any]], output: Output, json_mode: bool) -> None:
        self.run = run
        self.output = output
        self.json_mode = json_mode
        self.lines = _StdinLines()
        self.queue: dict[str, PendingInput] = {}
        self.closed_ids: set[str] = set()
        self.current: str | None = None
        self.responding = False
        self.task: asyncio.Task[None] | None = None
        self.eof = False

    def add(self, request: PendingInput) -> None:
        if request.request_id in self.closed_ids or request.request_id in self.queue:
            return
        self.queue[request.request_id] = request
        self._kick()

    def answered(self, request_id: str, note: str | None = None) -> None:
        self.closed_ids.add(request_id)
        self.queue.pop(request_id, None)
        if self.current == request_id and self.task is not None and not self.responding:
            self.task.cancel()  # answered elsewhere (or closed) while we were asking: stop asking
            self.task = None
            self.current = None
            self.output.resume_after_prompt(typed=False)
            self.output.note(note or f"input request {request_id} was answered")
            self._kick()

    def closed_unanswered(self, event: InputClosed) -> None:
        """``input_closed``: stop asking for it, and say so unless another prompt is on screen."""
        request_id = event.request_id
        note = f"input request {request_id} of {event.node_id} was closed unanswered ({event.reason.value})"
        asking = self.task is not None and not self.task.done()
        if self.current == request_id and self.responding:
            self.closed_ids.add(request_id)
            return  # run.respond raises InputClosed, and _work notes it
        if self.current == request_id and asking:
            self.answered(request_id, note)  # stops asking, notes it
            return
        self.closed_ids.add(request_id)
        self.queue.pop(request_id, None)
        if self.current is not None and self.current != request_id and asking:
            return  # another request's prompt is on screen; this one was never asked
        self.output.note(note)

    def _kick(self) -> None:
        if (self.task is None or self.task.done()) and self.queue and not self.eof:
            self.task = asyncio.create_task(self._work())

    async def _work(self) -> None:
        while self.queue and not self.eof:
            request = next(iter(self.queue.values()))
            self.current = request.request_id
            self.output.prompt(request)
            line = await self.lines.get()
            if line is None:
                self.eof = True
                self.output.resume_after_prompt(typed=False)
                self.output.note("stdin closed: waiting for the input to be answered elsewhere")
                return
            self.responding = True
            try:
                await self.run.respond(request.request_id, _answer(line))
            except InputRejected as exc:
                if exc.code is ErrorCode.invalid_input:
                    self.output.note(exc.message)
                    continue  # ask again
                self.output.note(str(exc))
            except GraphwireError as exc:
                self.output.note(str(exc))
            finally:
                self.responding = False
            self.queue.pop(request.request_id, None)
            self.closed_ids.add(request.request_id)
            self.current = None
            self.output.resume_after_prompt(typed=True)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def _answer(line: str) -> dict[str, Any] | str:
    """A stdin line as an answer: a JSON object as is, anything else as ``{"value": line}``."""
    text = line.strip()
    if text.startswith("{"):
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            if isinstance(data, dict):
                return data
    return text


if __name__ == "__main__":
    raise SystemExit(main())
