"""``graphwire serve --workers N``: N gateway processes on one port, kept running.

The supervisor binds the listening socket once and forks N workers; each builds its own
app and serves the inherited socket with ``GatewayServer``, and the kernel hands each new
connection to one of the workers blocked on it. The workers share groups, topics and runs
only through Redis, so a client may land on any of them, as behind a balancer.

- SIGTERM or SIGINT: every worker gets SIGTERM (never SIGINT: a terminal's Ctrl-C has
  already sent it one, and uvicorn takes a second SIGINT as "force exit, skip the
  graceful shutdown") and does its own graceful shutdown within ``shutdown_grace``. The
  supervisor exits once all have ended: 0 when each ended by that shutdown, 1 otherwise;
  one still running a moment after its grace is killed.
- A worker that ends on its own (killed, crashed) is replaced at once, and one that lived
  less than ``MIN_LIFETIME`` is replaced that long after its start, so a worker that
  crashes as it starts cannot turn into a fork loop. Exit codes that would repeat on
  every restart (``FATAL``: workflows that do not load, a failed lifespan) stop them all.
- A worker whose supervisor is gone (SIGKILL) gets SIGTERM from the kernel (Linux's
  ``PR_SET_PDEATHSIG``) instead of keeping the port.

Why not ``uvicorn.supervisors.Multiprocess``, what ``uvicorn --workers`` runs: each of its
workers is a plain ``uvicorn.Server`` (``Process.server``), and the four methods that make
workers name its ``Process`` class, so keeping ``GatewayServer`` (runs get their ending
before sockets get 1012, each process ends within its grace) means overriding most of it.
Its workers are spawned from a pickled ``Config``: the app must be an import string and
the protocol class made from our settings (``transport.gateway_protocol``) cannot be
pickled, so the settings and command-line overrides would travel through the environment.
What it would save is small: ``multiprocessing`` (fork context) starts workers and says
when one ended (``Process.sentinel``), ``socket.create_server`` binds, and the loop below
forwards signals and replaces the dead. Fork is safe here: the supervisor has no threads,
no event loop and no connections; each worker makes its own after the fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from multiprocessing.context import ForkProcess
from types import FrameType

from graphwire.settings import Settings

__all__ = ["FATAL", "MIN_LIFETIME", "Supervisor", "supervise"]

log = logging.getLogger("graphwire.supervisor")

# Worker exit codes that every replacement would repeat: graphwire serve's 2 (its
# workflows do not load) and uvicorn's STARTUP_FAILURE, 3 (the app's lifespan failed).
FATAL = frozenset({2, 3})
# The shortest life after which a dead worker is replaced at once (see the module doc).
MIN_LIFETIME = 1.0
# How long after its grace a worker that has not ended is killed; its own timer
# (GatewayServer) should have ended it already, this is for one stuck before serving.
KILL_MARGIN = 2.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Ways a worker ends by our SIGTERM: uvicorn re-raises the signal after its graceful
# shutdown, so it dies of it (a worker that had not started serving dies of it at once).
CLEAN_EXITS = frozenset({0, -signal.SIGTERM, -signal.SIGINT})
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_FORK = multiprocessing.get_context("fork")


def supervise(settings: Settings, serve: Callable[[socket.socket, int], int]) -> int:
    """Bind ``settings``' host and port once and keep ``settings.workers`` processes running ``serve``."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        # Listening before any worker is up: connects made while workers start or
        # restart wait in the backlog instead of being refused. SO_REUSEADDR as uvicorn.
        sock = socket.create_server((settings.host, settings.port), family=family, backlog=settings.backlog)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    with sock:
        return Supervisor(sock, settings.workers, serve, settings.shutdown_grace).run()


def _how(exitcode: int) -> str:
    return f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit code {exitcode}"


class Supervisor:
    """Keeps ``workers`` processes running ``serve(sock, slot)`` until SIGTERM or SIGINT."""

    def __init__(
        self, sock: socket.socket, workers: int, serve: Callable[[socket.socket, int], int], grace: float
    ) -> None:
        self.sock = sock
        self.serve = serve
        self.grace = grace
        self.slots: list[ForkProcess | None] = [None] * workers
        self.started_at = [0.0] * workers
        self.stop_signal: signal.Signals | None = None
        self._pid = os.getpid()
        # The signal handlers' wake-up (signal.set_wakeup_fd): a signal ends the wait at once.
        self._wake_r, self._wake_w = os.pipe()

    def run(self) -> int:
        host, port = self.sock.getsockname()[:2]
        log.info("supervisor [%d]: %d workers on http://%s:%d", self._pid, len(self.slots), host, port)
        os.set_blocking(self._wake_w, False)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        previous_fd = signal.set_wakeup_fd(self._wake_w)
        code = 1
        try:
            for slot in range(len(self.slots)):
                self._start(slot)
            code = self._watch()
            if self.stop_signal is not None:
                log.info("supervisor [%d]: %s, stopping the workers", self._pid, self.stop_signal.name)
        finally:
            code = self._stop(code)
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)
        log.info("supervisor [%d]: every worker has ended", self._pid)
        return code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only noted: the wake-up fd ends the wait, and the loop does the rest.
        if self.stop_signal is None:
            self.stop_signal = signal.Signals(signum)

    def _watch(self) -> int:
        """Replace workers that end until a signal asks to stop; a ``FATAL`` exit code is returned."""
        due: dict[int, float] = {}  # slot -> when its replacement starts
        while self.stop_signal is None:
            waiting = [self._wake_r, *(p.sentinel for p in self.slots if p is not None)]
            timeout = max(0.0, min(due.values()) - time.monotonic()) if due else None
            if self._wake_r in multiprocessing.connection.wait(waiting, timeout):
                os.read(self._wake_r, 512)
            if self.stop_signal is not None:
                break
            now = time.monotonic()
            for slot, process in enumerate(self.slots):
                if process is None or process.exitcode is None:
                    continue
                self.slots[slot] = None
                if process.exitcode in FATAL:
                    log.error("worker [%d] could not start (exit code %d); stopping", process.pid, process.exitcode)
                    return process.exitcode
                log.warning("worker [%d] ended (%s); starting a new one", process.pid, _how(process.exitcode))
                due[slot] = max(now, self.started_at[slot] + MIN_LIFETIME)
            for slot, when in list(due.items()):
                if when <= now:
                    del due[slot]
                    self._start(slot)
        return 0

    def _start(self, slot: int) -> None:
        process = _FORK.Process(target=self._worker, args=(slot,), name=f"graphwire-worker-{slot}")
        process.start()
        self.slots[slot] = process
        self.started_at[slot] = time.monotonic()

    def _worker(self, slot: int) -> None:
        """In the forked child: leave the supervisor's signal handling, then serve as worker ``slot``."""
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        # Until uvicorn installs its handlers, SIGTERM ends a worker that serves no one yet.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        _die_with(self._pid)
        sys.exit(self.serve(self.sock, slot))

    def _stop(self, code: int) -> int:
        """SIGTERM to every worker and wait for all: ``code``, or 1 if one did not end cleanly."""
        running = [p for p in self.slots if p is not None and p.exitcode is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.grace + KILL_MARGIN
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker [%d] did not end within its grace of %g s; killing it", process.pid, self.grace)
                process.kill()
                process.join()
            exitcode = process.exitcode
            assert exitcode is not None  # joined
            if exitcode not in CLEAN_EXITS:
                log.error("worker [%d] did not end cleanly (%s)", process.pid, _how(exitcode))
                code = code or 1
        self.slots = [None] * len(self.slots)
        return code


def _die_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when its supervisor dies, even of SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
