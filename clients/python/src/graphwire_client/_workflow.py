"""Workflow handles: ``client.workflows.<name>`` (typed, generated) and ``client.workflows["name"]``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from graphwire_client._run import Run

__all__ = ["ParamsInput", "RunStarter", "UntypedWorkflow", "WorkflowHandle"]

R = TypeVar("R")
ParamsInput = Mapping[str, Any] | BaseModel | None
"""Params as a dict (sent as is) or a pydantic model (sent with the fields you set)."""


class RunStarter(Protocol):
    """What a workflow handle needs from the client: start a run and follow it."""

    async def _start_run(
        self,
        workflow: str,
        params: ParamsInput,
        parse_result: Callable[[dict[str, Any]], R],
        idempotency_key: str | None,
    ) -> Run[R]: ...


class WorkflowHandle(Generic[R]):
    """A workflow the client can start; ``R`` is what ``await run.result()`` returns."""

    def __init__(self, starter: RunStarter, name: str, parse_result: Callable[[dict[str, Any]], R]) -> None:
        self._starter = starter
        self._name = name
        self._parse_result = parse_result

    @property
    def name(self) -> str:
        """The registered workflow name."""
        return self._name

    async def _start(self, params: ParamsInput, idempotency_key: str | None) -> Run[R]:
        return await self._starter._start_run(self._name, params, self._parse_result, idempotency_key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


def _as_dict(result: dict[str, Any]) -> dict[str, Any]:
    return result


class UntypedWorkflow(WorkflowHandle[dict[str, Any]]):
    """A workflow the spec does not list (one registered with ``--workflows``): untyped params and result."""

    def __init__(self, starter: RunStarter, name: str) -> None:
        super().__init__(starter, name, _as_dict)

    async def start(self, params: ParamsInput = None, *, idempotency_key: str | None = None) -> Run[dict[str, Any]]:
        """Start a run with ``params``; ``await run.result()`` returns the result as a ``dict``."""
        return await self._start(params, idempotency_key)
