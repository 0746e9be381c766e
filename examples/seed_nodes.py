"""The product seed's three nodes, unchanged, served as gateway workflows.

``ChatNode``, ``ProcessingNode`` and ``ApprovalNode`` are copied exactly as the seed
writes them: they define only ``exec_async``. `WebSocketNode`'s defaults make them whole
workflows: ``prep_async`` hands them the run's input (the param named by ``input=``
below, or all params), ``post_async`` stores what ``exec_async`` returns as the run's
result, and ``send_update("approval_request", {"message", "options"})`` opens the
``input_request`` that ``wait_for_input(timeout=60)`` then waits on (``None`` after 60 s).

Serve them from this folder (the current directory is importable), or from anywhere with
``examples`` on ``PYTHONPATH``::

    cd examples && graphwire serve --workflows seed_nodes:register
    PYTHONPATH=examples graphwire serve --workflows seed_nodes:register

then start ``seed_chat {"message": "hi"}``, ``seed_processing {"data": [1, 2, 3]}`` or
``seed_approval {}`` over ``/ws/workflow`` (``tests/test_seed_nodes.py`` drives each).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from graphwire.graph import AsyncGraph, WebSocketNode
from graphwire.registry import WorkflowRegistry

__all__ = ["ApprovalNode", "ChatNode", "ProcessingNode", "generate_response", "register"]


async def generate_response(message: str) -> AsyncIterator[str]:
    """A deterministic stand-in for a model: the reply, one word per token."""
    words = ["You", "said:", *message.split()]
    for i, word in enumerate(words):
        await asyncio.sleep(0)
        yield word if i == len(words) - 1 else word + " "


# -- the seed's nodes, as the seed writes them (untyped; one lint exception marked) --


class ChatNode(WebSocketNode):
    async def exec_async(self, message):
        async for token in generate_response(message):
            await self.send_update("token", token)


class ProcessingNode(WebSocketNode):
    async def exec_async(self, data):
        total = len(data)
        for i, item in enumerate(data):  # noqa: B007 - the seed's loop, unchanged
            progress = (i + 1) / total * 100
            await self.send_update("progress", {"percent": progress, "current": i + 1, "total": total})


class ApprovalNode(WebSocketNode):
    async def exec_async(self, data):
        await self.send_update("approval_request", {"message": "Approve this action?", "options": ["yes", "no"]})
        response = await self.wait_for_input(timeout=60)
        return response


# -- their params and results, and the registration --------------------------------


class ChatParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(max_length=10_000)


class ProcessingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: list[float] = Field(max_length=10_000)


class ApprovalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoResult(BaseModel):
    """``ChatNode`` and ``ProcessingNode`` return nothing: their runs complete with ``{}``."""

    model_config = ConfigDict(extra="forbid")


class ApprovalResult(BaseModel):
    """The answer's data, ``{"value": "yes"}``; ``{"value": null}`` when nobody answered in 60 s."""

    model_config = ConfigDict(extra="allow")
    value: Literal["yes", "no"] | None = None


def register(registry: WorkflowRegistry) -> None:
    """``graphwire serve --workflows seed_nodes:register``: ``seed_chat``, ``seed_processing``, ``seed_approval``."""
    registry.register(
        "seed_chat",
        lambda: AsyncGraph(ChatNode(node_id="chat")),
        params=ChatParams,
        result=NoResult,
        description="The seed's ChatNode: streams a reply as token events.",
        input="message",
    )
    registry.register(
        "seed_processing",
        lambda: AsyncGraph(ProcessingNode(node_id="process")),
        params=ProcessingParams,
        result=NoResult,
        description="The seed's ProcessingNode: one progress event per item of data.",
        input="data",
    )
    registry.register(
        "seed_approval",
        lambda: AsyncGraph(ApprovalNode(node_id="approve")),
        params=ApprovalParams,
        result=ApprovalResult,
        description="The seed's ApprovalNode: asks yes or no, completes with the answer.",
    )
