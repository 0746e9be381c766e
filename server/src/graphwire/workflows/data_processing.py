"""``data_processing``: load → transform (a ``progress`` per item) → aggregate."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from graphwire.graph import AsyncGraph, WebSocketNode
from graphwire.registry import ParamsError

__all__ = ["build_data_processing", "check_data_processing"]


def _finite_sum(values: list[float]) -> float | None:
    try:
        total = math.fsum(values)
    except OverflowError:  # fsum raises on an intermediate overflow
        return None
    return total if math.isfinite(total) else None


def check_data_processing(params: dict[str, Any]) -> None:
    """JSON has no infinity: data whose sum passes the float range has no result to send."""
    if _finite_sum([float(x) for x in params["data"]]) is None:
        raise ParamsError("data", "the sum of the numbers is outside the range of a float")


class Load(WebSocketNode[list[float], list[float]]):
    async def prep_async(self, shared: dict[str, Any]) -> list[float]:
        return [float(x) for x in shared["params"]["data"]]

    async def exec_async(self, prep_res: list[float]) -> list[float]:
        return prep_res

    async def post_async(self, shared: dict[str, Any], prep_res: list[float], exec_res: list[float]) -> str | None:
        shared["items"] = exec_res
        return None


class Transform(WebSocketNode[list[float], list[float]]):
    """Touches each item and reports progress after each one."""

    async def prep_async(self, shared: dict[str, Any]) -> list[float]:
        self.delay = float(shared["params"].get("delay_ms", 0)) / 1000.0
        items: list[float] = shared["items"]
        return items

    async def exec_async(self, prep_res: list[float]) -> list[float]:
        out: list[float] = []
        total = len(prep_res)
        for i, value in enumerate(prep_res, start=1):
            out.append(value)
            await self.send_update("progress", {"current": i, "total": total, "percent": 100.0 * i / total})
            if self.delay:
                await asyncio.sleep(self.delay)
        return out

    async def post_async(self, shared: dict[str, Any], prep_res: list[float], exec_res: list[float]) -> str | None:
        shared["items"] = exec_res
        return None


class Aggregate(WebSocketNode[list[float], dict[str, Any]]):
    async def prep_async(self, shared: dict[str, Any]) -> list[float]:
        items: list[float] = shared["items"]
        return items

    async def exec_async(self, prep_res: list[float]) -> dict[str, Any]:
        total = _finite_sum(prep_res)
        if total is None:  # check_data_processing refuses such data before the run starts
            raise OverflowError("the sum of the data is outside the range of a float")
        return {"count": len(prep_res), "sum": total, "mean": total / len(prep_res)}

    async def post_async(self, shared: dict[str, Any], prep_res: list[float], exec_res: dict[str, Any]) -> str | None:
        await self.send_update("result", exec_res)
        shared["result"] = exec_res
        return None


def build_data_processing() -> AsyncGraph:
    load = Load(node_id="load")
    load >> Transform(node_id="transform") >> Aggregate(node_id="aggregate")
    return AsyncGraph(load)
