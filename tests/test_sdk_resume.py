"""Reconnect and resume through a TCP proxy that the test cuts: every event exactly once, in order.

``DropProxy`` sits between the SDK and a real ``graphwire serve``. ``drop()`` aborts every
connection through it at once (no close frame: the network just went away); ``hold``
stops the server's bytes from reaching the client, so a command can land on the server
while its answer is lost; ``cut_after_client_sends`` / ``cut_before_client_sends`` cut
on a chosen client frame, once the server has answered it or before the server sees it.
A watcher connected directly to the server sees the run as the server logged it; the SDK
behind the proxy must see exactly the same events.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from graphwire_client import (
    ConnectionLost,
    ConnectionState,
    GatewayShutdown,
    GraphwireClient,
    HandshakeRefused,
    InputRejected,
    ReconnectPolicy,
    Run,
    Socket,
    StateChange,
    WebSocketTransport,
)
from graphwire_client.messages import ErrorCode, InputAnswered, InputRequest, RunEvent
from harness import Server, connect, start_server, stop_server

FAST = ReconnectPolicy(max_attempts=6, base_delay=0.02, max_delay=0.1)


class DropProxy:
    """A TCP proxy on a free port in front of ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.drops = 0
        self.accepted = 0
        self.refusing = False
        """While set, new connections are closed at once."""
        self.downstream = asyncio.Event()
        self.downstream.set()
        self.held = bytearray()
        """The server's bytes that ``hold`` kept from the client."""
        self.client_frames: list[str] = []
        """The payload of every text frame a client sent through the proxy (best effort), in order."""
        self._trigger: tuple[str, str | None, asyncio.Future[None]] | None = None
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
        if self.refusing:
            writer.transport.abort()
            return
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self.links.add(link)
        try:
            await asyncio.gather(self._upstream(reader, up_writer), self._pipe(up_reader, writer, self.downstream))
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

    async def _upstream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Client to server: the HTTP upgrade request as is, then a whole frame at a time,
        recording the frames and cutting where a trigger says."""
        buffer = b""
        upgraded = False
        try:
            while data := await reader.read(65536):
                buffer += data
                if not upgraded:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    writer.write(buffer[: end + 4])
                    buffer, upgraded = buffer[end + 4 :], True
                frames, buffer = client_frames(buffer)
                for raw, text in frames:
                    self.client_frames.append(text)
                    trigger = self._trigger
                    if trigger is not None and trigger[0] in text:
                        self._trigger = None
                        await self._cut_on(raw, writer, *trigger[1:])
                        return
                    writer.write(raw)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def _cut_on(
        self, data: bytes, writer: asyncio.StreamWriter, answer: str | None, cut: asyncio.Future[None]
    ) -> None:
        if answer is not None:  # the server gets the frame; the client never sees its answer
            self.hold()
            writer.write(data)
            await writer.drain()
            while answer.encode() not in self.held:
                await asyncio.sleep(0.005)
        self.drop()
        cut.set_result(None)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event) -> None:
        try:
            while data := await reader.read(65536):
                if not gate.is_set():
                    self.held += data  # kept from the client; reading on shows the proxy what follows
                    continue
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut_after_client_sends(self, needle: str, answer: str) -> asyncio.Future[None]:
        """Forward the next client frame containing ``needle``, hold the server's bytes, and cut
        once they contain ``answer``: the server acted on the frame, the client never hears so."""
        cut = asyncio.get_running_loop().create_future()
        self._trigger = (needle, answer, cut)
        return cut

    def cut_before_client_sends(self, needle: str) -> asyncio.Future[None]:
        """Cut instead of forwarding the next client frame containing ``needle``."""
        cut = asyncio.get_running_loop().create_future()
        self._trigger = (needle, None, cut)
        return cut

    def hold(self) -> None:
        """Stop forwarding the server's bytes: they go to ``held``, and a ``drop()`` discards them."""
        self.downstream.clear()

    def drop(self) -> None:
        """Cut every connection through the proxy, both sides, without a close frame."""
        self.drops += 1
        for link in list(self.links):
            for side in link:
                side.transport.abort()
        self.downstream.set()
        self.held.clear()

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


