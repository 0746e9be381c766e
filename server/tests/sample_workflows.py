"""Workflows that only the tests register: a node that raises, a slow ticker, a picky one,
one whose first input request is closed unanswered (``second_chance``), and ``relay``, stages
in a row (optionally with a question between them) for runs that move between gateways."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from graphwire.graph import AsyncGraph, Node, WebSocketNode
from graphwire.registry import ParamsError, WorkflowRegistry


class BoomParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = "kaput"


class TickParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(default=10, ge=1, le=10_000)
    delay_ms: float = Field(default=20, ge=0)


class Empty(BaseModel):
    model_config = ConfigDict(extra="allow")


class Boom(WebSocketNode[str, None]):
    async def prep_async(self, shared: dict[str, Any]) -> str:
        return str(shared["params"]["message"])

    async def exec_async(self, prep_res: str) -> None:
        await self.send_update("custom_step", {"before": "raise"})
        raise ValueError(prep_res)


class Tick(WebSocketNode[tuple[int, float], int]):
    async def prep_async(self, shared: dict[str, Any]) -> tuple[int, float]:
        params = shared["params"]
        return int(params["count"]), float(params["delay_ms"]) / 1000

    async def exec_async(self, prep_res: tuple[int, float]) -> int:
        count, delay = prep_res
        for i in range(1, count + 1):
            await self.send_update("tick", {"i": i})
            await asyncio.sleep(delay)
        return count

    async def post_async(self, shared: dict[str, Any], prep_res: tuple[int, float], exec_res: int) -> str | None:
        shared["result"] = {"ticks": exec_res}
        return None


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=2.0, ge=0, le=30)


class BlockingSleep(Node[float, float]):
    """A plain sync node that blocks its thread, as user code calling a slow library does."""

    def prep(self, shared: dict[str, Any]) -> float:
        return float(shared["params"]["seconds"])

    def exec(self, prep_res: float) -> float:
        time.sleep(prep_res)
        return prep_res

    def post(self, shared: dict[str, Any], prep_res: float, exec_res: float) -> str | None:
        shared["result"] = {"slept": exec_res}
        return None


class SecondChanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout: float = Field(default=0.3, gt=0, le=30)
    wait: bool = True


class AskOnce(WebSocketNode[dict[str, Any], Any]):
    """Announces ``first`` and waits ``timeout`` s on it, or (``wait: false``) ends without waiting."""

    async def exec_async(self, prep_res: dict[str, Any]) -> Any:
        await self.send_update("approval_request", {"message": "First?", "options": ["yes", "no"]})
        if prep_res["wait"]:
            return await self.wait_for_input(timeout=float(prep_res["timeout"]))
        return None


class AskAgain(WebSocketNode[Any, Any]):
    """A second question that keeps the run going after the first one was closed."""

    async def exec_async(self, prep_res: Any) -> Any:
        return await self.wait_for_input("Again?", options=["ok"], timeout=30)


def second_chance() -> AsyncGraph:
    first = AskOnce(node_id="first")
    first >> AskAgain(node_id="again")
    return AsyncGraph(first)


class RelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ticks: int = Field(default=10, ge=0, le=10_000)
    delay_ms: float = Field(default=20, ge=0, le=10_000)
    ask: bool = False


class RelayResult(BaseModel):
    done: list[str]


class Stage(WebSocketNode[dict[str, Any], None]):
    """Says which stage it is (``stage``), ticks ``ticks`` times, then notes itself in ``done``."""

    async def prep_async(self, shared: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = shared["params"]
        return params

    async def exec_async(self, prep_res: dict[str, Any]) -> None:
        await self.send_update("stage", {"name": self.node_id})
        for i in range(int(prep_res["ticks"])):
            await self.send_update("tick", {"stage": self.node_id, "i": i})
            await asyncio.sleep(float(prep_res["delay_ms"]) / 1000)

    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared.setdefault("done", []).append(self.node_id)
        shared["result"] = {"done": shared["done"]}


class Ask(Stage):
    """A question between two stages: the run waits for ``yes`` or ``no``."""

    async def exec_async(self, prep_res: dict[str, Any]) -> None:
        await self.wait_for_input("Go on?", options=["yes", "no"], timeout=60)


def relay_graph(ask: bool) -> AsyncGraph:
    first = Stage(node_id="first")
    if ask:
        first >> Ask(node_id="ask") >> Stage(node_id="second")
    else:
        first >> Stage(node_id="second") >> Stage(node_id="third")
    return AsyncGraph(first)


def register(registry: WorkflowRegistry) -> None:
    registry.register("relay", lambda: relay_graph(False), params=RelayParams, result=RelayResult)
    registry.register("relay_ask", lambda: relay_graph(True), params=RelayParams, result=RelayResult)
    registry.register("boom", lambda: AsyncGraph(Boom(node_id="boom")), params=BoomParams, result=Empty)
    registry.register("tick", lambda: AsyncGraph(Tick(node_id="tick")), params=TickParams, result=Empty)
    registry.register(
        "blocking_sleep", lambda: AsyncGraph(BlockingSleep(node_id="sleep")), params=SleepParams, result=Empty
    )
    registry.register(
        "even_tick", lambda: AsyncGraph(Tick(node_id="tick")), params=TickParams, result=Empty, check=even_count
    )
    registry.register("second_chance", second_chance, params=SecondChanceParams, result=Empty)


def even_count(params: dict[str, Any]) -> None:
    """A check a JSON Schema could say, but here in code: ``count`` must be even."""
    if params["count"] % 2:
        raise ParamsError("count", "must be even")


class HogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(default=0.6, ge=0, le=5)


class Hog(WebSocketNode[float, float]):
    """An async node that blocks the event loop: ``time.sleep`` where ``await asyncio.sleep`` belongs.

    The mistake the loop watchdog is there to name (graphwire.watchdog).
    """

    async def prep_async(self, shared: dict[str, Any]) -> float:
        return float(shared["params"]["seconds"])

    async def exec_async(self, prep_res: float) -> float:
        time.sleep(prep_res)
        return prep_res

    async def post_async(self, shared: dict[str, Any], prep_res: float, exec_res: float) -> str | None:
        shared["result"] = {"blocked": exec_res}
        return None


def register_watchdog(registry: WorkflowRegistry) -> None:
    """``blocking_async``: one `Hog` node, ``hog``; load with ``--workflows sample_workflows:register_watchdog``."""
    registry.register("blocking_async", lambda: AsyncGraph(Hog(node_id="hog")), params=HogParams, result=Empty)
