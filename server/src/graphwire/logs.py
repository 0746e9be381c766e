"""The gateway's logs: readable lines (the default) or one JSON object per line.

``GRAPHWIRE_LOG_FORMAT=json`` makes every record of ``graphwire serve``, uvicorn's
included, one line of JSON::

    {"ts": "2025-06-01T12:00:00.123Z", "level": "ERROR", "logger": "graphwire.runs",
     "message": "run run_ab12 failed", "workflow_id": "run_ab12", "workflow": "boom",
     "node_id": "boom", "user": "alice", "exc_info": "Traceback (most recent call last): ..."}

``ts`` is ISO-8601 in UTC, ``message`` the formatted message, ``exc_info`` the traceback
when there is one; the context fields (`CONTEXT_FIELDS`) are there when they apply and
absent otherwise. Text lines are the ones ``logging.basicConfig`` gave before, with the
context fields, when there are any, appended as ``[workflow_id=... node_id=...]``.

Where the fields come from, in this order:

- a record's own attributes (``log.warning(..., extra={"client_id": ...})``), for code
  that logs about something other than the task it runs in: a slow consumer found while
  a run's event was being fanned out, the watchdog thread naming a blocked node. A field
  given as ``None`` there is absent, whatever the context says;
- the context of the log call (`contextvars`): `enter_connection` at the top of a
  socket's serve loop, `enter_run` at the top of a run's task. Both set the variable in
  their own task, so neither leaks into the other: a run's task is created while a
  connection's frame is handled and so starts with a copy of that connection's fields,
  which `enter_run` replaces;
- ``node_id``: the engine's `graphwire.graph.current_node`, set while a node runs (worker
  threads of sync nodes copy it); for a record with an exception logged once its node has
  ended (the run's "failed" line), the node that raised it (`graphwire.graph.failed_node`).

No token or secret is in any field: ``user`` is a token's ``sub``, never the token.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import orjson
from uvicorn.config import LOGGING_CONFIG

from graphwire.graph import current_node, failed_node

__all__ = [
    "CONTEXT_FIELDS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "configure",
    "enter_connection",
    "enter_run",
    "record_fields",
    "scope_fields",
    "uvicorn_log_config",
]

LogFormat = Literal["text", "json"]

CONTEXT_FIELDS = ("workflow_id", "workflow", "node_id", "client_id", "user")
"""The context fields of a record, in the order they are written."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text lines, as ``graphwire serve`` has always written them."""

# Where enter_connection leaves the connection's fields for code that runs outside its
# task but knows its ASGI scope (graphwire.transport's protocol).
SCOPE_KEY = "graphwire.log_fields"

_NONE: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("graphwire_log_context", default=_NONE)


def _fields(**fields: str | None) -> Mapping[str, str]:
    return MappingProxyType({name: value for name, value in fields.items() if value is not None})


def enter_connection(client_id: str, user: str | None, scope: MutableMapping[str, Any] | None = None) -> None:
    """From here on, records of this task (the socket's) carry ``client_id`` and ``user``.

    ``user`` is the token's ``sub`` (``None`` with auth off). With ``scope``, the fields are
    also kept in the socket's ASGI scope, for `scope_fields`.
    """
    fields = _fields(client_id=client_id, user=user)
    _context.set(fields)
    if scope is not None:
        scope[SCOPE_KEY] = fields


def enter_run(workflow_id: str, workflow: str, user: str | None) -> None:
    """From here on, records of this task (the run's) carry the run's fields instead of the starter's.

    ``user`` is the run's owner (``None`` with auth off); the starting connection's
    ``client_id`` is dropped: the run outlives it and may be taken over by another gateway.
    """
    _context.set(_fields(workflow_id=workflow_id, workflow=workflow, user=user))


def scope_fields(scope: Mapping[str, object]) -> dict[str, str | None]:
    """``extra=`` for a record about the socket of ``scope``, logged from any task.

    Every context field is given, ``None`` where the connection has none, so that the
    task that happens to be logging (a run fanning out) lends it none of its own.
    """
    fields = scope.get(SCOPE_KEY)
    if not isinstance(fields, Mapping):
        fields = _NONE
    return {name: fields.get(name) for name in CONTEXT_FIELDS}


def record_fields(record: logging.LogRecord) -> dict[str, str]:
    """The context fields of ``record``: its own attributes first, then the log call's context.

    Read while the record is formatted, which for the gateway's handlers (synchronous
    stream handlers) is inside the log call, in its task or thread.
    """
    given = record.__dict__
    context = _context.get()
    found: dict[str, str] = {}
    for name in CONTEXT_FIELDS:
        if name in given:
            value = given[name]
        elif name == "node_id":
            value = current_node.get()
            if value is None and record.exc_info and record.exc_info[1] is not None:
                value = failed_node(record.exc_info[1])  # logged once the node that raised has ended
        else:
            value = context.get(name)
        if value is not None:
            found[name] = str(value)
    return found


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a call whose arguments do not fit its message still gets its line
        return f"{record.msg!r} % {record.args!r} (the arguments do not fit the message)"


_BREAKS = re.compile("[\x85\u2028\u2029]")
_LINE_BREAKS = {ord(c): f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"}


def _timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        try:
            line = orjson.dumps(entry).decode()
        except TypeError:  # orjson refuses lone surrogates (from a client's string); json escapes them
            return json.dumps(entry, ensure_ascii=True)
        # Valid JSON unescaped, but line breaks to str.splitlines and to JavaScript's parsers.
        return line.translate(_LINE_BREAKS) if _BREAKS.search(line) else line


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, then the context fields, if any, as `` [name=value ...]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record_fields(record)
        if not fields:
            return line
        return line + " [" + " ".join(f"{name}={_text_value(value)}" for name, value in fields.items()) + "]"


def _text_value(value: str) -> str:
    # Quoted only when it would not read as one word (a `sub` may be a name with spaces).
    if value and not any(c.isspace() or c in '"[]=' for c in value):
        return value
    return json.dumps(value)


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any] | None:
    """What ``uvicorn.Config(log_config=...)`` gets.

    Text: uvicorn's own configuration, as before. JSON: none, so that uvicorn's loggers
    have no handler of their own and their records reach the root's (`configure`).
    """
    return copy.deepcopy(LOGGING_CONFIG) if log_format == "text" else None


def configure(log_format: LogFormat, level: str) -> None:
    """The root logger of ``graphwire serve``: one handler on stderr in ``log_format``.

    In JSON mode what would otherwise reach stderr as free text goes through it too:
    warnings, and exceptions nothing caught (in the main thread or another one).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread


def _uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("graphwire").critical("uncaught exception", exc_info=(kind, value, traceback))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback) if args.exc_value is not None else None
    logging.getLogger("graphwire").error("uncaught exception in thread %s", name, exc_info=exc_info)
