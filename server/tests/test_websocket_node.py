"""`WebSocketNode`'s defaults and its mapping onto a `RunContext` (issue 12, the seed's nodes).

First against a fake context that records every call, then against the gateway's own
`GatewayRunContext` on a real `Run`, answered through `RunManager.answer`: no socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydantic import BaseModel

from graphwire import Settings, WorkflowRegistry
from graphwire._generated.messages import ErrorCode, InputClosed, InputClosedReason, RunStatus
from graphwire.connections import ConnectionManager
from graphwire.graph import AsyncGraph, InputTimeout, WebSocketNode, use_run_context
from graphwire.protocol import ProtocolError
from graphwire.runs import GatewayRunContext, Run, RunManager
from graphwire.workflows import register_builtin_workflows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def seed() -> ModuleType:
    """``examples/seed_nodes.py``: the seed's nodes, unchanged."""
    if str(EXAMPLES) not in sys.path:
        sys.path.append(str(EXAMPLES))
    return importlib.import_module("seed_nodes")


class FakeContext:
    """A `RunContext` that records every call; answers come from ``answers`` (None: a timeout)."""

    def __init__(self, *answers: dict[str, Any] | None) -> None:
        self.workflow_id = "wf-1"
        self.answers = list(answers)
        self.calls: list[tuple[Any, ...]] = []
        self.opened = 0

    async def emit(self, node_id: str, update_type: str, data: Any) -> None:
        if update_type != "node_status":
            self.calls.append(("emit", node_id, update_type, data))

    async def request_input(
        self, node_id: str, prompt: str, options: list[str] | None, timeout: float | None
    ) -> dict[str, Any] | None:
        self.calls.append(("request", node_id, prompt, options, timeout))
        return self.answers.pop(0)

    async def open_input(self, node_id: str, prompt: str, options: list[str] | None) -> str:
        self.opened += 1
        request_id = f"req_{self.opened}"
        self.calls.append(("open", node_id, prompt, options, request_id))
        return request_id

    async def wait_input(self, request_id: str, timeout: float | None) -> dict[str, Any] | None:
        self.calls.append(("wait", request_id, timeout))
        return self.answers.pop(0)

    def close_input(self, request_id: str) -> None:
        self.calls.append(("close", request_id))


async def run_node(node: WebSocketNode[Any, Any], ctx: FakeContext, shared: dict[str, Any]) -> dict[str, Any]:
    with use_run_context(ctx):
        await AsyncGraph(node).run_async(shared)
    return shared


# -- defaults: prep gives the run's input, post keeps the result ---------------------


async def test_seed_chat_node_gets_the_input_and_streams_tokens(seed: ModuleType) -> None:
    ctx = FakeContext()
    shared = await run_node(seed.ChatNode(node_id="chat"), ctx, {"input": "hi there"})
    assert ctx.calls == [("emit", "chat", "token", t) for t in ["You ", "said: ", "hi ", "there"]]
    assert "result" not in shared  # exec_async returned None


async def test_seed_processing_node_reports_each_item(seed: ModuleType) -> None:
    ctx = FakeContext()
    await run_node(seed.ProcessingNode(node_id="p"), ctx, {"input": [5, 6, 7, 8]})
    assert [c[3] for c in ctx.calls] == [
        {"percent": 25.0, "current": 1, "total": 4},
        {"percent": 50.0, "current": 2, "total": 4},
        {"percent": 75.0, "current": 3, "total": 4},
        {"percent": 100.0, "current": 4, "total": 4},
    ]


class Returns(WebSocketNode[Any, Any]):
    def __init__(self, value: Any, node_id: str) -> None:
        super().__init__(node_id=node_id)
        self.value = value

    async def exec_async(self, prep_res: Any) -> Any:
        return self.value


class OwnPost(Returns):
    async def post_async(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared["result"] = {"own": exec_res}
        return None


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([Returns({"a": 1}, "x")], {"a": 1}),
        ([Returns([1, 2], "x")], {"value": [1, 2]}),
        ([Returns("text", "x")], {"value": "text"}),
        ([Returns(None, "x")], None),
        # The last default result wins; None never replaces one.
        ([Returns(1, "x"), Returns(2, "y"), Returns(None, "z")], {"value": 2}),
        # A node's own result is never replaced by a default one, before or after it.
        ([OwnPost(1, "x"), Returns(2, "y")], {"own": 1}),
        ([Returns(1, "x"), OwnPost(2, "y")], {"own": 2}),
    ],
)
async def test_default_post_stores_the_result(chain: list[WebSocketNode[Any, Any]], expected: Any) -> None:
    for a, b in itertools.pairwise(chain):
        a >> b
    shared = await run_node(chain[0], FakeContext(), {})
    assert shared.get("result") == expected


