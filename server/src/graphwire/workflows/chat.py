"""``chat``: streams a reply as ``token`` events, then completes with the full reply.

The responder is pluggable (an async iterator of tokens); the default is deterministic
and needs no network or model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from graphwire.graph import AsyncGraph, WebSocketNode

__all__ = ["Responder", "build_chat", "echo_responder"]

Responder = Callable[[str], AsyncIterator[str]]


async def echo_responder(message: str) -> AsyncIterator[str]:
    """A deterministic reply built from the message, one word per token."""
    reply = f"You said: {message.strip()}. This reply is streamed token by token by graphwire."
    words = reply.split(" ")
    for i, word in enumerate(words):
        yield word if i == len(words) - 1 else word + " "


class Respond(WebSocketNode[tuple[str, float], str]):
    def __init__(self, responder: Responder) -> None:
        super().__init__(node_id="respond")
        self.responder = responder

    async def prep_async(self, shared: dict[str, Any]) -> tuple[str, float]:
        params = shared["params"]
        return params["message"], float(params.get("delay_ms", 0)) / 1000.0

    async def exec_async(self, prep_res: tuple[str, float]) -> str:
        message, delay = prep_res
        parts: list[str] = []
        async for token in self.responder(message):
            parts.append(token)
            await self.send_update("token", token)
            if delay:
                await asyncio.sleep(delay)
        return "".join(parts)

    async def post_async(self, shared: dict[str, Any], prep_res: tuple[str, float], exec_res: str) -> str | None:
        shared["result"] = {"reply": exec_res}
        return None


def build_chat(responder: Responder = echo_responder) -> AsyncGraph:
    return AsyncGraph(Respond(responder))
