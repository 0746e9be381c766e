"""Reconnect and resume through a TCP proxy that the test cuts: every event exactly once, in order.

``DropProxy`` sits between the SDK and a real ``graphwire serve``. ``drop()`` aborts every
connection through it at once (no close frame: the network just went away); ``hold``
stops the server's bytes from reaching the client, so a command can land on the server
while its answer is lost. A watcher connected directly to the server sees the run as the
server logged it; the SDK behind the proxy must see exactly the same events.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from graphwire_client import (
    ConnectionLost,
    ConnectionState,
    GraphwireClient,
    ReconnectPolicy,
    Run,
    StateChange,
)
from graphwire_client.messages import InputRequest, RunEvent
from harness import Server

FAST = ReconnectPolicy(max_attempts=6, base_delay=0.02, max_delay=0.1)


class DropProxy:
    """A TCP proxy on a free port in front of ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.drops = 0
        self.accepted = 0
        self.downstream = asyncio.Event()
        self.downstream.set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/workflow"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, None), self._pipe(up_reader, writer, self.downstream))
        finally:
            self.links.discard(link)
            for side in link:
                side.transport.abort()

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            self.tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event | None) -> None:
        try:
            while data := await reader.read(65536):
                if gate is not None:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def hold(self) -> None:
        """Stop forwarding the server's bytes (they wait in the proxy)."""
        self.downstream.clear()

    def drop(self) -> None:
        """Cut every connection through the proxy, both sides, without a close frame."""
        self.drops += 1
        for link in list(self.links):
            for side in link:
                side.transport.abort()
        self.downstream.set()

    async def stop_listening(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def close(self) -> None:
        self.drop()
        await self.stop_listening()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[DropProxy]:
    running = DropProxy(server.port)
    await running.start()
    yield running
    await running.close()


def wire(events: list[RunEvent]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", exclude_none=True) for e in events]


async def collect(run: Run[Any]) -> list[RunEvent]:
    return [event async for event in run]


def assert_gap_free(events: list[RunEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type in ("workflow_completed", "workflow_failed", "workflow_cancelled")


async def test_drops_mid_run_lose_and_repeat_nothing(server: Server, proxy: DropProxy) -> None:
    rng = random.Random(20261125)
    reconnected: list[StateChange] = []
    async with GraphwireClient(server.ws()) as watcher, GraphwireClient(proxy.url, reconnect=FAST) as client:
        client.on("state", lambda change: reconnected.append(change) if change.new_state.value == "connected" else None)
        numbers = await client.start_workflow("data_processing", {"data": list(range(60)), "delay_ms": 8})
        chat = await client.workflows.chat.start(message="a long enough message to stream " * 3, delay_ms=8)
        watched = [await watcher.attach(numbers.workflow_id), await watcher.attach(chat.workflow_id)]
        cut_at: list[int] = []

        async def cut_randomly() -> None:
            # Six cuts at random points of the run (by the seq the client has reached),
            # each a random few milliseconds after that seq arrived.
            for target in sorted(rng.sample(range(3, 60), 6)):
                while numbers.last_seq < target:
                    await asyncio.sleep(0.002)
                await asyncio.sleep(rng.uniform(0, 0.01))
                cut_at.append(numbers.last_seq)
                proxy.drop()
                # The next cut waits for the new connection: a cut while the client is
                # still between connections would cut nothing.
                while len(reconnected) < len(cut_at):
                    await asyncio.sleep(0.002)

        cutter = asyncio.create_task(cut_randomly())
        mine = await asyncio.gather(collect(numbers), collect(chat))
        await asyncio.wait_for(cutter, 10)
        theirs = await asyncio.gather(*(collect(run) for run in watched))
        for events, expected in zip(mine, theirs, strict=True):
            assert_gap_free(events)
            assert wire(events) == wire(expected)
        assert await numbers.result() == await numbers.result()
        assert (await numbers.result()).count == 60
        assert (await chat.result()).reply == (await watched[1].result())["reply"]
        assert proxy.drops == 6
        assert len(reconnected) >= 6, "a new connection after each cut"
        assert all(0 < seq < mine[0][-1].seq for seq in cut_at), f"cuts in the middle of the run: {cut_at}"
        assert client.state is ConnectionState.connected


async def test_an_open_input_request_survives_drops(server: Server, proxy: DropProxy) -> None:
    async with GraphwireClient(server.ws()) as watcher, GraphwireClient(proxy.url, reconnect=FAST) as client:
        run = await client.start_workflow("approval", {"message": "Still there?"})
        request = await anext(e async for e in run if isinstance(e, InputRequest))
        for _ in range(3):
            proxy.drop()
            await asyncio.sleep(0.05)
        assert [p.request_id for p in run.pending_inputs] == [request.request_id]
        await run.respond(request.request_id, "yes")  # goes out once the client is back
        events = await collect(run)
        assert_gap_free(events)
        assert wire(events) == wire(await collect(await watcher.attach(run.workflow_id)))
        assert (await run.result()).approved


async def test_a_start_whose_answer_was_lost_is_the_same_run(server: Server, proxy: DropProxy) -> None:
    async with GraphwireClient(server.ws()) as watcher, GraphwireClient(proxy.url, reconnect=FAST) as client:
        proxy.hold()
        starting = asyncio.create_task(
            client.workflows["tick"].start({"count": 12, "delay_ms": 10}, idempotency_key="lost-answer-1")
        )
        await asyncio.sleep(0.3)  # the server has started the run; its answer waits in the proxy
        assert not starting.done()
        proxy.drop()
        run = await asyncio.wait_for(starting, 5)
        events = await collect(run)
        assert_gap_free(events)
        same = await watcher.workflows["tick"].start({"count": 12, "delay_ms": 10}, idempotency_key="lost-answer-1")
        assert same.workflow_id == run.workflow_id, "the repeated start did not start a second run"
        assert wire(events) == wire(await collect(same))
        assert await run.result() == {"ticks": 12}


async def test_giving_up_ends_the_run_with_connection_lost(server: Server, proxy: DropProxy) -> None:
    policy = ReconnectPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)
    async with GraphwireClient(proxy.url, reconnect=policy) as client:
        states: list[str] = []
        client.on("state", lambda change: states.append(change.new_state.value))
        run = await client.workflows["tick"].start({"count": 200, "delay_ms": 10})
        await anext(e async for e in run if e.type == "node_event")
        await proxy.stop_listening()
        proxy.drop()
        with pytest.raises(ConnectionLost) as lost:
            await collect(run)
        assert lost.value.attempts == 3
        with pytest.raises(ConnectionLost):
            await run.result()
        assert states == ["connecting", "disconnected"]
        assert client.state is ConnectionState.disconnected
