"""Clients that misbehave on purpose, and what a gateway process holds, read from outside.

``StalledPeer`` is a real WebSocket client (handshake, masked frames) on a plain socket
with a tiny receive buffer, that stops reading whenever the test says so: the kernel
buffers on both sides fill and the gateway's writes back up, as with a frozen browser
tab or a peer that vanished without a FIN.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.frames import Frame, Opcode

__all__ = ["StalledPeer", "open_sockets", "rss_bytes", "wait_for"]


class StalledPeer:
    def __init__(self, port: int, path: str = "/ws/workflow", rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window the peer advertises stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            response += chunk
        status = response.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status.decode()}")

    def read_until(self, marker: bytes, timeout: float = 10) -> None:
        """Read (while still reading) until ``marker`` has arrived, e.g. a ``subscribed``."""
        seen = b""
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout:g} s"
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed while reading")
            seen = seen[-len(marker) :] + chunk

    def send(self, frame: dict[str, Any]) -> None:
        data = json.dumps(frame).encode()
        self.sock.sendall(Frame(Opcode.TEXT, data).serialize(mask=True, extensions=[]))

    def read_until_closed(self, timeout: float) -> str:
        """Read and drop everything until the gateway ends the connection: ``"eof"`` or ``"reset"``."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(1 << 20):
                    return "eof"
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "open"
        return "open"

    def close(self) -> None:
        self.sock.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("no VmRSS")


def open_sockets(pid: int) -> int:
    """TCP and Unix sockets the process holds open (its listener included)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed while we looked
    return count


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns how long it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"{what}: not within {timeout:g} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start