async def test_default_prep_without_input_is_none() -> None:
    class Echo(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            return {"got": prep_res}

    shared: dict[str, Any] = {}
    await Echo().run_async(shared)
    assert shared["result"] == {"got": None}


# -- approval_request: an input request opened at once -------------------------------


async def test_seed_approval_opens_the_request_then_waits_on_it(seed: ModuleType) -> None:
    ctx = FakeContext({"value": "yes"})
    shared = await run_node(seed.ApprovalNode(node_id="approve"), ctx, {"input": {}})
    assert ctx.calls == [
        ("open", "approve", "Approve this action?", ["yes", "no"], "req_1"),
        ("wait", "req_1", 60),
    ]
    assert shared["result"] == {"value": "yes"}


async def test_seed_approval_timeout_returns_none_and_leaves_no_result(seed: ModuleType) -> None:
    ctx = FakeContext(None)
    shared = await run_node(seed.ApprovalNode(node_id="approve"), ctx, {})
    assert ctx.calls[-1] == ("wait", "req_1", 60)
    assert "result" not in shared


@pytest.mark.parametrize("update_type", ["approval_request", "input_request"])
async def test_prompt_is_read_too_and_an_unwaited_request_is_closed_at_node_end(update_type: str) -> None:
    class Announce(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update(update_type, {"prompt": "Go?", "options": ("go",)})
            await self.send_update("note", {"after": True})

    ctx = FakeContext()
    await run_node(Announce(node_id="a"), ctx, {})
    assert ctx.calls == [
        ("open", "a", "Go?", ["go"], "req_1"),
        ("emit", "a", "note", {"after": True}),
        ("close", "req_1"),
    ]


async def test_a_failing_node_closes_what_it_announced() -> None:
    class Fails(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", "Sure?")
            raise ValueError("kaput")

    ctx = FakeContext()
    with pytest.raises(ValueError, match="kaput"):
        await run_node(Fails(node_id="f"), ctx, {})
    assert ctx.calls == [("open", "f", "Sure?", None, "req_1"), ("close", "req_1")]


async def test_own_prompt_opens_a_new_request_and_waits_are_first_in_first_out() -> None:
    class Asks(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "A?"})
            await self.send_update("approval_request", {"message": "B?"})
            own = await self.wait_for_input("Own?", options=["ok"], timeout=5)
            first = await self.wait_for_input()
            second = await self.wait_for_input(timeout=1)
            return {"own": own, "first": first, "second": second}

    ctx = FakeContext({"value": "ok"}, {"value": "a"}, None)
    shared = await run_node(Asks(node_id="q"), ctx, {})
    assert ctx.calls == [
        ("open", "q", "A?", None, "req_1"),
        ("open", "q", "B?", None, "req_2"),
        ("request", "q", "Own?", ["ok"], 5),
        ("wait", "req_1", None),
        ("wait", "req_2", 1),
    ]
    assert shared["result"] == {"own": {"value": "ok"}, "first": {"value": "a"}, "second": None}


async def test_a_context_without_open_input_gets_the_update_as_before() -> None:
    class TwoMethods:
        def __init__(self) -> None:
            self.workflow_id = "wf-2"
            self.calls: list[tuple[Any, ...]] = []

        async def emit(self, node_id: str, update_type: str, data: Any) -> None:
            self.calls.append(("emit", update_type, data))

        async def request_input(
            self, node_id: str, prompt: str, options: list[str] | None, timeout: float | None
        ) -> dict[str, Any] | None:
            self.calls.append(("request", prompt, options, timeout))
            return {"value": "yes"}

    class Seedlike(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "Go?"})
            return await self.wait_for_input(timeout=3)

    ctx = TwoMethods()
    shared: dict[str, Any] = {}
    with use_run_context(ctx):  # type: ignore[arg-type]
        await Seedlike(node_id="s").run_async(shared)
    assert ctx.calls == [("emit", "approval_request", {"message": "Go?"}), ("request", "", None, 3)]
    assert shared["result"] == {"value": "yes"}


async def test_without_context_an_approval_request_is_recorded() -> None:
    class Announce(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "Go?"})

    node = Announce()
    await node.run_async({})
    assert node.updates == [("approval_request", {"message": "Go?"})]


# -- the gateway's context on a real run -----------------------------------------------


@pytest.fixture
def manager() -> RunManager:
    return RunManager(Settings(), ConnectionManager().flusher)


def new_run(manager: RunManager) -> Run:
    run = Run("run_test", "test", manager.settings, manager.flusher)
    manager.runs[run.workflow_id] = run
    return run


def logged(run: Run) -> list[str]:
    return [json.loads(frame)["type"] for _, frame in run.log]


