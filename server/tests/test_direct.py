"""The direct write path is live under the uvicorn we ship with (see ``graphwire._direct``).

If a uvicorn upgrade renames what the fast path relies on, frames still flow through the
ASGI ``send`` but fan-out gets slower without a word; this test says so instead.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import uvicorn
import websockets

from graphwire._direct import direct_text_writer

# Short, 16-bit and 64-bit payload lengths, non-ASCII text, and the same str twice in a row
# (the second write reuses the first one's frame).
TEXTS = ["direct", "é" * 200, "x" * 70_000, "日本語 ✓"]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_uvicorn_socket_gets_a_direct_writer_and_it_writes(deflate: bool) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        writer = direct_text_writer(send)
        for text in [*TEXTS, TEXTS[-1]]:
            if writer is None or not writer(text):
                await send({"type": "websocket.send", "text": "asgi"})
        await receive()  # until the client leaves

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio", ws_per_message_deflate=deflate
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        compression = "deflate" if deflate else None
        async with websockets.connect(f"ws://127.0.0.1:{port}/", compression=compression, max_size=None) as ws:
            assert [await ws.recv() for _ in range(len(TEXTS) + 1)] == [*TEXTS, TEXTS[-1]]
            negotiated = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
            assert (negotiated is not None) == deflate
    finally:
        server.should_exit = True
        await serving


def test_anything_else_gets_no_direct_writer() -> None:
    async def send(message: dict[str, Any]) -> None:
        return None

    assert direct_text_writer(send) is None
