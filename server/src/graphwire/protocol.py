"""Frames in and out: parse a client frame into a generated model, or a typed error.

Pure functions, no I/O. Parsing looks at ``type`` first and then validates against that
one message's model, so an error names the field of the message the client meant
instead of listing every member of the union.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic_core
from pydantic import BaseModel, ValidationError

from graphwire._generated.messages import (
    ChatClientMessage,
    ClientMessage,
    Error,
    ErrorCode,
)

__all__ = [
    "CHAT_MESSAGES",
    "MAX_NESTING",
    "WORKFLOW_MESSAGES",
    "ProtocolError",
    "chat_frame",
    "encode",
    "error_frame",
    "explicit_null",
    "frame_type",
    "message_types",
    "nests_deeper",
    "now",
    "parse_frame",
]


def message_types(union: Any) -> dict[str, type[BaseModel]]:
    """``type`` const → model, read from a generated discriminated union alias."""
    annotated = union.__value__  # Annotated[A | B | ..., Field(discriminator="type")]
    members = typing.get_args(typing.get_args(annotated)[0])
    table: dict[str, type[BaseModel]] = {}
    for model in members:
        (const,) = typing.get_args(model.model_fields["type"].annotation)
        table[const] = model
    return table


WORKFLOW_MESSAGES = message_types(ClientMessage)
CHAT_MESSAGES = message_types(ChatClientMessage)

# Deepest nesting of objects and arrays a frame may have (the frame itself is level 1).
# Well below every parser and serialiser on the way (orjson, pydantic), so whatever is
# accepted can be sent back inside an event; deeper frames get `invalid_message`.
MAX_NESTING = 128


@dataclass
class ProtocolError(Exception):
    """A frame the server refuses; becomes an ``error`` frame, never a closed socket."""

    code: ErrorCode
    message: str
    path: str | None = None
    reply_to: str | None = None
    workflow_id: str | None = None
    retry_after: float | None = None  # with rate_limited


def now() -> datetime:
    return datetime.now(UTC)


def encode(model: BaseModel) -> str:
    """The one serialisation of a frame; ``None`` fields are left out."""
    return model.model_dump_json(exclude_none=True)


_TYPE_HEAD = '{"type":"'


def frame_type(frame: str) -> str | None:
    """The ``type`` of a frame ``encode`` wrote, read from the front without parsing: every
    generated model declares ``type`` first. ``None`` for a frame that does not start so."""
    if frame.startswith(_TYPE_HEAD):
        return frame[len(_TYPE_HEAD) : frame.find('"', len(_TYPE_HEAD))]
    return None


# Fields that stay outside `data` on /ws/chat: they say what the frame is, not what it carries.
_CHAT_OUTSIDE = frozenset({"type", "data", "reply_to", "seq", "timestamp"})


def chat_frame(frame: str) -> str:
    """A frame in the seed's chat shape: every frame carries ``data``.

    Node events already do (a ``token``'s text, a ``progress`` dict); ``workflow_failed``
    gets its ``error``; every other frame gets its own fields, so a page that prints
    ``msg.type`` and ``JSON.stringify(msg.data)`` always shows something readable.
    """
    message = orjson.loads(frame)
    if "data" in message:
        return frame
    if message.get("type") == "workflow_failed":
        message["data"] = message["error"]
    else:
        message["data"] = {k: v for k, v in message.items() if k not in _CHAT_OUTSIDE}
    return orjson.dumps(message).decode()


def error_frame(err: ProtocolError) -> str:
    return encode(
        Error(
            type="error",
            code=err.code,
            message=err.message,
            path=err.path,
            reply_to=err.reply_to,
            workflow_id=err.workflow_id,
            retry_after=err.retry_after,
        )
    )


def _reply_to(raw: dict[str, Any]) -> str | None:
    value = raw.get("id")
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    return None


def validation_error(exc: ValidationError, reply_to: str | None, prefix: str = "") -> ProtocolError:
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    where = f"{path}: " if path else ""
    return ProtocolError(ErrorCode.invalid_message, f"{where}{first['msg']}", path or None, reply_to)


def parse_frame(text: str, table: dict[str, type[BaseModel]]) -> BaseModel:
    """One text frame → the generated model of its ``type``; raises ``ProtocolError``."""
    try:
        raw = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.invalid_json, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.not_an_object, "frame must be a JSON object")
    reply_to = _reply_to(raw)
    # Depth first: nothing below (a repr, pydantic) may meet a structure deep enough to recurse out.
    if text.count("{") + text.count("[") > MAX_NESTING and nests_deeper(raw, MAX_NESTING):
        raise ProtocolError(ErrorCode.invalid_message, f"frame nests deeper than {MAX_NESTING} levels", None, reply_to)
    kind = raw.get("type")
    model = table.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(table))
        named = repr(kind[:64]) if isinstance(kind, str) else f"a JSON {type(kind).__name__}"
        raise ProtocolError(
            ErrorCode.unknown_type, f"unknown message type {named}; expected one of {known}", "type", reply_to
        )
    try:
        message = _validate(model, text)
    except ValidationError as exc:
        raise validation_error(exc, reply_to) from None
    null = explicit_null(message)
    if null is not None:
        raise ProtocolError(ErrorCode.invalid_message, f"{null}: must be left out, not null", null, reply_to)
    return message


def nests_deeper(value: Any, limit: int) -> bool:
    """True when objects and arrays in ``value`` nest more than ``limit`` levels."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _validate(model: type[BaseModel], text: str) -> BaseModel:
    """Validate as the spec's JSON Schema reads the frame: ``"5"`` and ``true`` are not integers,
    ``5.0`` and ``2**64`` are. Strict JSON mode refuses the coercions; a float that equals
    an integer is let through by validating again with the integer in its place.
    """
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if not all(e["type"] == "int_type" and _integral(e["input"]) for e in errors):
            raise
        data = pydantic_core.from_json(text)
        for error in errors:
            if not _replace(data, error["loc"], int(error["input"])):
                raise
    return model.model_validate_json(pydantic_core.to_json(data), strict=True)


def _integral(value: object) -> bool:
    return isinstance(value, float) and value.is_integer()


def _replace(data: Any, loc: tuple[int | str, ...], value: int) -> bool:
    for part in loc[:-1]:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    if not loc or not isinstance(data, dict | list):
        return False
    data[loc[-1]] = value  # type: ignore[index]
    return True


def explicit_null(model: BaseModel, prefix: str = "") -> str | None:
    """Dotted path of the first field sent as ``null``: no field of a client message is nullable."""
    for name, info in type(model).model_fields.items():
        if name not in model.model_fields_set:
            continue
        value = getattr(model, name)
        path = f"{prefix}{info.alias or name}"
        if value is None:
            return path
        nested = [(path, value)] if isinstance(value, BaseModel) else []
        if isinstance(value, list):
            nested = [(f"{path}.{i}", item) for i, item in enumerate(value) if isinstance(item, BaseModel)]
        for where, item in nested:
            found = explicit_null(item, f"{where}.")
            if found is not None:
                return found
    return None