async def test_an_announced_request_is_pending_at_once_and_keeps_an_early_answer(manager: RunManager) -> None:
    run = new_run(manager)
    ctx = GatewayRunContext(run)
    request_id = await ctx.open_input("approve", "Approve this action?", ["yes", "no"])
    (pending,) = run.snapshot().pending_inputs
    assert (pending.request_id, pending.prompt, pending.options, pending.expires_at) == (
        request_id,
        "Approve this action?",
        ["yes", "no"],
        None,
    )
    assert run.snapshot().status is RunStatus.waiting

    with pytest.raises(ProtocolError) as refused:
        manager.answer(run, "approve", request_id, {"value": "maybe"}, "r0")
    assert refused.value.code is ErrorCode.invalid_input
    assert run.snapshot().pending_inputs[0].request_id == request_id

    manager.answer(run, "approve", request_id, {"value": "yes"}, "r1")  # before anyone waits
    assert run.snapshot().pending_inputs == []
    assert await asyncio.wait_for(ctx.wait_input(request_id, 60), 1) == {"value": "yes"}
    assert logged(run) == ["input_request", "input_answered"]


async def test_a_wait_sets_expires_at_and_a_timeout_closes_the_request(manager: RunManager) -> None:
    run = new_run(manager)
    ctx = GatewayRunContext(run)
    request_id = await ctx.open_input("approve", "Now?", ["yes", "no"])
    waiting = asyncio.create_task(ctx.wait_input(request_id, 0.2))
    await asyncio.sleep(0.05)
    (pending,) = run.snapshot().pending_inputs
    assert pending.expires_at is not None
    assert await waiting is None
    assert run.snapshot().pending_inputs == []
    assert run.snapshot().status is RunStatus.running
    with pytest.raises(ProtocolError) as late:
        manager.answer(run, "approve", request_id, {"value": "yes"}, "r1")
    assert late.value.code is ErrorCode.unknown_request
    with pytest.raises(ProtocolError) as late_without_id:
        manager.answer(run, "approve", None, {"value": "yes"}, "r2")
    assert late_without_id.value.code is ErrorCode.no_pending_input
    assert logged(run) == ["input_request", "input_closed"]


async def test_request_input_returns_none_on_timeout(manager: RunManager) -> None:
    run = new_run(manager)
    ctx = GatewayRunContext(run)
    assert await ctx.request_input("ask", "Anyone?", None, 0.05) is None
    assert run.pending == {}
    assert logged(run) == ["input_request", "input_closed"]


async def test_a_node_that_never_waits_leaves_nothing_pending(manager: RunManager) -> None:
    class Announce(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "Go?", "options": ["go"]})
            assert run.snapshot().status is RunStatus.waiting

    run = new_run(manager)
    with use_run_context(GatewayRunContext(run)):
        await AsyncGraph(Announce(node_id="a")).run_async({})
    assert run.pending == {}
    assert run.snapshot().status is RunStatus.running


# -- registration: input= and the built-ins' timeouts -------------------------------------


class Params(BaseModel):
    message: str


async def test_input_must_be_a_param() -> None:
    registry = WorkflowRegistry()
    with pytest.raises(ValueError, match="'text' is not a field of Params"):
        registry.register("x", AsyncGraph, params=Params, result=Params, input="text")


async def test_seed_chat_runs_with_its_input_and_completes_with_no_result(
    seed: ModuleType, manager: RunManager
) -> None:
    registry = WorkflowRegistry()
    seed.register(registry)
    definition = registry.get("seed_chat")
    assert definition is not None
    assert definition.input == "message"
    run = manager.start(definition, {"message": "hello"}, None)
    assert run.task is not None
    await run.task
    assert run.status is RunStatus.completed
    assert run.result == {}
    assert logged(run).count("token") == 3


async def test_builtin_approval_still_fails_with_input_timeout(manager: RunManager) -> None:
    registry = WorkflowRegistry()
    register_builtin_workflows(registry)
    definition = registry.get("approval")
    assert definition is not None
    run = manager.start(definition, {"message": "Quick?", "timeout": 0.05}, None)
    assert run.task is not None
    await run.task
    assert run.error is not None
    assert run.error.code is ErrorCode.input_timeout
    assert run.error.message == "no answer to 'Quick?' within 0.05 s"
    assert issubclass(InputTimeout, TimeoutError)


# -- input_closed: a request closed unanswered while the run goes on ----------------------


def without_status(run: Run) -> list[str]:
    return [kind for kind in logged(run) if kind != "node_update"]


def closed_events(run: Run) -> list[InputClosed]:
    return [InputClosed.model_validate_json(frame) for _, frame in run.log if '"input_closed"' in frame]


