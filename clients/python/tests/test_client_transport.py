"""The asyncio client over a scripted in-memory ``Transport``: states, reconnects, giving up."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from graphwire_client import (
    ClientClosed,
    ConnectionLost,
    ConnectionRejected,
    ConnectionState,
    GatewayShutdown,
    GraphwireClient,
    HandshakeRefused,
    InputClosed,
    InputRejected,
    ReconnectPolicy,
    Run,
    StateChange,
    TransportClosed,
)
from graphwire_client.messages import RunStatus, Token

TS = "2026-11-25T12:00:00+00:00"
FAST = ReconnectPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)


class FakeSocket:
    """The server side is the test: it reads ``sent`` and feeds ``push``."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | TransportClosed] = asyncio.Queue()
        self.sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = False

    async def send(self, text: str) -> None:
        if self.closed:
            raise TransportClosed(None)
        self.sent.put_nowait(json.loads(text))

    async def recv(self) -> str:
        item = await self.incoming.get()
        if isinstance(item, TransportClosed):
            self.closed = True
            raise item
        return item

    async def close(self) -> None:
        self.closed = True

    def push(self, *messages: dict[str, Any]) -> None:
        for message in messages:
            self.incoming.put_nowait(json.dumps(message))

    def drop(self, code: int | None = None) -> None:
        self.incoming.put_nowait(TransportClosed(code))

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.sent.get(), 2)


class FakeTransport:
    """Accepts while ``accepting``; each accepted socket greets with ``connected``."""

    def __init__(self, greet: bool = True) -> None:
        self.accepting = True
        self.refusal: HandshakeRefused | None = None
        """Raised instead of opening, while set (a gateway answering the handshake with 503)."""
        self.greet = greet
        self.attempts = 0
        self.attempted_at: list[float] = []
        self.sockets: list[FakeSocket] = []
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.opened = asyncio.Event()

    async def connect(self, url: str, *, headers: Mapping[str, str], open_timeout: float) -> FakeSocket:
        self.attempts += 1
        self.attempted_at.append(asyncio.get_running_loop().time())
        self.calls.append((url, dict(headers)))
        if self.refusal is not None:
            raise self.refusal
        if not self.accepting:
            raise OSError("connection refused")
        socket = FakeSocket()
        if self.greet:
            socket.push(
                {
                    "type": "connected",
                    "client_id": f"cl_{len(self.sockets)}",
                    "protocol_version": "1",
                    "max_message_size": 1 << 20,
                }
            )
        self.sockets.append(socket)
        self.opened.set()
        return socket

    async def next_socket(self, index: int) -> FakeSocket:
        while len(self.sockets) <= index:
            self.opened.clear()
            await asyncio.wait_for(self.opened.wait(), 2)
        return self.sockets[index]


def client_for(transport: FakeTransport, **kwargs: Any) -> GraphwireClient:
    return GraphwireClient("ws://gateway.test/ws/workflow", reconnect=FAST, transport=transport, **kwargs)


def started(reply_to: str) -> dict[str, Any]:
    return {
        "type": "workflow_started",
        "workflow_id": "r1",
        "seq": 1,
        "timestamp": TS,
        "workflow": "chat",
        "reply_to": reply_to,
    }


def token(seq: int, text: str) -> dict[str, Any]:
    return {"type": "token", "workflow_id": "r1", "seq": seq, "timestamp": TS, "node_id": "respond", "data": text}


async def read_into(run: Run[Any], seen: list[str]) -> None:
    async for event in run:
        seen.append(event.type)


async def test_state_goes_disconnected_connecting_connected_and_back_after_a_drop() -> None:
    transport = FakeTransport()
    client = client_for(transport)
    changes: list[StateChange] = []
    client.on("state", changes.append)
    assert client.state is ConnectionState.disconnected
    async with client:
        assert client.state is ConnectionState.connected
        assert client.client_id == "cl_0"
        transport.sockets[0].drop()
        await transport.next_socket(1)
        while client.state is not ConnectionState.connected:
            await asyncio.sleep(0.001)
        assert client.client_id == "cl_1"
    pairs = [(c.old_state.value, c.new_state.value) for c in changes]
    assert pairs == [
        ("disconnected", "connecting"),
        ("connecting", "connected"),
        ("connected", "connecting"),
        ("connecting", "connected"),
        ("connected", "disconnected"),
    ]
    assert isinstance(changes[2].error, TransportClosed)


