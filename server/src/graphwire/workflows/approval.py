"""``approval``: asks yes or no with ``input_request``, waits, routes on the answer."""

from __future__ import annotations

from typing import Any

from graphwire.graph import AsyncGraph, AsyncNode, InputTimeout, WebSocketNode

__all__ = ["build_approval"]


class Approve(WebSocketNode[tuple[str, float], dict[str, Any]]):
    async def prep_async(self, shared: dict[str, Any]) -> tuple[str, float]:
        params = shared["params"]
        return params["message"], float(params.get("timeout", 60))

    async def exec_async(self, prep_res: tuple[str, float]) -> dict[str, Any]:
        message, timeout = prep_res
        answer = await self.wait_for_input(prompt=message, options=["yes", "no"], timeout=timeout)
        if answer is None:  # no decision, no result: the run fails with input_timeout
            raise InputTimeout(f"no answer to {message!r} within {timeout:g} s")
        return answer

    async def post_async(
        self, shared: dict[str, Any], prep_res: tuple[str, float], exec_res: dict[str, Any]
    ) -> str | None:
        shared["answer"] = str(exec_res.get("value"))
        return "approved" if shared["answer"] == "yes" else "rejected"


class Decision(AsyncNode[str, None]):
    """Records the outcome; one instance per branch."""

    def __init__(self, approved: bool, node_id: str) -> None:
        super().__init__(node_id=node_id)
        self.approved = approved

    async def post_async(self, shared: dict[str, Any], prep_res: str, exec_res: None) -> str | None:
        shared["result"] = {"approved": self.approved, "answer": shared["answer"]}
        return None


def build_approval() -> AsyncGraph:
    approve = Approve(node_id="approve")
    approve - "approved" >> Decision(True, "approved")
    approve - "rejected" >> Decision(False, "rejected")
    return AsyncGraph(approve)
