"""The Python SDK against a real ``graphwire serve``: every built-in workflow, answers, watchers, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from graphwire_client import (
    BadRequest,
    ConnectionState,
    GraphwireClient,
    InputClosed,
    InputRejected,
    InvalidParams,
    Run,
    Socket,
    StateChange,
    UnknownRun,
    UnknownWorkflow,
    WebSocketTransport,
    WorkflowCancelled,
    WorkflowFailed,
)
from graphwire_client.messages import (
    ApprovalResult,
    ChatResult,
    DataProcessingParams,
    DataProcessingResult,
    ErrorCode,
    InputRequest,
    RunEvent,
    RunStatus,
    Token,
)
from graphwire_client.messages import (
    InputClosed as InputClosedEvent,
)
from harness import Server

TERMINAL = {"workflow_completed", "workflow_failed", "workflow_cancelled"}


def wire(events: list[RunEvent]) -> list[dict[str, Any]]:
    """Events as JSON, the way the server logged them."""
    return [e.model_dump(mode="json", exclude_none=True) for e in events]


def assert_complete(events: list[RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "workflow_started"
    assert [e.type in TERMINAL for e in events].count(True) == 1
    assert events[-1].type in TERMINAL


async def collect(run: Run[Any]) -> list[RunEvent]:
    return [event async for event in run]


async def test_data_processing_typed_events_and_result(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        run = await client.start_workflow("data_processing", {"data": [3, 4, 5, 6]})
        assert run.workflow_id.startswith("run_")
        events = await collect(run)
        assert_complete(events)
        progress = [e.data for e in events if e.type == "progress"]
        assert [(p.current, p.total, p.percent) for p in progress] == [
            (1, 4, 25.0),
            (2, 4, 50.0),
            (3, 4, 75.0),
            (4, 4, 100.0),
        ]
        updates = [(e.node_id, e.data.status.value) for e in events if e.type == "node_update"]
        assert ("transform", "running") in updates
        assert ("aggregate", "completed") in updates
        completed = events[-1]
        assert completed.type == "workflow_completed"
        assert completed.data == {"count": 4, "sum": 18.0, "mean": 4.5}
        result = await run.result()
        assert result == DataProcessingResult(count=4, sum=18.0, mean=4.5)
        assert await collect(run) == events, "every `async for` reads the run from its first event"
        again = await client.start_workflow("data_processing", DataProcessingParams(data=[1, 2]))
        assert (await again.result()).count == 2
        kw = await client.workflows.data_processing.start(data=[10], delay_ms=1)
        assert (await kw.result()).mean == 10.0
        assert run.done
        assert run.status.value == "completed"


async def test_chat_streams_tokens_that_make_the_reply(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        handled: list[str] = []
        client.on("token", lambda event: handled.append(event.data))
        run = await client.workflows.chat.start(message="stream please")
        tokens = [e.data async for e in run if isinstance(e, Token)]
        result = await run.result()
        assert isinstance(result, ChatResult)
        assert "".join(tokens) == result.reply
        assert len(tokens) > 3
        assert handled == tokens


async def test_async_token_handlers_have_all_finished_when_result_returns(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        finished: list[int] = []
        running = 0

        async def on_token(event: Token) -> None:
            nonlocal running
            running += 1
            assert running == 1, "handlers of one client run one at a time"
            await asyncio.sleep(0.005)
            finished.append(event.seq)
            running -= 1

        client.on("token", on_token)
        run = await client.workflows.chat.start(message="handlers must keep up", delay_ms=0)
        result = await run.result()
        tokens = [e for e in run.events if isinstance(e, Token)]
        assert len(tokens) > 3
        assert finished == [t.seq for t in tokens], "every token's handler done, in order, before result()"
        assert "".join(t.data for t in tokens) == result.reply

        # A handler that awaits the run's result itself does not deadlock result().
        ends: list[str] = []

        async def waits_for_the_result(event: Token) -> None:
            ends.append((await again.result()).reply)

        client.on("token", waits_for_the_result)
        again = await client.start_workflow("chat", {"message": "again"})
        reply = (await asyncio.wait_for(again.result(), 15)).reply
        assert ends == [reply] * len([e for e in again.events if isinstance(e, Token)])


async def test_approval_answered_with_respond(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        run = await client.start_workflow("approval", {"message": "Release v2?"})
        async for event in run:
            if isinstance(event, InputRequest):
                assert event.prompt == "Release v2?"
                assert run.pending_inputs[0].request_id == event.request_id
                with pytest.raises(InputRejected) as invalid:
                    await run.respond(event.request_id, {"value": "maybe"})
                assert invalid.value.code is ErrorCode.invalid_input
                await run.respond(event.request_id, "yes")
                with pytest.raises(InputRejected) as repeat:
                    await run.respond(event.request_id, "no")
                assert repeat.value.code is ErrorCode.input_already_answered
        result = await run.result()
        assert result == ApprovalResult(approved=True, answer="yes")
        assert run.pending_inputs == []
        assert [e.type for e in run.events].count("input_answered") == 1


@pytest.mark.parametrize(("wait", "reason"), [(True, "timeout"), (False, "node_finished")])
async def test_input_closed_drops_the_request_and_a_late_respond_fails_typed(
    server: Server, wait: bool, reason: str
) -> None:
    async with GraphwireClient(server.ws()) as starter, GraphwireClient(server.ws()) as watcher:
        run = await starter.start_workflow("second_chance", {"timeout": 0.3, "wait": wait})
        first = await anext(e async for e in run if isinstance(e, InputRequest))
        watched = await watcher.attach(run.workflow_id)
        event = await anext(e async for e in run if isinstance(e, InputClosedEvent))
        assert (event.request_id, event.node_id, event.reason.value) == (first.request_id, "first", reason)
        # (The next request may be in already: the status is checked once it is.)
        assert first.request_id not in [p.request_id for p in run.pending_inputs]
        with pytest.raises(InputClosed) as late:
            await run.respond(first.request_id, "yes")
        assert late.value.reason.value == reason
        again = await anext(e async for e in run if isinstance(e, InputRequest) and e.node_id == "again")
        assert [p.request_id for p in run.pending_inputs] == [again.request_id]
        assert run.status is RunStatus.waiting
        # The watcher saw the same close; without it, the server refuses the answer.
        await anext(e async for e in watched if isinstance(e, InputRequest) and e.node_id == "again")
        assert [p.request_id for p in watched.pending_inputs] == [again.request_id]
        with pytest.raises(InputRejected) as refused:
            await watcher.commands.node_input(run.workflow_id, "first", {"value": "yes"}, request_id=first.request_id)
        assert refused.value.code is ErrorCode.unknown_request
        await watched.respond(again.request_id, "ok")
        mine, theirs = await asyncio.gather(collect(run), collect(watched))
        assert_complete(mine)
        assert wire(mine) == wire(theirs)
        assert [e.type for e in mine].count("input_closed") == 1
        await run.result()
        assert run.pending_inputs == []


async def test_two_clients_watch_one_run_and_the_watcher_answers(server: Server) -> None:
    async with GraphwireClient(server.ws()) as starter, GraphwireClient(server.ws()) as watcher:
        run = await starter.start_workflow("approval", {"message": "Deploy?"})
        request = await anext(e async for e in run if isinstance(e, InputRequest))
        watched = await watcher.attach(run.workflow_id, result_type=ApprovalResult)
        assert [p.request_id for p in watched.pending_inputs] == [request.request_id], "from the snapshot"
        await watched.respond(request.request_id, {"value": "no"})
        mine, theirs = await asyncio.gather(collect(run), collect(watched))
        assert_complete(mine)
        assert wire(mine) == wire(theirs)
        assert await run.result() == await watched.result() == ApprovalResult(approved=False, answer="no")
        late = await watcher.attach(run.workflow_id, since_seq=3)
        assert [e.seq for e in await collect(late)] == [e.seq for e in mine if e.seq > 3]
        assert (await late.result()) == {"approved": False, "answer": "no"}


async def test_failures_and_cancellation_raise_their_run_errors(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        # (A node that raises would put its traceback in the shared server's log, which
        # the session fixture forbids; an unanswered input fails a run just as well.)
        timeout = await client.start_workflow("approval", {"message": "fast?", "timeout": 0.2})
        events = await collect(timeout)
        assert events[-1].type == "workflow_failed"
        with pytest.raises(WorkflowFailed) as late:
            await timeout.result()
        assert late.value.code is ErrorCode.input_timeout
        assert late.value.workflow_id == timeout.workflow_id

        tick = await client.workflows["tick"].start({"count": 500, "delay_ms": 5})
        await anext(e async for e in tick if e.type == "node_event")
        await tick.cancel()
        with pytest.raises(WorkflowCancelled) as cancelled:
            await tick.result()
        assert cancelled.value.workflow_id == tick.workflow_id
        assert tick.events[-1].type == "workflow_cancelled"
        await tick.cancel()  # already ended: nothing to do


async def test_refused_commands_raise_structured_errors_and_the_client_goes_on(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        with pytest.raises(UnknownWorkflow) as unknown:
            await client.workflows["no_such_workflow"].start()
        assert unknown.value.code is ErrorCode.unknown_workflow
        with pytest.raises(InvalidParams) as invalid:
            await client.start_workflow("data_processing", {"data": []})
        assert invalid.value.path == "params.data"
        with pytest.raises(UnknownRun):
            await client.attach("run_does_not_exist")
        done = await client.start_workflow("data_processing", {"data": [1]})
        await done.wait()
        async with GraphwireClient(server.ws()) as other:
            with pytest.raises(BadRequest) as ahead:
                await other.attach(done.workflow_id, since_seq=done.last_seq + 5)
            assert ahead.value.code is ErrorCode.since_seq_ahead
            assert (await other.attach(done.workflow_id, since_seq=done.last_seq)).done
        assert await client.ping() >= 0
        assert client.state is ConnectionState.connected


async def test_topics_and_groups(server: Server) -> None:
    async with GraphwireClient(server.ws()) as client:
        alerts_seen: list[str] = []
        client.on("system_alert", lambda alert: alerts_seen.append(alert.message))
        news = await client.subscribe("news", "sports")
        ops = await client.join_group("ops")
        delivered = await asyncio.to_thread(server.post_json, "/api/publish", {"topic": "news", "data": {"n": 1}})
        assert delivered == {"delivered": 1}
        message = await asyncio.wait_for(anext(aiter(news)), 5)
        assert (message.topic, message.data) == ("news", {"n": 1})
        await asyncio.to_thread(server.post_json, "/api/broadcast", {"group": "ops", "message": "deploy at 5"})
        alert = await asyncio.wait_for(anext(aiter(ops)), 5)
        assert alert.message == "deploy at 5"
        assert alerts_seen == ["deploy at 5"]
        await news.close()
        await ops.close()
        assert [m async for m in news] == []
        gone = await asyncio.to_thread(server.post_json, "/api/publish", {"topic": "news", "data": {"n": 2}})
        assert gone == {"delivered": 0}


class RecordingTransport:
    """The default transport, keeping the URL it connected to and every frame it received."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.frames: list[dict[str, Any]] = []
        self._inner = WebSocketTransport()

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket:
        self.urls.append(url)
        socket = await self._inner.connect(url, headers=headers, open_timeout=open_timeout)
        frames = self.frames

        class Recording:
            async def send(self, text: str) -> None:
                await socket.send(text)

            async def recv(self) -> str:
                text = await socket.recv()
                frames.append(json.loads(text))
                return text

            async def close(self) -> None:
                await socket.close()

        return Recording()


