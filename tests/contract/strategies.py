"""Hypothesis strategies for every client→server message, valid and invalid, from the spec.

The message schemas are wrapped in an OpenAPI 3.1 document, one ``POST`` operation per
message with the message schema as its JSON body, and schemathesis generates the bodies:
its positive mode gives messages that keep the schema, its negative mode messages that
break it (wrong types, missing required fields, unknown fields, broken bounds, bodies
that are not JSON objects at all). The document is built from ``components.schemas`` as
it is when the tests run, so a message added to the spec gets strategies with no change
here. hypothesis-jsonschema is not used: 0.23.1 breaks with hypothesis >= 6.170.10, and
schemathesis 4 no longer depends on it.

Whether a generated message really keeps the schema is decided by the spec's own
validator (``graphwire_codegen.schema_validator``), not by the generation mode, so a
generator quirk cannot turn into a false alarm.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jsonschema
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from contract.catalog import SPEC, ClientMessage, client_messages, resolve, workflow_schemas
from graphwire_codegen import schema_validator

__all__ = ["BUDGET", "MessageStrategies", "budgeted", "build_strategies", "openapi_document"]

# Valid workflow params are drawn from a copy of each params schema with tighter bounds
# (counts, sizes, delays): still valid against the real schema, but cheap enough to start
# hundreds of runs (the `ticker` alone allows ten million ticks of one megabyte).
BUDGET = {"maximum": 10, "maxItems": 20, "maxLength": 200}
_FLOORS = {"maximum": ("minimum", "exclusiveMinimum"), "maxItems": ("minItems",), "maxLength": ("minLength",)}


def _strip_non_openapi(node: Any) -> Any:
    """AsyncAPI's ``discriminator: type`` is a string; in OpenAPI it is an object. Drop it."""
    if isinstance(node, dict):
        return {k: _strip_non_openapi(v) for k, v in node.items() if k != "discriminator"}
    if isinstance(node, list):
        return [_strip_non_openapi(v) for v in node]
    return node


def budgeted(spec: dict[str, Any], schema: Any, depth: int = 0) -> Any:
    """``schema`` with refs inlined and every bound tightened to ``BUDGET``; a subset of it."""
    if depth > 32:
        raise ValueError("schema nests too deeply (a recursive $ref?)")
    if isinstance(schema, list):
        return [budgeted(spec, item, depth + 1) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return budgeted(spec, copy.deepcopy(resolve(spec, schema["$ref"])), depth + 1)
    out = {k: budgeted(spec, v, depth + 1) for k, v in schema.items()}
    for key, cap in BUDGET.items():
        if key in out and isinstance(out[key], int | float) and out[key] > cap:
            floors = [out[f] for f in _FLOORS[key] if isinstance(out.get(f), int | float)]
            out[key] = max([cap, *floors])
    return out


def _operation(schema_ref: str) -> dict[str, Any]:
    return {
        "post": {
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": schema_ref}}}},
            "responses": {"200": {"description": "the reply"}},
        }
    }


def _message_path(message: ClientMessage) -> str:
    return f"/messages/{quote(message.channel, safe='')}/{quote(message.type, safe='')}"


def _params_path(workflow: str) -> str:
    return f"/params/{quote(workflow, safe='')}"


def openapi_document(spec: dict[str, Any], messages: Iterable[ClientMessage]) -> dict[str, Any]:
    """The message schemas as request bodies of an OpenAPI 3.1 document (refs keep their targets)."""
    schemas = _strip_non_openapi(copy.deepcopy(spec["components"]["schemas"]))
    paths: dict[str, Any] = {}
    for message in messages:
        paths[_message_path(message)] = _operation(f"#/components/schemas/{message.schema}")
    for workflow, (params, _result) in workflow_schemas(spec).items():
        name = f"BudgetedParams_{len(paths)}"
        schemas[name] = _strip_non_openapi(budgeted(spec, spec["components"]["schemas"][params]))
        paths[_params_path(workflow)] = _operation(f"#/components/schemas/{name}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "graphwire client messages", "version": str(spec["info"]["version"])},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _bodies(operation: Any, mode: GenerationMode) -> st.SearchStrategy[Any]:
    bodies: st.SearchStrategy[Any] = operation.as_strategy(generation_mode=mode).map(lambda case: case.body)
    return bodies


@dataclass
class MessageStrategies:
    """Per message key (``channel:type``): strategies and the spec's validator."""

    messages: dict[str, ClientMessage]
    valid: dict[str, st.SearchStrategy[Any]]
    invalid: dict[str, st.SearchStrategy[Any]]
    validators: dict[str, jsonschema.Draft7Validator]
    params: dict[str, st.SearchStrategy[Any]]  # workflow name → valid (budgeted) params


def build_strategies(spec: dict[str, Any] = SPEC) -> MessageStrategies:
    messages = {m.key: m for m in client_messages(spec)}
    schema = schemathesis.openapi.from_dict(openapi_document(spec, messages.values()))
    valid: dict[str, st.SearchStrategy[Any]] = {}
    invalid: dict[str, st.SearchStrategy[Any]] = {}
    validators: dict[str, jsonschema.Draft7Validator] = {}
    for key, message in messages.items():
        operation = schema[_message_path(message)]["POST"]
        valid[key] = _bodies(operation, GenerationMode.POSITIVE)
        invalid[key] = _bodies(operation, GenerationMode.NEGATIVE)
        validators[key] = schema_validator(spec, message.schema)
    params = {
        workflow: _bodies(schema[_params_path(workflow)]["POST"], GenerationMode.POSITIVE)
        for workflow in workflow_schemas(spec)
    }
    return MessageStrategies(messages, valid, invalid, validators, params)
