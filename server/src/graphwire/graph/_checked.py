"""Nodes with validation (`ValidatedNode`) and execution stats (`MetricsNode`)."""

from __future__ import annotations

import time
from typing import Any

from ._config import Config
from ._node import Action, ExecT, Node, PrepT, Shared

__all__ = ["MetricsNode", "ValidatedNode"]


class ValidatedNode(Node[PrepT, ExecT]):
    """A `Node` that checks what goes into and comes out of `exec`.

    `validate_input` sees `prep`'s result once, before the first try; `validate_output`
    sees the final result (of `exec`, or of `exec_fallback`). Each returns the value to
    use, or raises to fail the node (an input error is not retried).
    """

    def validate_input(self, prep_res: PrepT) -> PrepT:
        """Check (or normalise) `prep`'s result; return it or raise."""
        return prep_res

    def validate_output(self, exec_res: ExecT) -> ExecT:
        """Check (or normalise) the exec result; return it or raise."""
        return exec_res

    def _exec(self, prep_res: PrepT) -> ExecT:
        checked = self.validate_input(prep_res)
        return self.validate_output(super()._exec(checked))


class MetricsNode(Node[PrepT, ExecT]):
    """A `Node` that records the time and the retries of each of its runs.

    ``collect_metrics`` comes first, as in KayGraph (``MetricsNode(True, 3)``: three
    tries). The numbers live in ``self.metrics``, which the copies a graph runs share with
    the node (the copy is shallow), so ``node.get_stats()`` after ``graph.run(...)`` counts
    the graph's runs of it.
    """

    def __init__(
        self,
        collect_metrics: bool = True,
        max_retries: int = 1,
        wait: float = 0,
        node_id: str | None = None,
        config: Config | None = None,
    ) -> None:
        super().__init__(max_retries=max_retries, wait=wait, node_id=node_id, config=config)
        self.collect_metrics = collect_metrics
        self.metrics: dict[str, Any] = {
            "execution_times": [],
            "retry_counts": [],
            "success_count": 0,
            "error_count": 0,
        }

    def _run(self, shared: Shared) -> Action:
        if not self.collect_metrics:
            return super()._run(shared)
        started = time.perf_counter()
        try:
            action = super()._run(shared)
        except Exception:
            self.metrics["error_count"] += 1
            raise
        else:
            self.metrics["success_count"] += 1
            return action
        finally:
            self.metrics["execution_times"].append(time.perf_counter() - started)
            self.metrics["retry_counts"].append(self.cur_retry)

    def get_stats(self) -> dict[str, Any]:
        """Totals over the recorded runs, or ``{"status": "no_executions"}`` before the first."""
        times: list[float] = self.metrics["execution_times"]
        if not times:
            return {"status": "no_executions"}
        return {
            "total_executions": len(times),
            "success_rate": self.metrics["success_count"] / len(times),
            "avg_execution_time": sum(times) / len(times),
            "min_execution_time": min(times),
            "max_execution_time": max(times),
            "total_retries": sum(self.metrics["retry_counts"]),
        }
