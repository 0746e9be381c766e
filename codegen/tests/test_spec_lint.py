"""``lint_spec``: the official AsyncAPI 3.0.0 schema plus graphwire's message rules.

The official schema comes from the npm package ``@asyncapi/specs`` that ``make setup``
installs under ``tools/``. Without it these tests fail (they never skip): a lint that
quietly checks less is worse than a red test.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from graphwire_codegen import FrameChecker, schema_validator
from graphwire_codegen.spec import lint_spec, load_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_SPEC = REPO_ROOT / "spec" / "asyncapi.yaml"
MINI_SPEC = Path(__file__).resolve().parent / "fixtures" / "mini" / "asyncapi.yaml"
OFFICIAL_SCHEMA = REPO_ROOT / "tools/node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json"


def official_schema() -> Path:
    if not OFFICIAL_SCHEMA.is_file():
        pytest.fail(
            f"official AsyncAPI schema not found at {OFFICIAL_SCHEMA}; run `make setup` "
            "(it installs @asyncapi/specs under tools/)",
            pytrace=False,
        )
    return OFFICIAL_SCHEMA


@pytest.fixture(scope="module")
def mini() -> dict[str, Any]:
    return load_spec(MINI_SPEC)


@pytest.fixture
def spec(mini: dict[str, Any]) -> dict[str, Any]:
    """A copy of the fixture spec that a test may break."""
    return copy.deepcopy(mini)


def _ping_schema(spec: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"]["Ping"]
    return schema


def test_real_spec_is_clean() -> None:
    assert lint_spec(load_spec(REAL_SPEC), official_schema()) == []


def test_fixture_spec_is_clean(mini: dict[str, Any]) -> None:
    assert lint_spec(mini, official_schema()) == []


def test_open_payload_is_caught(spec: dict[str, Any]) -> None:
    del _ping_schema(spec)["additionalProperties"]
    assert lint_spec(spec) == ["message Ping: payload must set additionalProperties: false"]


def test_additional_properties_true_is_caught(spec: dict[str, Any]) -> None:
    _ping_schema(spec)["additionalProperties"] = True
    assert lint_spec(spec) == ["message Ping: payload must set additionalProperties: false"]


def test_missing_type_const_is_caught(spec: dict[str, Any]) -> None:
    del _ping_schema(spec)["properties"]["type"]["const"]
    assert lint_spec(spec) == ["message Ping: payload needs a `type` const"]


def test_invalid_example_is_caught(spec: dict[str, Any]) -> None:
    example = spec["components"]["messages"]["Ping"]["examples"][0]
    example["payload"]["extra"] = 1
    assert lint_spec(spec) == [
        "message Ping: example ping: Additional properties are not allowed ('extra' was unexpected)"
    ]


def test_example_with_a_wrong_type_is_caught(spec: dict[str, Any]) -> None:
    spec["components"]["messages"]["Ping"]["examples"][0]["payload"]["type"] = "pong"
    problems = lint_spec(spec)
    assert len(problems) == 1
    assert problems[0].startswith("message Ping: example ping: ")
    assert "'ping' was expected" in problems[0]


def test_workflow_naming_a_missing_schema_is_caught(spec: dict[str, Any]) -> None:
    spec["components"]["x-graphwire-workflows"]["echo"]["result"] = "#/components/schemas/Missing"
    assert lint_spec(spec) == ["workflow echo: result must name a component schema"]


def test_official_schema_catches_a_v2_action(spec: dict[str, Any]) -> None:
    spec["operations"]["receivePing"]["action"] = "publish"  # AsyncAPI 2 wording
    assert lint_spec(spec) == []  # graphwire's own rules do not look at operations
    problems = lint_spec(spec, official_schema())
    assert problems
    assert all(p.startswith("asyncapi-3.0.0 schema: operations/receivePing") for p in problems)


def test_frame_checker_agrees_with_the_union() -> None:
    """``FrameChecker`` picks the member by ``type``; it must accept and refuse as the oneOf does."""

    spec = load_spec(REPO_ROOT / "spec" / "asyncapi.yaml")
    checker = FrameChecker(spec, "ServerMessage")
    union = schema_validator(spec, "ServerMessage")
    pong = {"type": "pong", "timestamp": "2026-11-25T12:00:00Z"}
    frames: list[Any] = [
        pong,
        {"type": "pong"},
        {**pong, "extra": 1},
        {"type": "batch", "messages": [pong, pong]},
        {"type": "batch", "messages": []},
        {"type": "batch", "messages": [{"type": "batch", "messages": [pong]}]},
        {"type": "batch", "messages": [pong], "x": 1},
        {"type": "nope"},
        [pong],
    ]
    for frame in frames:
        assert (checker.errors(frame) == []) == union.is_valid(frame), frame