async def test_a_timeout_logs_input_closed_as_the_snapshot_drops_the_request(manager: RunManager) -> None:
    run = new_run(manager)
    ctx = GatewayRunContext(run)
    request_id = await ctx.open_input("approve", "Now?", ["yes", "no"])
    assert await ctx.wait_input(request_id, 0.05) is None
    (closed,) = closed_events(run)
    assert (closed.node_id, closed.request_id, closed.reason) == ("approve", request_id, InputClosedReason.timeout)
    assert (closed.workflow_id, closed.seq) == (run.workflow_id, run.last_seq)
    # The snapshot at that seq no longer lists the request.
    snapshot = run.snapshot()
    assert (snapshot.last_seq, snapshot.pending_inputs, snapshot.status) == (closed.seq, [], RunStatus.running)


async def test_a_node_that_ends_without_waiting_logs_node_finished(manager: RunManager) -> None:
    class Announce(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "Go?", "options": ["go"]})
            await self.send_update("note", {"after": True})

    run = new_run(manager)
    with use_run_context(GatewayRunContext(run)):
        await AsyncGraph(Announce(node_id="a")).run_async({})
    # Closed as the node ends, before the engine reports it completed.
    assert without_status(run) == ["input_request", "node_event", "input_closed"]
    assert logged(run)[-1] == "node_update"
    (closed,) = closed_events(run)
    assert (closed.node_id, closed.reason) == ("a", InputClosedReason.node_finished)
    with pytest.raises(ProtocolError) as late:
        manager.answer(run, "a", closed.request_id, {"value": "go"}, "r1")
    assert late.value.code is ErrorCode.unknown_request


async def test_a_failing_node_logs_node_finished_before_the_run_fails(manager: RunManager) -> None:
    class Fails(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", "Sure?")
            raise ValueError("kaput")

    run = new_run(manager)
    with use_run_context(GatewayRunContext(run)), pytest.raises(ValueError, match="kaput"):
        await AsyncGraph(Fails(node_id="f")).run_async({})
    assert [c.reason for c in closed_events(run)] == [InputClosedReason.node_finished]


async def test_an_answered_request_is_never_closed_unanswered(manager: RunManager) -> None:
    class AnsweredEarly(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            await self.send_update("approval_request", {"message": "Go?", "options": ["go"]})
            (pending,) = run.pending.values()
            manager.answer(run, "early", pending.request_id, {"value": "go"}, "r1")
            # The node ends without waiting: the answer was applied, nothing is closed unanswered.

    run = new_run(manager)
    with use_run_context(GatewayRunContext(run)):
        await AsyncGraph(AnsweredEarly(node_id="early")).run_async({})
    assert without_status(run) == ["input_request", "input_answered"]


async def test_a_wait_the_node_cancels_itself_logs_node_finished(manager: RunManager) -> None:
    class GivesUp(WebSocketNode[Any, Any]):
        async def exec_async(self, prep_res: Any) -> Any:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(self.wait_for_input("Anyone?"), 0.05)

    run = new_run(manager)
    with use_run_context(GatewayRunContext(run)):
        await AsyncGraph(GivesUp(node_id="g")).run_async({})
    assert [c.reason for c in closed_events(run)] == [InputClosedReason.node_finished]
    assert run.pending == {}


class Waits(WebSocketNode[Any, Any]):
    """Announces a request and waits on it with no timeout: only the run's end closes it."""

    async def exec_async(self, prep_res: Any) -> Any:
        await self.send_update("approval_request", {"message": "Forever?"})
        return await self.wait_for_input()


def waiting_run(manager: RunManager) -> Run:
    registry = WorkflowRegistry()
    definition = registry.register("waits", lambda: AsyncGraph(Waits(node_id="w")), params=Params, result=Params)
    return manager.start(definition, {"message": "x"}, None)


async def until_waiting(run: Run) -> None:
    for _ in range(200):
        if run.pending:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the run never opened its request")


async def test_a_cancelled_run_closes_its_requests_with_its_terminal_event_only(manager: RunManager) -> None:
    run = waiting_run(manager)
    await until_waiting(run)
    manager.cancel(run, "by the test", None)
    assert run.task is not None
    await run.task
    assert "input_closed" not in logged(run)
    assert logged(run)[-1] == "workflow_cancelled"
    assert run.snapshot().pending_inputs == []


async def test_a_run_ended_by_shutdown_logs_no_input_closed(manager: RunManager) -> None:
    run = waiting_run(manager)
    await until_waiting(run)
    assert manager.end_all() == 1
    assert run.task is not None
    with contextlib.suppress(asyncio.CancelledError):
        await run.task
    assert "input_closed" not in logged(run)
    assert logged(run)[-1] == "workflow_failed"