def client_frames(data: bytes) -> tuple[list[tuple[bytes, str]], bytes]:
    """The complete (masked) WebSocket frames at the start of ``data`` (RFC 6455 §5.2), each
    with its unmasked payload as text, and the bytes of the frame not yet complete."""
    frames = []
    offset = 0
    while offset + 2 <= len(data):
        length, head = data[offset + 1] & 0x7F, 2
        if length == 126:
            length, head = int.from_bytes(data[offset + 2 : offset + 4]), 4
        elif length == 127:
            length, head = int.from_bytes(data[offset + 2 : offset + 10]), 10
        masked = data[offset + 1] & 0x80
        start = offset + head + (4 if masked else 0)
        end = start + length
        if end > len(data):
            break
        mask = data[offset + head : start] if masked else b"\0\0\0\0"
        text = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start:end])).decode(errors="replace")
        frames.append((data[offset:end], text))
        offset = end
    return frames, data[offset:]


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


def subscribes_sent(proxy: DropProxy, since: int) -> list[dict[str, Any]]:
    """The ``subscribe`` frames that clients sent through the proxy after frame number ``since``."""
    frames = [json.loads(frame) for frame in proxy.client_frames[since:] if '"subscribe"' in frame]
    return [frame for frame in frames if frame["type"] == "subscribe"]


@pytest.mark.parametrize("starter", ["another client", "this client"])
async def test_a_resume_names_the_run_logs_epoch_and_is_recovered(
    server: Server, proxy: DropProxy, starter: str
) -> None:
    async with (
        GraphwireClient(server.ws()) as other,
        GraphwireClient(server.ws()) as reader,
        GraphwireClient(proxy.url, reconnect=FAST) as client,
    ):
        run: Run[Any]
        origin: Run[Any]
        if starter == "this client":
            # No subscribed before its first resume: its epoch is the one workflow_started named.
            run = await client.start_workflow("data_processing", {"data": list(range(60)), "delay_ms": 15})
            origin = await other.attach(run.workflow_id)
        else:
            origin = await other.start_workflow("data_processing", {"data": list(range(60)), "delay_ms": 15})
            run = await client.attach(origin.workflow_id)
        epoch = (await reader.commands.subscribe(workflow_id=origin.workflow_id, since_seq=0)).epoch
        assert epoch, "the gateway names its log's epoch"
        resumes: list[dict[str, Any]] = []
        for _ in range(2):
            target = run.last_seq + 5
            while run.last_seq < target:
                await asyncio.sleep(0.002)
            since = len(proxy.client_frames)
            proxy.drop()
            while not subscribes_sent(proxy, since):
                await asyncio.sleep(0.002)
            resumes.extend(subscribes_sent(proxy, since))
        events = await collect(run)
        assert [(r["workflow_id"], r.get("epoch")) for r in resumes] == [(origin.workflow_id, epoch)] * 2
        assert all(r["since_seq"] > 0 for r in resumes)
        assert run.recovered, "the same epoch: the replay continues the view"
        assert not run.truncated
        assert_gap_free(events)
        assert wire(events) == wire(await collect(origin))


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


# --- respond(...) exactly once across a cut ---------------------------------------------------


def answers_sent(proxy: DropProxy, since: int) -> list[dict[str, Any]]:
    """The ``node_input`` frames that clients sent through the proxy after frame number ``since``."""
    return [json.loads(frame) for frame in proxy.client_frames[since:] if '"node_input"' in frame]


@pytest.mark.parametrize("where", ["after", "before"])
async def test_respond_across_a_cut_is_acked_once_and_applied_once(
    server: Server, proxy: DropProxy, where: str
) -> None:
    async with GraphwireClient(server.ws()) as other, GraphwireClient(proxy.url, reconnect=FAST) as client:
        run = await client.start_workflow("approval", {"message": f"Cut {where} the answer?", "timeout": 20})
        request = await anext(e async for e in run if isinstance(e, InputRequest))
        since, drops = len(proxy.client_frames), proxy.drops
        if where == "after":  # the gateway applies the answer; its ack is lost with the connection
            cut = proxy.cut_after_client_sends('"node_input"', '"command":"node_input"')
        else:  # the gateway never sees the first copy
            cut = proxy.cut_before_client_sends('"node_input"')
        answering = asyncio.create_task(run.respond(request.request_id, "yes"))
        await asyncio.wait_for(cut, 10)
        cut_at = datetime.now(UTC)
        await asyncio.wait_for(answering, 10)  # returns (once), does not raise
        sent = answers_sent(proxy, since)
        assert proxy.drops == drops + 1
        assert len(sent) == 2, "sent, cut off, sent again after the resume"
        assert sent[1] == sent[0], "the identical node_input: same id, idempotency_key, data, request_id"
        assert sent[0]["idempotency_key"]
        assert (await run.result()).answer == "yes"
        watched = await other.attach(run.workflow_id)
        answered = [e for e in await collect(watched) if isinstance(e, InputAnswered)]
        assert [e.data for e in answered] == [{"value": "yes"}], "applied once"
        assert (answered[0].timestamp < cut_at) == (where == "after"), "applied by the first copy, or the second"
        # The same answer from another client is another answer: refused.
        with pytest.raises(InputRejected) as refused:
            await watched.respond(request.request_id, "yes")
        assert refused.value.code is ErrorCode.input_already_answered


