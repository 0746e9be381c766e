"""What the spec says a client may send, where, and what it gets back.

Everything here is read from ``spec/asyncapi.yaml`` when the tests run; nothing is
listed by hand per message. The client→server messages are the members of the spec's
client unions (``ClientMessage``, ``ChatClientMessage``: every ``oneOf`` whose members
are all received by some ``receive`` operation); a union's channel is the one channel
on which all its members are received; each message's expected reply types are the
``reply.messages`` of its ``receive`` operation on that channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphwire_codegen import load_spec

__all__ = [
    "BUG_CODES",
    "RUN_OUTCOME_CODES",
    "SCHEMA_CODES",
    "SPEC",
    "SPEC_PATH",
    "ClientMessage",
    "SpecProblem",
    "channel_server_types",
    "client_messages",
    "client_unions",
    "error_codes",
    "refusal_codes",
    "resolve",
    "schema_of",
    "type_const",
    "workflow_schemas",
]

SPEC_PATH = Path(__file__).resolve().parents[2] / "spec" / "asyncapi.yaml"
SPEC: dict[str, Any] = load_spec(SPEC_PATH)

# How `ErrorCode` splits (its description says which is which). Codes that answer a frame
# breaking the message schema, before any command runs:
SCHEMA_CODES = frozenset(
    {"invalid_json", "binary_not_supported", "not_an_object", "unknown_type", "invalid_message", "message_too_large"}
)
# Codes that only appear inside `workflow_failed.error`, never as a command's answer:
RUN_OUTCOME_CODES = frozenset({"input_timeout", "node_error"})
# A bug on the server; never an acceptable answer to anything the fuzzers send.
BUG_CODES = frozenset({"internal_error"})


class SpecProblem(Exception):
    """The spec cannot be read the way the contract tests need (a spec bug, not a server bug)."""


def resolve(spec: dict[str, Any], ref: str) -> Any:
    """Follow one local ``$ref`` (``#/components/schemas/Ping``), then any chain of ``$ref``s."""
    if not ref.startswith("#/"):
        raise SpecProblem(f"only local refs are supported: {ref}")
    node: Any = spec
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    while isinstance(node, dict) and set(node) == {"$ref"}:
        node = resolve(spec, node["$ref"])
    return node


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def schema_of(spec: dict[str, Any], message_ref: str) -> str:
    """``components.schemas`` name of a message's payload (``#/channels/workflow/messages/ping`` → ``Ping``)."""
    message = resolve(spec, message_ref)
    payload = message.get("payload", {})
    if "$ref" not in payload or not payload["$ref"].startswith("#/components/schemas/"):
        raise SpecProblem(f"{message_ref}: the payload must be a $ref to components.schemas")
    return _ref_name(payload["$ref"])


def type_const(spec: dict[str, Any], schema_name: str) -> str:
    try:
        const = spec["components"]["schemas"][schema_name]["properties"]["type"]["const"]
    except KeyError:
        raise SpecProblem(f"components.schemas.{schema_name} has no `type` const") from None
    return str(const)


@dataclass(frozen=True)
class ClientMessage:
    """One client→server message on one channel."""

    channel: str  # the key under `channels`, e.g. "workflow"
    address: str  # the socket path, e.g. "/ws/workflow"
    type: str  # the `type` const
    schema: str  # the name under components.schemas
    union: str  # the client union it belongs to, e.g. "ClientMessage"
    replies: frozenset[str]  # `type`s of the receive operation's reply messages

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.type}"


def _received(spec: dict[str, Any]) -> dict[str, dict[str, frozenset[str]]]:
    """schema name → channel → reply types, from every ``receive`` operation."""
    received: dict[str, dict[str, frozenset[str]]] = {}
    for name, operation in spec.get("operations", {}).items():
        if operation.get("action") != "receive":
            continue
        channel = _ref_name(operation["channel"]["$ref"])
        replies = frozenset(
            type_const(spec, schema_of(spec, reply["$ref"])) for reply in operation.get("reply", {}).get("messages", [])
        )
        for message in operation.get("messages", []):
            by_channel = received.setdefault(schema_of(spec, message["$ref"]), {})
            if channel in by_channel and by_channel[channel] != replies:
                raise SpecProblem(f"operations.{name}: a second receive operation with other replies")
            by_channel[channel] = replies
    return received


def client_unions(spec: dict[str, Any]) -> dict[str, list[str]]:
    """Every ``oneOf`` schema whose members are all received somewhere: name → member schema names."""
    received = _received(spec)
    unions: dict[str, list[str]] = {}
    for name, schema in spec["components"]["schemas"].items():
        members = [_ref_name(m["$ref"]) for m in schema.get("oneOf", []) if "$ref" in m]
        if members and all(member in received for member in members):
            unions[name] = members
    return unions


def client_messages(spec: dict[str, Any] = SPEC) -> list[ClientMessage]:
    """Every client→server message of every channel, with its spec'd reply types."""
    received = _received(spec)
    messages: list[ClientMessage] = []
    for union, members in client_unions(spec).items():
        channels = set.intersection(*(set(received[member]) for member in members))
        if len(channels) != 1:
            raise SpecProblem(f"components.schemas.{union}: its members share no single channel ({channels})")
        (channel,) = channels
        address = spec["channels"][channel]["address"]
        for member in members:
            replies = received[member][channel]
            messages.append(ClientMessage(channel, address, type_const(spec, member), member, union, replies))
    if not messages:
        raise SpecProblem("no client unions found")
    return messages


def channel_server_types(spec: dict[str, Any], channel: str) -> frozenset[str]:
    """``type``s the server may send on a channel: its ``send`` operations and its replies."""
    types: set[str] = set()
    for operation in spec.get("operations", {}).values():
        if _ref_name(operation["channel"]["$ref"]) != channel:
            continue
        if operation.get("action") == "send":
            refs = [m["$ref"] for m in operation.get("messages", [])]
        else:
            refs = [m["$ref"] for m in operation.get("reply", {}).get("messages", [])]
        types.update(type_const(spec, schema_of(spec, ref)) for ref in refs)
    return frozenset(types)


def error_codes(spec: dict[str, Any] = SPEC) -> frozenset[str]:
    return frozenset(str(code) for code in spec["components"]["schemas"]["ErrorCode"]["enum"])


def refusal_codes(spec: dict[str, Any] = SPEC) -> frozenset[str]:
    """Codes that may refuse a command that keeps the schema: every code not set aside above.

    A code added to the spec later counts as a refusal until it is placed elsewhere.
    """
    return error_codes(spec) - SCHEMA_CODES - RUN_OUTCOME_CODES - BUG_CODES


def workflow_schemas(spec: dict[str, Any] = SPEC) -> dict[str, tuple[str, str]]:
    """``x-graphwire-workflows``: workflow name → (params schema name, result schema name)."""
    table: dict[str, tuple[str, str]] = {}
    for name, entry in spec["components"].get("x-graphwire-workflows", {}).items():
        for ref in (entry["params"], entry["result"]):
            if not ref.startswith("#/components/schemas/"):
                raise SpecProblem(f"x-graphwire-workflows.{name}: {ref} is not a components.schemas ref")
        table[name] = (_ref_name(entry["params"]), _ref_name(entry["result"]))
    return table
