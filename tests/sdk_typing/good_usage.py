"""Typed use of the SDK: must pass ``mypy --strict`` (checked by tests/test_sdk_typing.py)."""

from __future__ import annotations

from typing import Any, assert_type

from graphwire_client import (
    ConnectionState,
    GraphwireClient,
    InvalidParams,
    Run,
    StateChange,
    Subscription,
    WorkflowCancelled,
    WorkflowFailed,
)
from graphwire_client.messages import (
    ApprovalResult,
    ChatResult,
    DataProcessingParams,
    DataProcessingResult,
    InputRequest,
    NodeStatus,
    ProgressData,
    RunEvent,
    SystemAlert,
    Token,
    TopicMessage,
)


async def main() -> None:
    async with GraphwireClient("ws://127.0.0.1:8000/ws/workflow", token=None) as client:
        run = await client.start_workflow("data_processing", {"data": [1, 2, 3]})
        assert_type(run, Run[DataProcessingResult])
        assert_type(run.workflow_id, str)
        async for event in run:
            assert_type(event, RunEvent)
            if event.type == "progress":
                assert_type(event.data, ProgressData)
                print(event.data.current, event.data.total, event.data.percent)
            elif event.type == "node_update":
                assert_type(event.data.status, NodeStatus)
            elif event.type == "token":
                assert_type(event.data, str)
            elif event.type == "workflow_completed":
                assert_type(event.data, dict[str, Any])
        result = await run.result()
        assert_type(result, DataProcessingResult)
        print(result.mean + result.sum)

        by_model = await client.start_workflow("data_processing", DataProcessingParams(data=[1.5], delay_ms=1))
        assert_type(by_model, Run[DataProcessingResult])
        chat = await client.workflows.chat.start(message="hi", delay_ms=5)
        assert_type(await chat.result(), ChatResult)

        approval = await client.start_workflow("approval", {"message": "Ship?", "timeout": 30})
        async for event in approval:
            if isinstance(event, InputRequest):
                await approval.respond(event.request_id, {"value": "yes"})
        try:
            answer = await approval.result()
            assert_type(answer, ApprovalResult)
            print(answer.approved, answer.answer)
        except WorkflowFailed as exc:
            print(exc.code, exc.error.message, exc.node_id)
        except WorkflowCancelled as exc:
            print(exc.reason)
        await approval.cancel()

        other = await client.workflows["count_words"].start({"text": "a b"})
        assert_type(await other.result(), dict[str, Any])
        watched = await client.attach(run.workflow_id, since_seq=0)
        assert_type(watched, Run[dict[str, Any]])
        typed = await client.attach(approval.workflow_id, result_type=ApprovalResult)
        assert_type(await typed.result(), ApprovalResult)

        news = await client.subscribe("news")
        assert_type(news, Subscription[TopicMessage])
        alerts = await client.join_group("ops")
        async for alert in alerts:
            assert_type(alert, SystemAlert)
            break

        def on_token(event: Token) -> None:
            print(event.data.upper())

        async def on_state(change: StateChange) -> None:
            print(change.old_state, change.new_state)

        remove = client.on("token", on_token)
        remove()
        client.on("state", on_state)
        client.on("*", lambda event: print(event.type))
        assert client.state in (ConnectionState.connected, ConnectionState.connecting)
        ack = await client.commands.join_group("admins")
        assert_type(ack.command.value, str)
        try:
            await client.start_workflow("chat", {"message": ""})
        except InvalidParams as exc:
            print(exc.code, exc.path, exc.retry_after)
