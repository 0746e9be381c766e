"""Reading frames from an in-process test socket, checked against the spec."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import jsonschema
from starlette.testclient import WebSocketTestSession


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