async def test_a_command_sent_while_reconnecting_goes_out_on_the_next_connection() -> None:
    transport = FakeTransport()
    patient = ReconnectPolicy(max_attempts=1000, base_delay=0.001, max_delay=0.002)
    async with GraphwireClient("ws://gateway.test/ws/workflow", reconnect=patient, transport=transport) as client:
        transport.accepting = False
        transport.sockets[0].drop()
        ping = asyncio.create_task(client.commands.ping())
        while transport.attempts < 3:  # refused twice while the ping waits
            await asyncio.sleep(0.001)
        transport.accepting = True
        socket = await transport.next_socket(1)
        sent = await socket.next()
        assert sent["type"] == "ping"
        socket.push({"type": "pong", "reply_to": sent["id"], "timestamp": TS})
        assert (await ping).type == "pong"


async def test_giving_up_after_max_attempts_raises_connection_lost() -> None:
    transport = FakeTransport()
    transport.accepting = False
    client = client_for(transport)
    with pytest.raises(ConnectionLost) as info:
        await client.connect()
    assert transport.attempts == FAST.max_attempts == info.value.attempts
    assert isinstance(info.value.__cause__, OSError)
    assert client.state is ConnectionState.disconnected


async def test_a_run_being_read_raises_connection_lost_when_the_client_gives_up() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        start = await socket.next()
        assert start["params"] == {"message": "hi"}
        socket.push(started(start["id"]), token(2, "Hel"))
        run = await starting
        seen: list[str] = []
        transport.accepting = False
        socket.drop()
        with pytest.raises(ConnectionLost):
            await read_into(run, seen)
        assert seen == ["workflow_started", "token"]
        with pytest.raises(ConnectionLost):
            await run.result()
        with pytest.raises(ConnectionLost):
            await client.ping()
        assert transport.attempts == 1 + FAST.max_attempts


async def test_a_refused_handshake_waits_its_retry_after_before_the_next_attempt() -> None:
    transport = FakeTransport()
    transport.refusal = HandshakeRefused(503, retry_after=0.2)
    policy = ReconnectPolicy(max_attempts=10, base_delay=0.001, max_delay=0.01)
    client = GraphwireClient("ws://gateway.test/ws/workflow", reconnect=policy, transport=transport)
    connecting = asyncio.create_task(client.connect())
    # The first attempt (at once) and two retries are refused; the third retry connects.
    while transport.attempts < 3:
        await asyncio.sleep(0.01)
    transport.refusal = None
    await asyncio.wait_for(connecting, 2)
    await client.close()
    at = transport.attempted_at
    gaps = [later - earlier for earlier, later in itertools.pairwise(at)]
    assert len(gaps) >= 3
    assert min(gaps) >= 0.2, gaps


async def test_a_run_the_gateway_stopped_raises_gateway_shutdown() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        socket.push(started((await socket.next())["id"]))
        run = await starting
        error = {"code": "gateway_shutdown", "message": "the gateway stopped while the run was in flight"}
        socket.push({"type": "workflow_failed", "workflow_id": "r1", "seq": 2, "timestamp": TS, "error": error})
        socket.drop(1012)
        with pytest.raises(GatewayShutdown) as stopped:
            await run.result()
        assert (stopped.value.workflow_id, stopped.value.code.value) == ("r1", "gateway_shutdown")


