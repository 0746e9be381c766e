"""Turning a generated message into the text frame that goes on the wire, and judging it as the spec would.

A body is a candidate for "valid" only if its text is strict RFC 8259 JSON as the server
reads it (no ``NaN``/``Infinity``, no lone surrogates, numbers within a double's range),
nests no deeper than ``NESTING_LIMIT``, and the channel's client union accepts it.
Anything else must be refused with an ``error``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema

__all__ = ["NESTING_LIMIT", "frame_text", "is_strict_json_value", "judge", "nesting", "strict_loads"]

_DOUBLE_MAX = 1.7976931348623157e308
# The gateway's limit on how deeply a frame may nest objects and arrays (the frame itself
# is level 1); deeper frames get `invalid_message`. The spec's schemas set no depth, so
# this is the one limit the contract tests take from docs/decisions.md, not from the spec.
NESTING_LIMIT = 128


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def is_strict_json_value(value: Any) -> bool:
    """No lone surrogates in strings or keys, every number finite and within a double's range."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > _DOUBLE_MAX:
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def nesting(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays (a scalar is 0, ``{}`` is 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def strict_loads(text: str) -> tuple[bool, Any]:
    """(parsed, value): ``parsed`` is False when the text is not strict JSON."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return False, None
    return is_strict_json_value(value), value


def frame_text(body: Any) -> str:
    """The text frame for a generated body: raw bytes as Latin-1 text, anything else as JSON."""
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("latin-1")
    text = json.dumps(body, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: send it escaped, as a JSON encoder would
        text = json.dumps(body)
    return text


def judge(text: str, union: jsonschema.Draft7Validator) -> tuple[bool, Any]:
    """(valid, value): is this frame a message of the channel's client union, per the spec?

    ``value`` is the parsed frame, or None when the text is not strict JSON.
    """
    parsed, value = strict_loads(text)
    if not parsed:
        return False, None
    return nesting(value) <= NESTING_LIMIT and union.is_valid(value), value
