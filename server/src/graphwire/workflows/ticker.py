"""``ticker``: a load generator for fan-out benchmarks.

With ``wait_for_go`` it first asks for input (option ``go``), so every watcher can attach
before the first tick. Each tick is a ``node_event`` (event ``tick``) whose data carries
``i``, ``sent_at`` (the server's ``time.time()``, for latency) and a ``payload`` string.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from graphwire.graph import AsyncGraph, InputTimeout, WebSocketNode

__all__ = ["build_ticker"]

# How long a ticker waits for its `go` before the run fails with input_timeout.
GO_TIMEOUT = 600.0


class Tick(WebSocketNode[dict[str, Any], int]):
    async def prep_async(self, shared: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = shared["params"]
        return params

    async def exec_async(self, prep_res: dict[str, Any]) -> int:
        count = int(prep_res.get("count", 100))
        payload = "x" * int(prep_res.get("payload_bytes", 100))
        interval = float(prep_res.get("interval_ms", 0)) / 1000.0
        if prep_res.get("wait_for_go"):
            prompt = "Send the ticks?"
            if await self.wait_for_input(prompt=prompt, options=["go"], timeout=GO_TIMEOUT) is None:
                raise InputTimeout(f"no answer to {prompt!r} within {GO_TIMEOUT:g} s")
        for i in range(1, count + 1):
            await self.send_update("tick", {"i": i, "sent_at": time.time(), "payload": payload})
            if interval:
                await asyncio.sleep(interval)
        return count

    async def post_async(self, shared: dict[str, Any], prep_res: dict[str, Any], exec_res: int) -> str | None:
        shared["result"] = {"count": exec_res}
        return None


def build_ticker() -> AsyncGraph:
    return AsyncGraph(Tick(node_id="tick"))