async def test_respond_goes_again_identical_after_a_drop_and_returns_once_acked() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("approval", {"message": "ok?"}))
        socket.push(started((await socket.next())["id"]))
        run = await starting
        answering = asyncio.create_task(run.respond("req_1", "yes", node_id="approve"))
        first = await socket.next()
        assert first["type"] == "node_input"
        socket.drop()
        again = await transport.next_socket(1)
        resubscribe, repeat = await again.next(), await again.next()
        assert (resubscribe["type"], resubscribe["since_seq"]) == ("subscribe", 1)
        assert repeat == first
        assert not answering.done()
        again.push({"type": "ack", "reply_to": repeat["id"], "command": "node_input", "workflow_id": "r1"})
        await asyncio.wait_for(answering, 2)


def input_request(seq: int) -> dict[str, Any]:
    return {
        "type": "input_request",
        "workflow_id": "r1",
        "seq": seq,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": "req_1",
        "prompt": "ok?",
        "options": ["yes", "no"],
    }


def input_closed(seq: int, reason: str = "timeout") -> dict[str, Any]:
    return {
        "type": "input_closed",
        "workflow_id": "r1",
        "seq": seq,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": "req_1",
        "reason": reason,
    }


async def test_a_respond_waiting_across_a_drop_ends_with_input_closed_and_status_leaves_waiting() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("approval", {"message": "ok?"}))
        socket.push(started((await socket.next())["id"]))
        run = await starting
        socket.push(input_request(2))
        while not run.pending_inputs:
            await asyncio.sleep(0)
        assert run.status is RunStatus.waiting
        answering = asyncio.create_task(run.respond("req_1", "yes"))
        first = await socket.next()
        assert first["type"] == "node_input"
        socket.drop()
        again = await transport.next_socket(1)
        resubscribe, repeat = await again.next(), await again.next()
        assert repeat == first
        # The resume replays the close: nobody answered in time, our copy never landed.
        snapshot = {"workflow_id": "r1", "workflow": "approval", "status": "running", "last_seq": 3}
        again.push(
            {
                "type": "subscribed",
                "reply_to": resubscribe["id"],
                "topics": [],
                "workflow_id": "r1",
                "since_seq": 2,
                "snapshot": {**snapshot, "pending_inputs": []},
            },
            input_closed(3),
        )
        with pytest.raises(InputClosed) as closed:
            await asyncio.wait_for(answering, 2)
        assert (closed.value.request_id, closed.value.reason.value, closed.value.code.value) == (
            "req_1",
            "timeout",
            "unknown_request",
        )
        assert run.pending_inputs == []
        assert run.status is RunStatus.running
        # The gateway's refusal of the re-sent copy reaches no handler as a stray error.
        errors: list[Any] = []
        client.on("error", errors.append)
        again.push({"type": "error", "code": "unknown_request", "message": "closed", "reply_to": repeat["id"]})
        # Answering it again fails at once, typed, without a frame.
        with pytest.raises(InputRejected) as again_closed:
            await run.respond("req_1", "no")
        assert isinstance(again_closed.value, InputClosed)
        pinging = asyncio.create_task(client.ping())
        ping = await again.next()
        assert ping["type"] == "ping", "no node_input went out for the closed request"
        again.push({"type": "pong", "reply_to": ping["id"], "timestamp": TS})
        await asyncio.wait_for(pinging, 2)
        assert errors == []


def subscribed(reply_to: str, since: int, last: int, **extra: Any) -> dict[str, Any]:
    snapshot = {"workflow_id": "r1", "workflow": "approval", "status": "running", "last_seq": last}
    return {
        "type": "subscribed",
        "reply_to": reply_to,
        "topics": [],
        "workflow_id": "r1",
        "since_seq": since,
        "snapshot": {**snapshot, "pending_inputs": extra.pop("pending_inputs", [])},
        **extra,
    }


