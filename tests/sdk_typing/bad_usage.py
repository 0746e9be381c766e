"""Wrong use of the SDK: every line marked ``# error`` must fail ``mypy --strict``.

tests/test_sdk_typing.py checks that mypy reports an error on exactly these lines.
"""

from __future__ import annotations

from graphwire_client import GraphwireClient
from graphwire_client.messages import DataProcessingParams


async def main() -> None:
    async with GraphwireClient() as client:
        await client.start_workflow("data_processing", {"data": "x"})  # error: data is a list of numbers
        await client.start_workflow("data_processing", {"values": [1]})  # error: no such param
        await client.start_workflow("data_processing", {})  # error: data is required
        await client.start_workflow("approval", {"message": 3})  # error: message is a string
        await client.start_workflow("approval", DataProcessingParams(data=[1]))  # error: another workflow's params
        await client.start_workflow("no_such_workflow", {})  # error: not a workflow of the spec
        await client.workflows.data_processing.start(data="x")  # error: data is a list of numbers
        await client.workflows.chat.start(mesage="hi")  # error: misspelt param
        run = await client.start_workflow("chat", {"message": "hi"})
        result = await run.result()
        print(result.count)  # error: a ChatResult has reply, not count
        await run.respond("req_1", 42)  # error: an answer is a dict or a string
        client.on("token", lambda event: print(event.prompt))  # error: a Token has no prompt
        client.on("tokens", print)  # error: no such event type
        client.on("token", lambda event: print(event.token))  # error: a token's text is event.data
        client.on("progress", lambda event: print(event.percent))  # error: progress fields are in event.data
        client.on("node_update", lambda event: print(event.status))  # error: the status is event.data.status
        client.on("workflow_completed", lambda event: print(event.result))  # error: the result is event.data
