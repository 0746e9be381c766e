"""In-process fixtures: the app under Starlette's TestClient, and a spec validator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from graphwire import Settings, WorkflowRegistry, create_app, register_builtin_workflows
from graphwire_codegen import load_spec, schema_validator
from inprocess import Frames
from sample_workflows import register

SPEC = Path(__file__).resolve().parents[2] / "spec" / "asyncapi.yaml"


@pytest.fixture(scope="session")
def server_message_schema() -> jsonschema.Draft7Validator:
    return schema_validator(load_spec(SPEC), "ServerMessage")


@pytest.fixture
def settings() -> Settings:
    return Settings(run_retention_seconds=60)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    registry = WorkflowRegistry()
    register_builtin_workflows(registry)
    register(registry)
    with TestClient(create_app(settings, registry)) as test_client:
        yield test_client


@pytest.fixture
def connect(client: TestClient, server_message_schema: jsonschema.Draft7Validator) -> Iterator[Callable[..., Frames]]:
    """Open sockets that are closed at the end of the test; the first frame is checked."""
    opened: list[Any] = []

    def open_socket(path: str = "/ws/workflow") -> Frames:
        context = client.websocket_connect(path)
        ws = context.__enter__()
        opened.append(context)
        frames = Frames(ws, server_message_schema)
        hello = frames.recv()
        assert hello["type"] == "connected"
        return frames

    yield open_socket
    for context in reversed(opened):
        context.__exit__(None, None, None)