async def test_a_resume_names_the_epoch_and_a_recreated_log_rebuilds_the_run_from_its_snapshot() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        attaching = asyncio.create_task(client.attach("r1"))
        attach = await socket.next()
        assert "epoch" not in attach
        pending = [{"request_id": "req_1", "node_id": "approve", "prompt": "ok?", "options": ["yes", "no"]}]
        first = {**started(attach["id"]), "workflow": "approval"}
        first.pop("reply_to")
        socket.push(
            subscribed(attach["id"], 0, 2, epoch="e1", recovered=True, first_seq=1, pending_inputs=pending),
            first,
            input_request(2),
        )
        run = await attaching
        seen: list[int] = []
        reading = asyncio.create_task(read_seqs(run, seen))
        while run.last_seq < 2:
            await asyncio.sleep(0)
        assert (run.recovered, [p.request_id for p in run.pending_inputs]) == (True, ["req_1"])
        socket.drop()
        again = await transport.next_socket(1)
        resume = await again.next()
        assert (resume["type"], resume["since_seq"], resume["epoch"]) == ("subscribe", 2, "e1")
        # Redis lost the log and the owner recreated it: another epoch, the whole log again,
        # and meanwhile the request was answered (the snapshot lists no open input).
        answered = {**input_request(3), "type": "input_answered", "data": {"value": "no"}}
        del answered["prompt"], answered["options"]
        again.push(
            subscribed(resume["id"], 0, 4, epoch="e2", recovered=False, log_truncated=False, first_seq=1),
            first,
            input_request(2),
            answered,
            token(4, "hi"),
        )
        while run.last_seq < 4:
            await asyncio.sleep(0)
        assert not run.recovered
        assert not run.truncated
        assert run.pending_inputs == []
        assert [e.seq for e in run.events] == [1, 2, 3, 4]
        await asyncio.wait_for(until(lambda: len(seen) >= 4), 2)
        assert seen == [1, 2, 3, 4], "each seq yielded once"
        again.drop()
        resume = await (await transport.next_socket(2)).next()
        assert resume["epoch"] == "e2", "the next resume names the recreated log"
        reading.cancel()


async def test_a_started_run_names_the_epoch_of_its_workflow_started_on_its_first_resume() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        socket.push({**started((await socket.next())["id"]), "epoch": "e1"}, token(2, "Hel"))
        run = await starting
        await asyncio.wait_for(until(lambda: run.last_seq >= 2), 2)
        socket.drop()
        again = await transport.next_socket(1)
        resume = await again.next()
        assert (resume["type"], resume["since_seq"], resume["epoch"]) == ("subscribe", 2, "e1")
        # The log was recreated meanwhile: the subscribed names the new epoch, the newest.
        again.push(subscribed(resume["id"], 0, 2, epoch="e2", recovered=False, first_seq=1))
        await asyncio.wait_for(until(lambda: not run.recovered), 2)
        again.drop()
        resume = await (await transport.next_socket(2)).next()
        assert resume["epoch"] == "e2"


async def read_seqs(run: Run[Any], seen: list[int]) -> None:
    async for event in run:
        seen.append(event.seq)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)


async def test_an_answer_the_owner_did_not_confirm_goes_again_and_returns_once_acked() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("approval", {"message": "ok?"}))
        socket.push(started((await socket.next())["id"]))
        run = await starting
        answering = asyncio.create_task(run.respond("req_1", "yes", node_id="approve"))
        first = await socket.next()
        unavailable = "the gateway running 'r1' did not answer in time (TimeoutError); send it again"
        socket.push({"type": "error", "code": "run_unavailable", "message": unavailable, "reply_to": first["id"]})
        repeat = await socket.next()  # after the default wait (the frame names no retry_after)
        assert repeat == first, "the same frame: same id, same idempotency_key"
        assert not answering.done()
        socket.push({"type": "ack", "reply_to": repeat["id"], "command": "node_input", "workflow_id": "r1"})
        await asyncio.wait_for(answering, 2)


@pytest.mark.parametrize("code", [4001, 4003, 1008, 1009])
async def test_a_close_code_that_retrying_cannot_fix_ends_the_client(code: int) -> None:
    transport = FakeTransport(greet=False)
    client = client_for(transport)
    connecting = asyncio.create_task(client.connect())
    (await transport.next_socket(0)).drop(code)
    with pytest.raises(ConnectionRejected) as info:
        await connecting
    assert info.value.close_code == code
    assert transport.attempts == 1


