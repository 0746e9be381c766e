"""In-process test helpers: frames read from a test socket and checked against the spec, a
recording stand-in for a socket, and polling with a deadline."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import jsonschema
from starlette.testclient import WebSocketTestSession

from graphwire.connections import Connection, ConnectionManager
from graphwire.settings import Settings


class Frames:
    """Reads frames from a test socket, checks each against the spec, unpacks batches."""

    def __init__(self, ws: WebSocketTestSession, validator: jsonschema.Draft7Validator) -> None:
        self.ws = ws
        self.validator = validator
        self.pending: deque[dict[str, Any]] = deque()
        self.raw: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send_json(frame)

    def recv(self) -> dict[str, Any]:
        while not self.pending:
            frame = self.ws.receive_json()
            self.validator.validate(frame)
            self.raw.append(frame)
            if frame["type"] == "batch":
                self.pending.extend(frame["messages"])
            else:
                self.pending.append(frame)
        return self.pending.popleft()

    def until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every message up to and including the first that matches."""
        seen: list[dict[str, Any]] = []
        while True:
            message = self.recv()
            seen.append(message)
            if predicate(message):
                return seen

    def until_type(self, kind: str) -> list[dict[str, Any]]:
        return self.until(lambda m: m["type"] == kind)

    def ping(self, id_: str = "p") -> None:
        """The socket still works: a ping gets its pong."""
        self.send({"type": "ping", "id": id_})
        message = self.recv()
        message.pop("data", None)  # /ws/chat frames carry the seed's `data` too
        assert message == {"type": "pong", "reply_to": id_, "timestamp": message["timestamp"]}


class Wire:
    """Stands in for a socket: records each frame written."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None

    def write(self, text: str) -> bool:
        frame = json.loads(text)
        self.frames.extend(frame["messages"] if frame["type"] == "batch" else [frame])
        return True

    async def send(self, text: str) -> None:
        self.write(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        raise AssertionError(f"closed with {code}: {reason}")


def connection(manager: ConnectionManager, name: str) -> tuple[Connection, Wire]:
    wire = Wire()
    conn = Connection(name, wire.send, wire.close, Settings(), write_now=wire.write)
    manager.add(conn)
    return conn, wire


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.01)
