"""The offline mailbox and run_resumed: the core's mailbox state, and the client over a fake transport.

Typed ``mail`` (alerts, input requests, direct messages), one coalesced ``ack_mail``
after the application has the mail, repeats after a reconnect skipped, an ack lost with
the socket or refused with ``mailbox_unavailable`` sent again, ``?client_id=`` on every
reconnect, and ``run_resumed`` as a typed, non-terminal run event.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from test_client_core import HELLO, error, frame, online, sent
from test_client_transport import TS, FakeSocket, FakeTransport, client_for, spin, started, token

from graphwire_client import GraphwireClient, Mailbox, MailboxUnavailable
from graphwire_client._client import MAIL_ACK_DELAY
from graphwire_client._core import MAX_UNAVAILABLE_RETRIES, ClientCore, repeatable
from graphwire_client._generated.messages import AckMail, Connected, DirectMessage, InputRequest, Mail, RunResumed
from graphwire_client._generated.messages import SystemAlert as SystemAlertModel
from graphwire_client._mail import MailboxState

CLIENT_ID = "cl_0123456789abcdef"


def alert(seq: int, text: str = "Disk almost full") -> dict[str, Any]:
    message = {"type": "system_alert", "group": "ops", "message": text, "level": "warning", "timestamp": TS}
    return {"type": "mail", "mail_seq": seq, "sent_at": TS, "message": message}


def direct(seq: int, data: dict[str, Any] | None = None, sender: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "direct_message", "data": data or {"text": "hi"}}
    if sender is not None:
        message["sender"] = sender
    return {"type": "mail", "mail_seq": seq, "sent_at": TS, "message": message}


def asked(seq: int) -> dict[str, Any]:
    message = {
        "type": "input_request",
        "workflow_id": "run_9",
        "seq": 4,
        "timestamp": TS,
        "node_id": "approve",
        "request_id": "req_9",
        "prompt": "Ship?",
        "options": ["yes", "no"],
    }
    return {"type": "mail", "mail_seq": seq, "sent_at": TS, "message": message}


def ack(reply_to: str) -> dict[str, Any]:
    return {"type": "ack", "reply_to": reply_to, "command": "ack_mail"}


def hand_out(core: ClientCore, text: str) -> list[Mail]:
    """Feed a frame and hand every mail it delivered to the application."""
    mails = []
    for delivery in core.receive_text(text).deliveries:
        if isinstance(delivery.message, Mail):
            assert delivery.mailbox is not None
            delivery.mailbox.handed_out(delivery.message.mail_seq, delivery.mail_generation)
            mails.append(delivery.message)
    return mails


# --- the core -------------------------------------------------------------------------------


def test_mail_is_parsed_into_the_typed_model_of_its_message() -> None:
    core = online()
    received = core.receive_text(frame(alert(1), asked(2), direct(3, sender="admin")))
    mails = [d.message for d in received.deliveries]
    assert all(isinstance(m, Mail) for m in mails)
    kinds = [type(m.message) for m in mails if isinstance(m, Mail)]
    assert kinds == [SystemAlertModel, InputRequest, DirectMessage]
    third = mails[2]
    assert isinstance(third, Mail)
    assert isinstance(third.message, DirectMessage)
    assert (third.message.sender, third.message.data) == ("admin", {"text": "hi"})


def test_one_ack_covers_a_burst_and_the_next_waits_for_its_answer() -> None:
    core = online()
    hand_out(core, frame(alert(1), alert(2), alert(3)))
    first = core.queue_mail_ack()
    assert first is not None
    assert core.queue_mail_ack() is None, "no second ack_mail while one is on the wire"
    hand_out(core, frame(alert(4)))
    hand_out(core, frame(direct(5)))
    assert core.queue_mail_ack() is None
    assert sent(core) == [{"type": "ack_mail", "id": first.id, "up_to": 3}]
    core.receive_text(frame(ack(first.id)))  # its answer queues the one for what came meanwhile
    (second,) = sent(core)
    assert (second["type"], second["up_to"]) == ("ack_mail", 5)
    core.receive_text(frame(ack(second["id"])))
    assert sent(core) == []
    assert core.queue_mail_ack() is None, "nothing left to acknowledge"


def test_nothing_is_acknowledged_before_the_application_has_it() -> None:
    core = online()
    received = core.receive_text(frame(alert(1), alert(2)))
    assert core.queue_mail_ack() is None
    first, second = received.deliveries
    assert second.mailbox is not None
    second.mailbox.handed_out(2, second.mail_generation)
    assert core.queue_mail_ack() is None, "mail 1 is not handed out yet: acking 2 would remove it"
    second.mailbox.handed_out(1, first.mail_generation)
    pending = core.queue_mail_ack()
    assert pending is not None
    assert isinstance(pending.message, AckMail)
    assert pending.message.up_to == 2


def test_a_mail_seq_delivered_again_after_a_reconnect_is_skipped() -> None:
    core = online()
    hand_out(core, frame(alert(1), alert(2)))
    core.connection_lost()  # before any ack: the server delivers 1 and 2 again
    core.connection_made(HELLO)
    again = hand_out(core, frame({**HELLO.model_dump(exclude_none=True)}, alert(1), alert(2), direct(3)))
    assert [m.mail_seq for m in again] == [3]


def test_an_ack_lost_with_the_socket_goes_again_after_the_reconnect() -> None:
    core = online()
    hand_out(core, frame(alert(1), alert(2)))
    pending = core.queue_mail_ack()
    assert pending is not None
    assert sent(core)[0]["up_to"] == 2
    core.connection_lost()
    core.connection_made(HELLO)
    (again,) = sent(core)
    assert (again["type"], again["up_to"]) == ("ack_mail", 2)
    core.receive_text(frame(ack(again["id"])))
    core.connection_lost()
    core.connection_made(HELLO)
    assert sent(core) == [], "an answered ack is not sent again"


def test_mailbox_unavailable_sends_the_same_ack_again_then_after_the_reconnect() -> None:
    assert repeatable(AckMail(type="ack_mail", up_to=1))
    core = online()
    hand_out(core, frame(alert(1)))
    pending = core.queue_mail_ack()
    (first,) = sent(core)
    for _ in range(MAX_UNAVAILABLE_RETRIES):
        received = core.receive_text(frame(error("mailbox_unavailable", first["id"], retry_after=0.5)))
        assert received.retry_after == 0.5
        assert received.deliveries == [], "the client handles it: the application sees no error"
        core.release_held()
        assert sent(core) == [first], "the same frame again"
    core.receive_text(frame(error("mailbox_unavailable", first["id"])))  # past its retries
    assert pending is not None
    assert isinstance(pending.error, MailboxUnavailable)
    assert sent(core) == []
    core.connection_lost()
    core.connection_made(HELLO)
    (again,) = sent(core)
    assert (again["type"], again["up_to"]) == ("ack_mail", 1)


def test_the_first_client_id_is_the_one_to_resume_and_a_callers_wins() -> None:
    core = ClientCore()
    assert core.resume_client_id is None
    core.receive_text(frame(HELLO.model_dump(exclude_none=True)))
    assert core.resume_client_id == "cl_1"
    core.receive_text(frame({**HELLO.model_dump(exclude_none=True), "client_id": "cl_2"}))
    assert core.resume_client_id == "cl_1", "kept for the life of the client"
    assert ClientCore(CLIENT_ID).resume_client_id == CLIENT_ID


def test_each_mailbox_is_tracked_on_its_own_and_a_user_keeps_one_across_client_ids() -> None:
    core = ClientCore()
    core.connection_made(
        Connected(type="connected", client_id="cl_1", protocol_version="1", max_message_size=4096, user="alice")
    )
    hand_out(core, frame(alert(1)))
    core.connection_lost()
    # With auth on the mailbox is the user's: another client id is the same mailbox.
    core.connection_made(
        Connected(type="connected", client_id="cl_2", protocol_version="1", max_message_size=4096, user="alice")
    )
    assert hand_out(core, frame(alert(1), alert(2)))[0].mail_seq == 2
    core.connection_lost()
    # Without auth a new client id (the server did not hand the old one over) is a new mailbox.
    core.connection_made(Connected(type="connected", client_id="cl_3", protocol_version="1", max_message_size=4096))
    assert [m.mail_seq for m in hand_out(core, frame(alert(1)))] == [1]


def test_a_mailbox_the_server_recreated_starts_again_from_its_first_seq() -> None:
    box = MailboxState("cl_1")
    for seq in (1, 2, 3):
        assert box.receive(seq)
        box.handed_out(seq, box.generation)
    box.acked = 3  # the server confirmed: it never sends 1..3 again
    assert box.receive(1), "a confirmed seq coming back is a new mailbox's mail"
    assert (box.seen, box.handled, box.generation) == (1, 0, 1)
    box.handed_out(2, 0)  # a mail of the old mailbox handed out late changes nothing
    assert box.handled == 0


# --- the client -----------------------------------------------------------------------------


class MailTransport(FakeTransport):
    """A FakeTransport that hands over the ``client_id`` asked for, and whose n-th socket
    sends ``waiting[n]`` right after its greeting (the waiting mail)."""

    def __init__(self, *waiting: list[dict[str, Any]]) -> None:
        super().__init__(greet=False)
        self.waiting = list(waiting)

    async def connect(self, url: str, **kwargs: Any) -> FakeSocket:
        socket = await super().connect(url, **kwargs)
        asked_for = dict(parse_qsl(urlsplit(url).query)).get("client_id")
        hello = {"type": "connected", "protocol_version": "1", "max_message_size": 1 << 20}
        socket.push({**hello, "client_id": asked_for or CLIENT_ID, "resumed": asked_for is not None})
        if self.waiting:
            socket.push(*self.waiting.pop(0))
        return socket


async def next_of(socket: FakeSocket, kind: str) -> dict[str, Any]:
    """The next frame of type ``kind`` the client writes on ``socket`` (others are skipped)."""
    while True:
        message = await socket.next()
        if message["type"] == kind:
            return message


def written(socket: FakeSocket, kind: str) -> list[dict[str, Any]]:
    """Every frame of type ``kind`` written on ``socket`` that the test has not read."""
    out = []
    while not socket.sent.empty():
        message = socket.sent.get_nowait()
        if message["type"] == kind:
            out.append(message)
    return out


async def test_waiting_mail_reaches_the_first_mailbox_typed_and_one_ack_covers_it() -> None:
    transport = MailTransport([alert(1), asked(2), direct(3, {"text": "hi"})])
    async with client_for(transport) as client:
        mailbox = client.mail()
        assert isinstance(mailbox, Mailbox)
        mails = [await anext(mailbox) for _ in range(3)]
        assert [m.mail_seq for m in mails] == [1, 2, 3]
        assert [m.message.type for m in mails] == ["system_alert", "input_request", "direct_message"]
        last = mails[2].message
        assert isinstance(last, DirectMessage)
        assert last.data == {"text": "hi"}
        socket = transport.sockets[0]
        ack_mail = await next_of(socket, "ack_mail")
        assert ack_mail["up_to"] == 3
        socket.push(ack(ack_mail["id"]))
        await asyncio.sleep(MAIL_ACK_DELAY * 3)
        assert written(socket, "ack_mail") == [], "one ack for the burst"


async def test_mail_not_yet_taken_is_not_acknowledged() -> None:
    transport = MailTransport([alert(1), alert(2)])
    async with client_for(transport) as client:
        mailbox = client.mail()
        assert (await anext(mailbox)).mail_seq == 1
        socket = transport.sockets[0]
        ack_mail = await next_of(socket, "ack_mail")
        assert ack_mail["up_to"] == 1
        socket.push(ack(ack_mail["id"]))
        await asyncio.sleep(MAIL_ACK_DELAY * 3)
        assert written(socket, "ack_mail") == []


async def test_handlers_get_typed_mail_and_the_ack_waits_for_async_handlers_to_finish() -> None:
    transport = FakeTransport()
    client = client_for(transport)
    seen: list[Mail] = []
    release = asyncio.Event()

    async def slow(mail: Mail) -> None:
        await release.wait()
        seen.append(mail)

    client.on("mail", slow)
    async with client:
        socket = transport.sockets[0]
        socket.push(alert(1), direct(2))
        await asyncio.sleep(MAIL_ACK_DELAY * 3)
        assert written(socket, "ack_mail") == [], "the handler has not finished"
        release.set()
        ack_mail = await next_of(socket, "ack_mail")
        assert ack_mail["up_to"] == 2
        socket.push(ack(ack_mail["id"]))
        assert [(m.mail_seq, type(m.message)) for m in seen] == [(1, SystemAlertModel), (2, DirectMessage)]


async def test_a_reconnect_delivers_the_rest_once_and_asks_for_the_first_client_id() -> None:
    # Socket 0 drops after mail 1 and 2 were handed out, before any ack reached the server.
    transport = MailTransport([alert(1), alert(2)], [alert(1), alert(2), direct(3)])
    async with client_for(transport) as client:
        mailbox = client.mail()
        assert [(await anext(mailbox)).mail_seq for _ in range(2)] == [1, 2]
        transport.sockets[0].drop()
        again = await transport.next_socket(1)
        assert (await anext(mailbox)).mail_seq == 3, "1 and 2 are not handed out twice"
        assert not mailbox._queue
        resent = await next_of(again, "ack_mail")
        assert resent["up_to"] == 2, "what was handled before the drop, at the resume"
        again.push(ack(resent["id"]))
        last = await next_of(again, "ack_mail")
        assert last["up_to"] == 3
        again.push(ack(last["id"]))
    urls = [url for url, _ in transport.calls]
    assert urls[0] == "ws://gateway.test/ws/workflow?batch=1"
    assert urls[1] == f"ws://gateway.test/ws/workflow?batch=1&client_id={CLIENT_ID}"


async def test_an_ack_that_got_no_answer_goes_again_after_the_reconnect() -> None:
    transport = MailTransport([alert(1)])
    async with client_for(transport) as client:
        mailbox = client.mail()
        await anext(mailbox)
        first = await next_of(transport.sockets[0], "ack_mail")
        transport.sockets[0].drop()  # its answer never comes
        socket = await transport.next_socket(1)
        again = await next_of(socket, "ack_mail")
        assert again["up_to"] == first["up_to"] == 1
        socket.push(ack(again["id"]))


async def test_mailbox_unavailable_past_its_retries_is_sent_again_after_the_reconnect() -> None:
    transport = MailTransport([alert(1)])
    async with client_for(transport) as client:
        await anext(client.mail())
        socket = transport.sockets[0]
        for _ in range(MAX_UNAVAILABLE_RETRIES + 1):
            ack_mail = await next_of(socket, "ack_mail")
            socket.push(error("mailbox_unavailable", ack_mail["id"], retry_after=0.001))
        await asyncio.sleep(0.05)
        assert written(socket, "ack_mail") == []
        socket.drop()
        socket = await transport.next_socket(1)
        again = await next_of(socket, "ack_mail")
        assert again["up_to"] == 1
        socket.push(ack(again["id"]))


async def test_a_client_id_given_is_asked_for_from_the_first_connection() -> None:
    transport = FakeTransport()
    async with client_for(transport, client_id=CLIENT_ID) as client:
        transport.sockets[0].drop()
        await transport.next_socket(1)
        await spin()
        assert client.state.value == "connected"
    assert [url for url, _ in transport.calls] == [f"ws://gateway.test/ws/workflow?batch=1&client_id={CLIENT_ID}"] * 2
    with pytest.raises(ValueError, match="client id"):
        GraphwireClient(client_id="alice")


async def test_mail_with_nobody_to_take_it_waits_for_client_mail_unacknowledged() -> None:
    transport = MailTransport([alert(1)])
    async with client_for(transport) as client:
        socket = transport.sockets[0]
        await asyncio.sleep(MAIL_ACK_DELAY * 3)
        assert written(socket, "ack_mail") == []
        async with client.mail() as mailbox:
            assert (await anext(mailbox)).mail_seq == 1
            ack_mail = await next_of(socket, "ack_mail")
            assert ack_mail["up_to"] == 1
            socket.push(ack(ack_mail["id"]))


async def test_close_acknowledges_what_was_handed_out_and_keeps_the_unread() -> None:
    transport = MailTransport([alert(1), alert(2)])
    client = client_for(transport)
    await client.connect()
    mailbox = client.mail()
    await anext(mailbox)
    socket = transport.sockets[0]

    async def answer() -> None:
        ack_mail = await next_of(socket, "ack_mail")
        assert ack_mail["up_to"] == 1, "2 was never read"
        socket.push(ack(ack_mail["id"]))

    answering = asyncio.create_task(answer())
    await client.close()  # at once: before the coalescing delay ran out
    await answering
    with pytest.raises(StopAsyncIteration):
        await anext(mailbox)


async def test_a_closed_mailbox_leaves_its_unread_mail_to_the_next_one() -> None:
    transport = MailTransport([alert(1), alert(2)])
    async with client_for(transport) as client:
        first = client.mail()
        assert (await anext(first)).mail_seq == 1
        await first.close()
        second = client.mail()
        assert (await anext(second)).mail_seq == 2
        socket = transport.sockets[0]
        up_to = 0
        while up_to < 2:  # 1 went when it was read; 2 only now
            ack_mail = await next_of(socket, "ack_mail")
            up_to = ack_mail["up_to"]
            socket.push(ack(ack_mail["id"]))


# --- run_resumed ----------------------------------------------------------------------------


def resumed(seq: int, from_seq: int) -> dict[str, Any]:
    return {"type": "run_resumed", "workflow_id": "r1", "seq": seq, "timestamp": TS, "from_seq": from_seq}


async def test_run_resumed_is_a_typed_run_event_and_the_run_goes_on() -> None:
    transport = FakeTransport()
    async with client_for(transport) as client:
        handled: list[RunResumed] = []
        client.on("run_resumed", handled.append)
        socket = transport.sockets[0]
        starting = asyncio.create_task(client.start_workflow("chat", {"message": "hi"}))
        socket.push(started((await socket.next())["id"]), token(2, "a"), resumed(3, 2), token(4, "b"))
        run = await starting
        events = []
        async for event in run:
            events.append(event)
            if event.seq == 4:
                break
        assert [e.type for e in events] == ["workflow_started", "token", "run_resumed", "token"]
        move = events[2]
        assert isinstance(move, RunResumed)
        assert move.from_seq == 2
        assert handled == [move]
        assert not run.done, "run_resumed is not terminal"
        assert run.last_seq == 4