async def test_state_events_and_unbatched_frames(server: Server) -> None:
    transport = RecordingTransport()
    client = GraphwireClient(server.ws(), batch=False, transport=transport)
    changes: list[StateChange] = []
    client.on("state", changes.append)
    async with client:
        assert client.client_id is not None
        assert client.server_info is not None
        runs = [await client.start_workflow("data_processing", {"data": list(range(60)), "delay_ms": 0})]
        runs.append(await client.workflows.chat.start(message="no batches for me " * 4, delay_ms=0))
        for run in runs:
            assert_complete(await collect(run))
    assert transport.urls == [server.ws() + "?batch=0"]
    assert len(transport.frames) > 60
    assert [f for f in transport.frames if f["type"] == "batch"] == [], "batch=False never gets a batch frame"
    assert [(c.old_state.value, c.new_state.value) for c in changes] == [
        ("disconnected", "connecting"),
        ("connecting", "connected"),
        ("connected", "disconnected"),
    ]


async def test_the_default_client_asks_for_batches_and_unpacks_them(server: Server) -> None:
    transport = RecordingTransport()
    async with (
        GraphwireClient(server.ws(), transport=transport) as batched,
        GraphwireClient(server.ws(), batch=False) as plain,
    ):
        run = await batched.start_workflow("data_processing", {"data": list(range(80)), "delay_ms": 0})
        events = await collect(run)
        assert_complete(events)
        watched = await plain.attach(run.workflow_id)
        assert wire(events) == wire(await collect(watched))
    assert transport.urls == [server.ws() + "?batch=1"]
    unpacked = [m for f in transport.frames for m in (f["messages"] if f["type"] == "batch" else [f])]
    assert [m["seq"] for m in unpacked if m.get("workflow_id") == run.workflow_id] == [e.seq for e in events]
