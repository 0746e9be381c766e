"""Loading and checking ``spec/asyncapi.yaml``.

``lint_spec`` enforces two layers: the official AsyncAPI 3.0 JSON Schema (shipped by the
npm package ``@asyncapi/specs``) and graphwire's own rules for a message component
(closed payload, a ``type`` const, a description, examples that validate).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

__all__ = ["FrameChecker", "SpecError", "lint_spec", "load_spec", "schema_validator", "spec_sha256"]

SPEC_URI = "urn:graphwire:asyncapi"


class SpecError(Exception):
    """The spec cannot be read or breaks a rule."""


def spec_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_spec(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("asyncapi") != "3.0.0":
        raise SpecError(f"{path}: not an AsyncAPI 3.0.0 document")
    return data


def schema_validator(spec: dict[str, Any], name: str) -> jsonschema.Draft7Validator:
    """A JSON Schema validator for ``components.schemas[name]`` of the spec.

    Independent of the generated models, so tests can check frames against the spec
    itself (``schema_validator(spec, "ServerMessage")``).
    """
    return _payload_validator(spec, f"#/components/schemas/{name}")


class FrameChecker:
    """Checks frames against one of the spec's discriminated unions, fast.

    Validating against the ``oneOf`` itself tries every member on every frame (and every
    member again for each message inside a ``batch``); since each member has its own
    ``type`` const, picking the member by ``type`` and validating against it is the same
    check at a fraction of the cost. A ``batch`` frame is checked as its schema says: only
    ``type`` and ``messages``, at least one message, each a non-batch member.
    """

    def __init__(self, spec: dict[str, Any], union: str = "ServerMessage") -> None:
        self.validators: dict[str, jsonschema.Draft7Validator] = {}
        for member in spec["components"]["schemas"][union]["oneOf"]:
            schema = _resolve(spec, member["$ref"])
            self.validators[schema["properties"]["type"]["const"]] = _payload_validator(spec, member["$ref"])

    def errors(self, frame: Any) -> list[str]:
        """Why ``frame`` breaks the spec; empty when it is valid."""
        if not isinstance(frame, dict):
            return ["frame is not a JSON object"]
        kind = frame.get("type")
        validator = self.validators.get(kind) if isinstance(kind, str) else None
        if validator is None:
            return [f"no message of type {kind!r} in the union"]
        if kind != "batch":
            return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(frame)]
        messages = frame.get("messages")
        if set(frame) != {"type", "messages"} or not isinstance(messages, list) or not messages:
            return ["batch must have exactly `type` and a non-empty `messages` list"]
        out: list[str] = []
        for i, message in enumerate(messages):
            if isinstance(message, dict) and message.get("type") == "batch":
                out.append(f"messages/{i}: a batch inside a batch")
            else:
                out.extend(f"messages/{i}: {e}" for e in self.errors(message))
        return out


def _payload_validator(spec: dict[str, Any], ref: str) -> jsonschema.Draft7Validator:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT7)
    )
    return jsonschema.Draft7Validator({"$ref": SPEC_URI + ref}, registry=registry)


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def lint_spec(spec: dict[str, Any], official_schema: Path | None = None) -> list[str]:
    """Every problem found, as ``where: what`` lines; empty when the spec is good."""
    problems: list[str] = []
    if official_schema is not None:
        meta = json.loads(official_schema.read_text(encoding="utf-8"))
        for err in jsonschema.Draft7Validator(meta).iter_errors(spec):
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            problems.append(f"asyncapi-3.0.0 schema: {where}: {err.message[:200]}")
    messages: dict[str, Any] = spec.get("components", {}).get("messages", {})
    for name, message in messages.items():
        ref = message.get("payload", {}).get("$ref", "")
        if not ref.startswith("#/components/schemas/"):
            problems.append(f"message {name}: payload must $ref a component schema")
            continue
        schema = _resolve(spec, ref)
        if schema.get("additionalProperties") is not False:
            problems.append(f"message {name}: payload must set additionalProperties: false")
        if "const" not in schema.get("properties", {}).get("type", {}):
            problems.append(f"message {name}: payload needs a `type` const")
        if not schema.get("description"):
            problems.append(f"message {name}: payload needs a description")
        examples = message.get("examples") or []
        if not examples:
            problems.append(f"message {name}: needs at least one example")
        validator = _payload_validator(spec, ref)
        for example in examples:
            for err in validator.iter_errors(example.get("payload")):
                problems.append(f"message {name}: example {example.get('name')}: {err.message}")
    for wf, entry in spec.get("components", {}).get("x-graphwire-workflows", {}).items():
        for key in ("params", "result"):
            try:
                _resolve(spec, entry[key])
            except (KeyError, TypeError):
                problems.append(f"workflow {wf}: {key} must name a component schema")
    return problems