async def test_other_close_codes_reconnect() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        transport.sockets[0].drop(1012)  # service restart
        ping = asyncio.create_task(client.ping())
        socket = await transport.next_socket(1)
        sent = await socket.next()
        socket.push({"type": "pong", "reply_to": sent["id"], "timestamp": TS})
        assert await ping >= 0


async def test_handlers_get_typed_events_and_a_failing_handler_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    transport = FakeTransport()
    tokens: list[str] = []
    everything: list[str] = []
    async_seen: list[int] = []

    async def slow(event: Token) -> None:
        await asyncio.sleep(0)
        async_seen.append(event.seq)

    def broken(event: Token) -> None:
        raise RuntimeError("handler bug")

    async with client_for(transport) as client:
        client.on("token", lambda event: tokens.append(event.data))
        client.on("token", slow)
        client.on("token", broken)
        remove = client.on("*", lambda event: everything.append(event.type))
        with pytest.raises(ValueError, match="unknown event type"):
            client.on("tokens", lambda event: None)  # type: ignore[call-overload]
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        start = await socket.next()
        with caplog.at_level(logging.ERROR, logger="graphwire_client"):
            socket.push(started(start["id"]), token(2, "a"), token(2, "a"), token(3, "b"))
            run = await starting
            while run.last_seq < 3:
                await client._wait_run(run._state)
            remove()
            socket.push(token(4, "c"))
            while run.last_seq < 4:
                await client._wait_run(run._state)
            await asyncio.sleep(0.01)
    assert tokens == ["a", "b", "c"], "each run event once, in seq order"
    assert async_seen == [2, 3, 4]
    assert everything == ["workflow_started", "token", "token"]
    assert "handler bug" in caplog.text


async def test_close_fails_what_waits_and_later_calls() -> None:
    transport = FakeTransport()
    client = client_for(transport)
    await client.connect()
    ping = asyncio.create_task(client.commands.ping())
    await transport.sockets[0].next()
    await client.close()
    with pytest.raises(ClientClosed):
        await ping
    with pytest.raises(ClientClosed):
        await client.ping()
    with pytest.raises(ClientClosed):
        await client.connect()


async def test_the_token_goes_in_the_authorization_header() -> None:
    transport = FakeTransport()
    async with client_for(transport, token="s3cret"):
        pass
    ((_, headers),) = transport.calls
    assert headers == {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("url", "batch", "expected"),
    [
        ("ws://gateway.test/ws/workflow", None, "ws://gateway.test/ws/workflow?batch=1"),
        ("ws://gateway.test/ws/workflow", True, "ws://gateway.test/ws/workflow?batch=1"),
        ("ws://gateway.test/ws/workflow", False, "ws://gateway.test/ws/workflow?batch=0"),
        (
            "ws://g.test/ws/workflow?token=t%2B1&x=1&x=2&e=",
            None,
            "ws://g.test/ws/workflow?token=t%2B1&x=1&x=2&e=&batch=1",
        ),
        ("ws://g.test/ws/workflow?batch=1&token=t", False, "ws://g.test/ws/workflow?token=t&batch=0"),
        ("ws://g.test/ws/workflow?batch=0", None, "ws://g.test/ws/workflow?batch=1"),
    ],
)
async def test_batching_is_asked_for_by_default_and_not_with_batch_false(
    url: str, batch: bool | None, expected: str
) -> None:
    transport = FakeTransport()
    kwargs = {} if batch is None else {"batch": batch}
    async with GraphwireClient(url, reconnect=FAST, transport=transport, **kwargs) as client:
        assert client.url == url, "the client's url stays the one it was given"
    ((connected_to, _),) = transport.calls
    assert connected_to == expected


def completed(seq: int) -> dict[str, Any]:
    return {"type": "workflow_completed", "workflow_id": "r1", "seq": seq, "timestamp": TS, "data": {"reply": "abc"}}


