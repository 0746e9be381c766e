"""Spec → the TypeScript SDK's generated files (``clients/js/src/generated/``).

``messages.ts`` holds one type per component schema, made by json-schema-to-typescript
from the spec's ``components.schemas``; ``operations.ts`` one typed method per
``receive`` operation and one union per multi-message ``send`` operation;
``workflows.ts`` the per-workflow params and results; ``schema.ts`` the schemas again as
data, for the SDK's optional run-time validation with ajv. Every file is formatted with
prettier. json-schema-to-typescript and prettier are pinned by ``clients/js``'s
``package-lock.json`` and run by ``node`` from its ``node_modules``, so the output is
byte-stable wherever ``npm ci`` ran (``make setup``).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphwire_codegen.generate import RenderContext

__all__ = ["NODE_MODULES_ENV", "TS_NAMES", "find_node_modules", "typescript_package"]

NODE_MODULES_ENV = "GRAPHWIRE_JS_NODE_MODULES"
"""Overrides where json-schema-to-typescript and prettier are looked up."""

TS_NAMES = {"Error": "ErrorMessage"}
"""Component schemas whose TypeScript name differs: `Error` is JavaScript's built-in."""

_SCHEMAS = "#/components/schemas/"
_PRETTIER = {"printWidth": 100, "trailingComma": "all", "singleQuote": False, "semi": True}

# Reads {definitions, options, constants, files} on stdin; writes {name: formatted source} on stdout.
# messages.ts is the compiled types followed by `constants`.
_NODE_SCRIPT = r"""
const { createRequire } = require("node:module");
const path = require("node:path");
const load = createRequire(path.join(process.argv[1], "noop.js"));
const { compile } = load("json-schema-to-typescript");
const prettier = load("prettier");
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", async () => {
  const job = JSON.parse(input);
  const parts = [];
  for (const [name, schema] of Object.entries(job.definitions)) {
    const options = { ...job.options, declareExternallyReferenced: false };
    parts.push(await compile({ ...schema, definitions: job.definitions }, name, options));
  }
  const types = parts.join("\n");
  const style = { ...job.options.style, parser: "typescript" };
  const files = { "messages.ts": await prettier.format(types + "\n" + job.constants, style) };
  for (const [name, source] of Object.entries(job.files)) {
    files[name] = await prettier.format(source, style);
  }
  process.stdout.write(JSON.stringify(files));
});
"""


@dataclass(frozen=True)
class _Command:
    type: str
    method: str
    message: str
    reply: str
    reply_type: str
    required: bool
    doc: list[str]


def find_node_modules(spec_path: Path) -> Path:
    """``clients/js/node_modules`` beside the spec, else in the repository of this package."""
    override = os.environ.get(NODE_MODULES_ENV)
    candidates = [Path(override)] if override else []
    candidates += [
        spec_path.resolve().parent.parent / "clients" / "js" / "node_modules",
        Path(__file__).resolve().parents[3] / "clients" / "js" / "node_modules",
    ]
    for candidate in candidates:
        if (candidate / "json-schema-to-typescript").is_dir() and (candidate / "prettier").is_dir():
            return candidate
    raise RuntimeError(
        "the TypeScript target needs clients/js/node_modules (json-schema-to-typescript, prettier): "
        f"run `make setup` (npm ci in clients/js) or set {NODE_MODULES_ENV}"
    )


