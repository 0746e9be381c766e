"""The message generators and the spec reading behind them, without a server.

They prove that every client→server message of the spec has a valid and an invalid
strategy, that what they generate is judged valid or invalid by the spec's own
validator, that the expected replies come from the spec's operations, and that a
message added to (a copy of) the spec gets strategies with no change to the tests.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.catalog import (
    SPEC,
    channel_server_types,
    client_messages,
    client_unions,
    refusal_codes,
    schema_of,
    workflow_schemas,
)
from contract.frames import frame_text, judge, nesting
from contract.strategies import build_strategies
from graphwire_codegen import schema_validator

STRATEGIES = build_strategies()
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_client_union_member_has_valid_and_invalid_strategies() -> None:
    unions = client_unions(SPEC)
    assert set(unions) == {"ClientMessage", "ChatClientMessage"}
    members = {(m.union, m.schema) for m in client_messages(SPEC)}
    assert members == {(union, schema) for union, schemas in unions.items() for schema in schemas}
    assert set(STRATEGIES.valid) == set(STRATEGIES.invalid) == {m.key for m in client_messages(SPEC)}


def test_unions_and_receive_operations_agree() -> None:
    """Each union's members are exactly the messages its channel's receive operations take."""
    for message in client_messages(SPEC):
        received = {
            schema_of(SPEC, ref["$ref"])
            for op in SPEC["operations"].values()
            if op["action"] == "receive" and op["channel"]["$ref"] == f"#/channels/{message.channel}"
            for ref in op["messages"]
        }
        assert set(client_unions(SPEC)[message.union]) == received


def test_expected_replies_come_from_the_operations() -> None:
    replies = {m.key: m.replies for m in client_messages(SPEC)}
    assert replies["workflow:start_workflow"] == {"workflow_started"}
    assert replies["workflow:subscribe"] == {"subscribed"}
    assert replies["workflow:ping"] == replies["chat:ping"] == {"pong"}
    assert replies["workflow:node_input"] == replies["workflow:cancel_workflow"] == {"ack"}
    assert replies["chat:message"] == {"workflow_started"}
    assert {"unknown_run", "unknown_workflow", "input_already_answered"} <= refusal_codes()
    assert not {"invalid_message", "invalid_json", "internal_error", "node_error"} & refusal_codes()
    assert "input_request" not in channel_server_types(SPEC, "chat")
    assert {"batch", "error", "workflow_started", "token"} <= channel_server_types(SPEC, "chat")


@FEW
@given(data=st.data())
def test_valid_strategies_keep_the_schema(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(STRATEGIES.valid)))
    body = data.draw(STRATEGIES.valid[key])
    assert STRATEGIES.validators[key].is_valid(body), body
    assert body["type"] == STRATEGIES.messages[key].type


@FEW
@given(data=st.data())
def test_invalid_strategies_break_the_schema(data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(STRATEGIES.invalid)))
    body = data.draw(STRATEGIES.invalid[key])
    valid, _ = judge(frame_text(body), STRATEGIES.validators[key])
    assert not valid, body


@FEW
@given(data=st.data())
def test_budgeted_params_keep_the_workflow_schema(data: st.DataObject) -> None:
    workflow = data.draw(st.sampled_from(sorted(STRATEGIES.params)))
    params = data.draw(STRATEGIES.params[workflow])
    params_schema, _result = workflow_schemas(SPEC)[workflow]
    assert schema_validator(SPEC, params_schema).is_valid(params), params


def _with_hello(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the spec with one more client message, ``hello {name}``, answered by ``pong``."""
    spec = copy.deepcopy(spec)
    components = spec["components"]
    components["schemas"]["Hello"] = {
        "type": "object",
        "additionalProperties": False,
        "description": "Say hello.",
        "required": ["type", "name"],
        "properties": {
            "type": {"type": "string", "const": "hello"},
            "id": {"$ref": "#/components/schemas/CommandId"},
            "name": {"type": "string", "minLength": 1, "maxLength": 10},
        },
    }
    components["messages"]["Hello"] = {"name": "hello", "payload": {"$ref": "#/components/schemas/Hello"}}
    spec["channels"]["workflow"]["messages"]["hello"] = {"$ref": "#/components/messages/Hello"}
    spec["operations"]["receiveHello"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/workflow"},
        "messages": [{"$ref": "#/channels/workflow/messages/hello"}],
        "reply": {
            "channel": {"$ref": "#/channels/workflow"},
            "messages": [{"$ref": "#/channels/workflow/messages/pong"}],
        },
    }
    components["schemas"]["ClientMessage"]["oneOf"].append({"$ref": "#/components/schemas/Hello"})
    return spec


def test_a_message_added_to_the_spec_is_fuzzed_with_no_test_change() -> None:
    spec = _with_hello(SPEC)
    strategies = build_strategies(spec)
    assert "workflow:hello" in strategies.valid
    assert "workflow:hello" in strategies.invalid
    assert strategies.messages["workflow:hello"].replies == {"pong"}
    hello = schema_validator(spec, "Hello")
    valid: list[Any] = []
    invalid: list[Any] = []

    @FEW
    @given(good=strategies.valid["workflow:hello"], bad=strategies.invalid["workflow:hello"])
    def draw(good: Any, bad: Any) -> None:
        valid.append(good)
        invalid.append(bad)

    draw()
    assert valid
    assert all(hello.is_valid(body) and body["type"] == "hello" for body in valid)
    assert not any(judge(frame_text(body), hello)[0] for body in invalid)


def test_frame_judging() -> None:
    ping = schema_validator(SPEC, "Ping")
    assert judge('{"type": "ping", "id": "a"}', ping) == (True, {"type": "ping", "id": "a"})
    assert judge('{"type": "ping", "id": null}', ping)[0] is False
    assert judge('{"type": "ping", "n": NaN}', ping) == (False, None)  # not RFC 8259 JSON
    assert judge('{"type": "ping", "id": "\\ud800"}', ping) == (False, None)  # a lone surrogate
    assert judge('{"type": "ping", "n": 1e400}', ping) == (False, None)  # beyond a double
    assert judge('{"type": "ping"}', ping) == (True, {"type": "ping"})
    assert nesting({"a": [[{}]]}) == 4
    assert nesting(5) == 0