async def start_chat(client: GraphwireClient, socket: FakeSocket) -> tuple[Run[Any], str]:
    starting = asyncio.create_task(client.workflows.chat.start(message="hi"))
    start = await socket.next()
    socket.push(started(start["id"]))
    return await starting, start["id"]


async def spin(turns: int = 50) -> None:
    """Let every ready task run a few times (no time passes)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_result_returns_only_after_every_async_handler_finished_in_event_order() -> None:
    transport = FakeTransport()
    gate = asyncio.Event()
    finished: list[tuple[str, int]] = []

    async def on_token(event: Token) -> None:
        await gate.wait()  # the first token's handler holds every later one back
        finished.append(("token", event.seq))

    async def on_any(event: Any) -> None:
        await asyncio.sleep(0)
        finished.append(("*", getattr(event, "seq", 0)))

    async with client_for(transport) as client:
        client.on("token", on_token)
        client.on("*", on_any)
        socket = transport.sockets[0]
        run, _ = await start_chat(client, socket)
        socket.push(token(2, "a"), token(3, "b"), token(4, "c"), completed(5))
        result = asyncio.create_task(run.result())
        while not run.done:
            await client._wait_run(run._state)
        await spin()
        assert not result.done(), "result() came back while token handlers were still waiting"
        gate.set()
        assert (await asyncio.wait_for(result, 2)).reply == "abc"
        expected = [("*", 1)] + [p for seq in (2, 3, 4) for p in (("token", seq), ("*", seq))] + [("*", 5)]
        assert finished == expected, "every handler done, one at a time, in seq order"


async def test_handlers_that_await_the_result_or_close_the_client_do_not_deadlock() -> None:
    transport = FakeTransport()
    seen: list[str] = []

    async with client_for(transport) as client:
        socket = transport.sockets[0]
        run, _ = await start_chat(client, socket)

        async def waits_for_the_end(event: Token) -> None:  # blocks the handler task until the run ends
            seen.append(f"token {(await run.result()).reply}")

        async def at_the_end(event: Any) -> None:
            await run.wait()
            seen.append(f"completed {(await run.result()).reply}")

        client.on("token", waits_for_the_end)
        client.on("workflow_completed", at_the_end)
        socket.push(token(2, "a"), token(3, "b"))
        await spin()
        socket.push(completed(4))
        assert (await asyncio.wait_for(run.result(), 2)).reply == "abc"
        assert seen == ["token abc", "token abc", "completed abc"]

    closer_transport = FakeTransport()
    client = client_for(closer_transport)
    closed = asyncio.Event()

    async def close_from_a_handler(event: Token) -> None:
        await client.close()
        closed.set()

    client.on("token", close_from_a_handler)
    await client.connect()
    run, _ = await start_chat(client, closer_transport.sockets[0])
    closer_transport.sockets[0].push(token(2, "a"), token(3, "b"))
    await asyncio.wait_for(closed.wait(), 2)
    with pytest.raises(ClientClosed):
        await asyncio.wait_for(run.result(), 2)


async def test_a_slow_handler_delays_result_but_not_the_events(caplog: pytest.LogCaptureFixture) -> None:
    transport = FakeTransport()
    release = asyncio.Event()
    done: list[int] = []

    async def slow(event: Token) -> None:
        await release.wait()
        done.append(event.seq)
        if event.seq == 3:
            raise RuntimeError("handler bug")

    async with client_for(transport) as client:
        client.on("token", slow)
        socket = transport.sockets[0]
        run, _ = await start_chat(client, socket)
        socket.push(token(2, "a"), token(3, "b"), token(4, "c"), completed(5))
        seen = [event.seq async for event in run]  # the reader is not held back by the handler
        assert seen == [1, 2, 3, 4, 5]
        assert done == []
        release.set()
        with caplog.at_level(logging.ERROR, logger="graphwire_client"):
            await asyncio.wait_for(run.result(), 2)
        assert done == [2, 3, 4], "a handler that raised does not stop the later ones"
        assert "handler bug" in caplog.text