def _ts_name(schema_name: str) -> str:
    return TS_NAMES.get(schema_name, schema_name)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _constant(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def _resolve(spec: dict[str, Any], ref: str) -> Any:
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _message(spec: dict[str, Any], ref: str) -> tuple[str, str, dict[str, Any]]:
    """A channel message ``$ref`` → (schema name, ``type`` const, payload schema)."""
    node = _resolve(spec, ref)
    while "$ref" in node:  # channel message → component message
        node = _resolve(spec, node["$ref"])
    payload_ref: str = node["payload"]["$ref"]
    schema = _resolve(spec, payload_ref)
    return payload_ref.removeprefix(_SCHEMAS), schema["properties"]["type"]["const"], schema


def _json_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """``components.schemas`` as draft-07 ``definitions``: refs rewritten, extensions dropped."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("x-"):
                continue
            if key == "$ref":
                out[key] = value.replace(_SCHEMAS, "#/definitions/")
            elif key == "discriminator" and isinstance(value, str):
                out[key] = {"propertyName": value}
                out.setdefault("type", "object")  # ajv's discriminator needs it
            else:
                out[key] = convert(value)
        return out

    definitions: dict[str, Any] = convert(copy.deepcopy(spec.get("components", {}).get("schemas", {})))
    return definitions


def _types_input(definitions: dict[str, Any]) -> dict[str, Any]:
    """json-schema-to-typescript's input: every definition, titled with its TypeScript name.

    The node script compiles each definition on its own (``declareExternallyReferenced``
    off), so each type is declared once, in spec order, and references use the titles.
    """
    titled = {name: {**schema, "title": _ts_name(name)} for name, schema in definitions.items()}
    for schema in titled.values():
        schema.pop("discriminator", None)
    return titled


def _channels(spec: dict[str, Any]) -> list[dict[str, Any]]:
    channels: dict[str, dict[str, Any]] = {}
    for op_id, op in spec.get("operations", {}).items():
        if op.get("action") != "receive" or not op.get("reply"):
            continue
        channel_ref: str = op["channel"]["$ref"]
        key = channel_ref.rsplit("/", 1)[-1]
        channel = _resolve(spec, channel_ref)
        entry = channels.setdefault(
            key,
            {
                "prefix": key[:1].upper() + key[1:],
                "const_prefix": _constant(key[:1].upper() + key[1:]),
                "address": channel["address"],
                "title": channel.get("title", key),
                "commands": [],
            },
        )
        if len(op["messages"]) != 1:
            raise ValueError(f"operation {op_id}: a command operation must carry exactly one message")
        name, type_, schema = _message(spec, op["messages"][0]["$ref"])
        reply_name, reply_type, _ = _message(spec, op["reply"]["messages"][0]["$ref"])
        paragraphs = [f"{op['title']}." if op.get("title") else "", op.get("summary", "")]
        paragraphs.append(f"Operation `{op_id}`: sends `{type_}`, answered by `{reply_type}`.")
        doc = [line for text in paragraphs if text for line in ("", *text.splitlines())][1:]
        required = [field for field in schema.get("required", []) if field not in ("type", "id")]
        entry["commands"].append(
            _Command(type_, _camel(type_), _ts_name(name), _ts_name(reply_name), reply_type, bool(required), doc)
        )
    return list(channels.values())


def _unions(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A union type per ``send`` operation that carries several messages (e.g. ``RunEvent``)."""
    unions = []
    for op_id, op in spec.get("operations", {}).items():
        if op.get("action") != "send" or len(op.get("messages", [])) < 2:
            continue
        name = op_id.removeprefix("send")
        members = [_message(spec, m["$ref"]) for m in op["messages"]]
        doc = op.get("title", name) + (f": {op['summary']}" if op.get("summary") else "")
        unions.append(
            {
                "name": name,
                "const": _constant(name) + "_TYPES",
                "doc": f"{doc} (operation `{op_id}`).",
                "members": [_ts_name(m[0]) for m in members],
                "types": [m[1] for m in members],
            }
        )
    return unions


def _enums(spec: dict[str, Any]) -> list[dict[str, Any]]:
    enums = []
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        if "enum" not in schema:
            continue
        varnames = schema.get("x-enum-varnames")
        enums.append(
            {
                "name": _ts_name(name),
                "const": _constant(name) + "_VALUES",
                "choices": schema["enum"],
                "varnames": list(zip(varnames, schema["enum"], strict=True)) if varnames else None,
            }
        )
    return enums


def _formats(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["format"]} if isinstance(node.get("format"), str) else set()
        for value in node.values():
            found |= _formats(value)
        return found
    if isinstance(node, list):
        return set().union(*(_formats(item) for item in node)) if node else set()
    return set()


def _run_node(node_modules: Path, job: dict[str, Any]) -> dict[str, str]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the TypeScript target needs `node` (Node.js 20) on PATH")
    done = subprocess.run(
        [node, "-e", _NODE_SCRIPT, str(node_modules)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    if done.returncode != 0:
        raise RuntimeError(f"json-schema-to-typescript failed:\n{done.stderr}")
    result: dict[str, str] = json.loads(done.stdout)
    return result


def typescript_package(ctx: RenderContext) -> dict[str, str]:
    """The files of ``clients/js/src/generated/``: relative name → content."""
    spec = ctx.spec
    definitions = _json_schema(spec)
    channels = _channels(spec)
    unions = _unions(spec)
    imports = sorted(
        {c.message for ch in channels for c in ch["commands"]}
        | {c.reply for ch in channels for c in ch["commands"]}
        | {m for u in unions for m in u["members"]}
    )
    server_schema = {"$ref": "#/definitions/ServerMessage", "definitions": definitions}
    sources = {
        "operations.ts": ctx.render_template(
            "ts_operations.ts.jinja", channels=channels, unions=unions, imports=imports
        ),
        "workflows.ts": ctx.render_template("ts_workflows.ts.jinja"),
        "schema.ts": ctx.render_template(
            "ts_schema.ts.jinja",
            schema_json=json.dumps(server_schema, indent=2, ensure_ascii=False),
            formats=sorted(_formats(definitions)),
        ),
        "index.ts": ctx.render_template("ts_index.ts.jinja", spec_name=ctx.spec_name),
    }
    options = {
        "bannerComment": "",
        "ignoreMinAndMaxItems": True,
        "additionalProperties": False,
        "strictIndexSignatures": False,
        "unknownAny": True,
        "format": True,
        "style": _PRETTIER,
    }
    job = {
        "definitions": _types_input(definitions),
        "options": options,
        "constants": ctx.render_template("ts_constants.ts.jinja", enums=_enums(spec)),
        "files": sources,
    }
    files = _run_node(find_node_modules(ctx.spec_path), job)
    return {name: ctx.header("//") + content for name, content in sorted(files.items())}