async def test_respond_re_sent_after_another_client_answered_raises_input_already_answered(
    server: Server, proxy: DropProxy
) -> None:
    patient = ReconnectPolicy(max_attempts=1000, base_delay=0.01, max_delay=0.05)
    async with GraphwireClient(server.ws()) as other, GraphwireClient(proxy.url, reconnect=patient) as client:
        run = await client.start_workflow("approval", {"message": "Who answers first?", "timeout": 20})
        request = await anext(e async for e in run if isinstance(e, InputRequest))
        proxy.refusing = True  # no reconnect until the other client has answered
        cut = proxy.cut_before_client_sends('"node_input"')
        answering = asyncio.create_task(run.respond(request.request_id, "yes"))
        await asyncio.wait_for(cut, 10)
        watched = await other.attach(run.workflow_id)
        await watched.respond(request.request_id, "yes")  # the same data, from another sender
        proxy.refusing = False
        with pytest.raises(InputRejected) as refused:
            await asyncio.wait_for(answering, 10)
        assert refused.value.code is ErrorCode.input_already_answered
        assert (await run.result()).answer == "yes"
        assert len(answers_sent(proxy, 0)) == 2, "the answer was sent again after the resume"


# --- a full gateway: 503 with Retry-After --------------------------------------------------------


class RecordingTransport:
    """The default transport, noting when each attempt started and how it ended."""

    def __init__(self) -> None:
        self.inner = WebSocketTransport()
        self.attempts: list[tuple[float, Exception | None]] = []

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> Socket:
        at = time.monotonic()
        try:
            socket = await self.inner.connect(url, headers=headers, open_timeout=open_timeout)
        except Exception as exc:
            self.attempts.append((at, exc))
            raise
        self.attempts.append((at, None))
        return socket


async def test_a_full_gateway_is_retried_after_its_retry_after_with_jitter(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"GRAPHWIRE_MAX_CONNECTIONS": "1"})
    try:
        holder = await connect(server.ws())  # the one slot
        transport = RecordingTransport()
        policy = ReconnectPolicy(max_attempts=30, base_delay=0.25, max_delay=1.0)
        client = GraphwireClient(server.ws(), reconnect=policy, transport=transport)
        connecting = asyncio.create_task(client.connect())
        deadline = time.monotonic() + 30
        while sum(error is not None for _, error in transport.attempts) < 4:
            assert time.monotonic() < deadline, transport.attempts
            await asyncio.sleep(0.05)
        await holder.close()
        await asyncio.wait_for(connecting, 30)
        *refused, (_, last) = transport.attempts
        assert last is None, "connected once the slot was free"
        for _, error in refused:
            assert isinstance(error, HandshakeRefused), error
            assert (error.status, error.retry_after) == (503, 1.0)
        gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(transport.attempts)]
        assert min(gaps) >= 0.9, f"attempts closer than the Retry-After of 1 s: {gaps}"
        assert max(gaps) <= 1.0 + policy.max_delay + 1.5, gaps
        assert max(gaps) - min(gaps) > 0.02, f"the delays are jittered: {gaps}"
        assert await client.ping() >= 0
        await client.close()
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()


# --- the gateway stops while a run is in flight ------------------------------------------------


async def test_a_run_in_flight_when_the_gateway_stops_raises_gateway_shutdown(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        async with GraphwireClient(server.ws(), reconnect=FAST) as client:
            run = await client.start_workflow("approval", {"message": "Still there?", "timeout": 30})
            await anext(e async for e in run if isinstance(e, InputRequest))
            server.process.terminate()  # SIGTERM: the run gets workflow_failed, then the socket 1012
            with pytest.raises(GatewayShutdown) as stopped:
                await asyncio.wait_for(run.result(), 20)
            assert (stopped.value.workflow_id, stopped.value.code) == (run.workflow_id, ErrorCode.gateway_shutdown)
            assert run.events[-1].type == "workflow_failed"
    finally:
        stop_server(server)
    assert "Traceback" not in server.log()
