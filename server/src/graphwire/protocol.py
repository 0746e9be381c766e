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
from pydantic import BaseModel, ValidationError

from graphwire._generated.messages import (
    ChatClientMessage,
    ClientMessage,
    Error,
    ErrorCode,
)

__all__ = [
    "CHAT_MESSAGES",
    "WORKFLOW_MESSAGES",
    "ProtocolError",
    "encode",
    "error_frame",
    "message_types",
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


@dataclass
class ProtocolError(Exception):
    """A frame the server refuses; becomes an ``error`` frame, never a closed socket."""

    code: ErrorCode
    message: str
    path: str | None = None
    reply_to: str | None = None
    workflow_id: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def encode(model: BaseModel) -> str:
    """The one serialisation of a frame; ``None`` fields are left out."""
    return model.model_dump_json(exclude_none=True)


def error_frame(err: ProtocolError) -> str:
    return encode(
        Error(
            type="error",
            code=err.code,
            message=err.message,
            path=err.path,
            reply_to=err.reply_to,
            workflow_id=err.workflow_id,
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
    kind = raw.get("type")
    model = table.get(kind) if isinstance(kind, str) else None
    if model is None:
        known = ", ".join(sorted(table))
        raise ProtocolError(
            ErrorCode.unknown_type, f"unknown message type {kind!r}; expected one of {known}", "type", reply_to
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, reply_to) from None
