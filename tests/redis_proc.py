"""A real ``redis-server`` for the tests, on a free loopback port, with the faults they inject.

``make test`` installs Debian's ``redis-server`` (the ``redis-server`` target). One server
runs per test session (the ``redis_server`` fixture in ``conftest``); the fault tests stop,
kill, restart it and kill its client connections. It keeps nothing on disk: no RDB, no AOF,
so a restart is an empty Redis on the same port, as after a crash without persistence.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from harness import free_port

__all__ = ["RedisServer", "start_redis"]

STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Every server this process started and has not ended: ended at exit even if a fixture's
# teardown never ran (an interrupted session), so no redis-server outlives the tests.
_RUNNING: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _end_leftovers() -> None:
    for process in list(_RUNNING):
        process.kill()
        process.wait()
    _RUNNING.clear()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A ``redis-server`` process on ``127.0.0.1:port``; ``restart()`` keeps the port."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("redis-server is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start on ``port`` and return once it answers PING."""
        if self.running:
            raise RuntimeError("redis-server is already running")
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed: `make redis-server` installs Debian's")
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log_path),
                "--loglevel",
                "warning",
                # Loopback only, and the tests connect without a password.
                "--protected-mode",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _RUNNING.add(self.process)
        self.starts += 1
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._forget()
                raise RuntimeError(f"redis-server exited early on port {self.port}:\n{self.log()}")
            if _answers_ping(self.port):
                return
            time.sleep(0.01)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port}:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM (a clean shutdown) and wait; SIGKILL if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._forget()

    def kill(self) -> None:
        """SIGKILL: Redis dies mid-whatever, as in a crash."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._forget()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, with no data."""
        self.stop()
        self.start()

    def client(self, **kwargs: Any) -> redis.Redis:
        """A sync redis-py client; close it when done."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)

    def client_kill_all(self) -> int:
        """``CLIENT KILL`` every client connection (commands and pub/sub); how many were killed.

        The connection issuing the command is skipped (Redis's ``SKIPME yes``) and closed after.
        """
        with self.client() as admin:
            normal = int(admin.execute_command("CLIENT", "KILL", "TYPE", "normal"))
            pubsub = int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
        return normal + pubsub

    def flushall(self) -> None:
        with self.client() as admin:
            admin.flushall()

    def _forget(self) -> None:
        if self.process is not None:
            _RUNNING.discard(self.process)
        self.process = None


def start_redis(directory: Path, port: int | None = None) -> RedisServer:
    """A running ``redis-server`` on ``port`` (default: a free one) keeping its log in ``directory``."""
    server = RedisServer(port or free_port(), directory)
    server.start()
    return server
