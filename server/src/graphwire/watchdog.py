"""Finds what blocks the event loop: an `AsyncNode` that sleeps or computes without awaiting.

Sync nodes run in worker threads, but an async node's coroutine runs on the loop, and a
``time.sleep(1)`` there stops every run and connection of the gateway for a second.
`LoopWatchdog` logs each such block once on logger ``graphwire.watchdog``, naming the
node and its run, while the block is still going on; the record also carries them as
``node_id``, ``workflow`` and ``workflow_id`` (``extra=``, for JSON logs: see graphwire.logs),
since the watchdog's thread has none of the run's context.

It costs the hot path nothing. The loop runs one heartbeat callback every
``threshold / 4`` (a timestamp store and a ``call_later``); a daemon thread wakes as
often and, when the heartbeat is overdue by more than ``threshold``, reads the loop
thread's stack (`sys._current_frames`) and its current task. Only then does anything
expensive happen, once per block.

asyncio's own slow-callback warning (``loop.set_debug(True)`` with
``slow_callback_duration``) was not used: debug mode slows every callback and task, and it
reports after the fact with the task's outermost coroutine (``RunManager._drive``), never
the node.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

from graphwire.graph import BaseNode, run_context
from graphwire.runs import GatewayRunContext, Run

__all__ = ["LoopWatchdog", "RunDescriber", "describe_runs"]

log = logging.getLogger("graphwire.watchdog")

Describe = Callable[[asyncio.Task[Any]], str | None]
"""What a task is, for the warning (``"workflow 'x' (run run_...)"``), or ``None``."""

ADVICE = "await instead of blocking there, or make it a sync Node (which runs in a worker thread)"


class LoopWatchdog:
    """Logs a warning when ``loop`` stays busy for longer than ``threshold`` seconds.

    `start` and `stop` may be called from any thread; `stop` joins the watchdog thread
    (it wakes within ``threshold / 4``). A ``threshold`` of 0 or less disables it.
    A block is seen for sure once it lasts about ``threshold * 1.5``; a shorter one may end
    between two checks, and is then logged by the loop itself when it runs again, without
    the culprit.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float, describe: Describe | None = None) -> None:
        self._loop = loop
        self._threshold = threshold
        self._interval = max(threshold / 4, 0.005)
        self._describe = describe
        # (time of the last heartbeat, time the next one is due), replaced as one object
        # by the loop so the watchdog thread always reads a consistent pair.
        self._beats: tuple[float, float] | None = None
        self._loop_thread: int | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        # Who reports a block: the watchdog thread (with the culprit) or, if the block ended
        # before the watchdog saw it, the heartbeat. The lock makes it exactly one of them.
        self._lock = threading.Lock()
        self._reported_due: float | None = None
        self._reported_what = ""
        self._reported_fields: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        return self._threshold > 0

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        self._stopped.clear()
        self._beats = self._reported_due = None  # a restart must not count the pause as a block
        self._loop.call_soon_threadsafe(self._beat)
        self._thread = threading.Thread(target=self._watch, name="graphwire-loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopped.set()
        thread.join()
        handle, self._handle = self._handle, None
        if handle is not None:
            if threading.get_ident() == self._loop_thread:
                handle.cancel()
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(handle.cancel)

    # -- on the loop ----------------------------------------------------------

    def _beat(self) -> None:
        if self._stopped.is_set():
            return
        now = time.monotonic()
        previous = self._beats
        self._loop_thread = threading.get_ident()
        self._beats = (now, now + self._interval)  # published first: see _watch
        self._handle = self._loop.call_later(self._interval, self._beat)
        if previous is not None and now - previous[1] > self._threshold:
            self._ran_again(previous[1], now - previous[1])

    def _ran_again(self, due: float, late: float) -> None:
        with self._lock:
            seen, what, fields = self._reported_due == due, self._reported_what, self._reported_fields
        if seen:
            log.info("event loop ran again after %.2f s blocked %s", late, what, extra=fields)
        else:
            log.warning(
                "event loop was blocked for %.2f s; it ended before the watchdog could see by what "
                "(it looks every %.2f s)",
                late,
                self._interval,
            )

    # -- on the watchdog thread -------------------------------------------------

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            beats = self._beats
            if beats is None or time.monotonic() - beats[1] <= self._threshold or not self._loop.is_running():
                continue
            with self._lock:
                if self._reported_due == beats[1]:
                    continue  # this block is reported already
                try:
                    what, advice, fields = self._culprit()
                except Exception:  # a diagnostic must never kill the watchdog
                    log.exception("loop watchdog could not read the loop's stack")
                    what, advice, fields = "(stack unreadable)", "", {}
                if self._beats is not beats:
                    # The loop ran its heartbeat while we looked, so the stack may already show
                    # the next callback: leave the report to the heartbeat (see _ran_again).
                    continue
                self._reported_due, self._reported_what, self._reported_fields = beats[1], what, fields
                blocked = time.monotonic() - beats[1]
                log.warning("event loop blocked for %.2f s so far %s%s", blocked, what, advice, extra=fields)

    def _culprit(self) -> tuple[str, str, dict[str, str]]:
        """``("by node 'x' of <describe(task)> at file:line in function", "; <advice>", fields)``.

        Without a node frame, the top frame: ``("at file:line in function in <task>", "", fields)``.
        ``fields`` are the log fields of the culprit: its ``node_id``, and its run's with a
        `RunDescriber`.
        """
        ident = self._loop_thread
        frame = sys._current_frames().get(ident) if ident is not None else None
        if frame is None:
            return "(the loop's thread has no Python frame)", "", {}
        # Readable from this thread: up to 3.13 `current_task(loop)` is a lookup in a dict
        # keyed by loop, which the loop thread sets on entering a task step (and a dict
        # lookup is atomic under the GIL); from 3.14 it searches the threads' states for
        # the loop (gh-129898). While the loop is blocked, that is the blocking task.
        task = asyncio.current_task(self._loop)
        whose = None
        fields: dict[str, str] = {}
        if task is not None:
            try:
                whose = self._describe(task) if self._describe is not None else None
                if isinstance(self._describe, RunDescriber):
                    fields = self._describe.log_fields(task)
            except Exception:
                log.exception("loop watchdog: describe(%r) failed", task)
            whose = whose or f"task {task.get_name()!r}"
        found = _node_frame(frame)
        if found is None:
            of = f" in {whose}" if whose else ""
            return f"at {_where(frame)}{of}", "", fields
        node, node_frame = found
        of = f" of {whose}" if whose else ""
        return (
            f"by node {node.node_id!r}{of} at {_where(node_frame)}",
            f"; {ADVICE}",
            {**fields, "node_id": node.node_id},
        )


def _node_frame(frame: FrameType) -> tuple[BaseNode[Any, Any], FrameType] | None:
    """The innermost frame of a method of a graph node (its ``exec_async``...), and the node.

    Walking outward from the top of the stack, the first ``self`` that is a node is the
    one doing the work; its graph's frames are further out.
    """
    current: FrameType | None = frame
    while current is not None:
        code = current.f_code
        # Look at f_locals only for methods: on 3.11/3.12 reading it snapshots every local.
        if code.co_argcount and code.co_varnames[0] == "self":
            owner = current.f_locals.get("self")
            if isinstance(owner, BaseNode):
                return owner, current
        current = current.f_back
    return None


def _where(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class RunDescriber:
    """A `LoopWatchdog` ``describe`` for the gateway: ``RunManager.runs`` → the task's run.

    Called on the watchdog thread while the loop is blocked, so it only reads.
    """

    def __init__(self, runs: Mapping[str, Run]) -> None:
        self._runs = runs

    def __call__(self, task: asyncio.Task[Any]) -> str | None:
        run = _run_of(task, self._runs)
        return None if run is None else f"workflow {run.workflow!r} (run {run.workflow_id})"

    def log_fields(self, task: asyncio.Task[Any]) -> dict[str, str]:
        """The task's run as log fields (graphwire.logs): ``workflow_id`` and ``workflow``."""
        run = _run_of(task, self._runs)
        return {} if run is None else {"workflow_id": run.workflow_id, "workflow": run.workflow}


def describe_runs(runs: Mapping[str, Run]) -> RunDescriber:
    """The gateway's `RunDescriber` of ``runs`` (``RunManager.runs``)."""
    return RunDescriber(runs)


def _run_of(task: asyncio.Task[Any], runs: Mapping[str, Run]) -> Run | None:
    # From 3.12 a task's context is readable: its run context finds the run of any task the
    # engine spawned too (an AsyncParallelBatchNode's items copy the context).
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        ctx = get_context().get(run_context)
        if isinstance(ctx, GatewayRunContext):
            return ctx.run
    # 3.11: only the run's own task is known. list() copies the values in one C call, so the
    # loop thread cannot change the dict under the iteration.
    for run in list(runs.values()):
        if run.task is task:
            return run
    return None
