"""Between the mailbox and the sockets: who is here, what to keep, what to hand over.

``graphwire.mailbox`` stores mail; this module decides what is addressed to whom (see
the mailbox's docstring) and delivers it as ``mail`` frames: what waits, right after
``connected``; direct mail at once to every connection of its user, on every gateway
(through the broker's ``mail`` channel). Nothing here blocks a socket's reading: Redis
calls run in the background, bounded by ``redis_timeout``, and a failure is logged and
never loses what is already kept.
"""

from __future__ import annotations

import asyncio
import logging
import typing
from datetime import UTC, datetime
from typing import Any

import orjson

from graphwire._generated.messages import DirectMessage, Mail
from graphwire.broker import Broker
from graphwire.connections import Connection
from graphwire.mailbox import MAIL, Letter, LocalMailbox, Mailbox, MailboxUnavailable
from graphwire.protocol import encode
from graphwire.settings import Settings
from graphwire.tasks import stop

log = logging.getLogger(__name__)


def addressee(conn: Connection) -> str:
    """Whose mail a connection gets: the token's ``sub``, or without auth its client id."""
    return conn.principal.sub if conn.principal is not None else conn.client_id


def mail_frame(letter: Letter) -> str:
    message: Any = orjson.loads(letter.message)
    return encode(
        Mail(
            type="mail",
            mail_seq=letter.mail_seq,
            sent_at=datetime.fromtimestamp(letter.sent_at, UTC),
            message=message,
        )
    )


class PostOffice:
    def __init__(self, settings: Settings, broker: Broker) -> None:
        self.broker = broker
        self.mailbox: Mailbox = broker.mailbox or LocalMailbox(
            settings.mailbox_max_messages, settings.mailbox_ttl_seconds
        )
        self._here: dict[str, set[Connection]] = {}
        # Connections whose presence the mailbox counted (a failed count is not undone).
        self._present: set[Connection] = set()
        self._arriving: dict[Connection, asyncio.Task[None]] = {}
        # mail_seqs already sent on a connection: waiting mail and a direct push may cross.
        self._sent: dict[Connection, set[int]] = {}
        # Direct mail pushed while a connection's waiting mail is still being read: sent after
        # it, in mail_seq order (clients skip a mail_seq below one they already have).
        self._held: dict[Connection, list[tuple[int, str]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    async def start(self) -> None:
        await self.mailbox.start()

    async def close(self) -> None:
        await stop(list(self._tasks))
        await self.mailbox.close()

    def _spawn(self, work: typing.Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, what: str, work: typing.Awaitable[Any]) -> Any:
        try:
            return await work
        except MailboxUnavailable as exc:
            self.failures += 1
            log.warning("the mailbox could not %s: %s", what, exc)
        return None

    # -- connections ---------------------------------------------------------------------

    def arrived(self, conn: Connection) -> None:
        """After ``connected``: count the user as here, then hand over what waits."""
        user = addressee(conn)
        self._here.setdefault(user, set()).add(conn)
        self._sent[conn] = set()
        task = asyncio.get_running_loop().create_task(self._arrive(conn, user))
        self._arriving[conn] = task
        task.add_done_callback(lambda _: self._arriving.pop(conn, None))

    async def _arrive(self, conn: Connection, user: str) -> None:
        self._held[conn] = []
        try:
            letters = await self._quietly("read a mailbox", self._open(conn, user))
        finally:
            held = self._held.pop(conn, [])
        frames = {letter.mail_seq: mail_frame(letter) for letter in letters or ()}
        frames.update(held)
        for seq in sorted(frames):
            self._push(conn, seq, frames[seq])

    async def _open(self, conn: Connection, user: str) -> list[Letter]:
        letters = await self.mailbox.opened(user)
        self._present.add(conn)
        return letters

    async def departed(self, conn: Connection) -> None:
        """The connection closed: the user is away once their last one has."""
        user = addressee(conn)
        arriving = self._arriving.pop(conn, None)
        if arriving is not None:
            await stop([arriving])
        conns = self._here.get(user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._here[user]
        self._sent.pop(conn, None)
        self._held.pop(conn, None)
        if conn in self._present:
            self._present.discard(conn)
            self._spawn(self._quietly("count a departure", self.mailbox.closed(user)))

    def joined(self, conn: Connection, group: str) -> None:
        self._spawn(self._quietly("remember a group member", self.mailbox.joined(addressee(conn), group)))

    def left(self, conn: Connection, group: str) -> None:
        self._spawn(self._quietly("forget a group member", self.mailbox.left(addressee(conn), group)))

    def ack_at_once(self, conn: Connection, up_to: int) -> bool:
        """Acknowledge in memory, without waiting; False when the mailbox is in Redis (use ``ack``)."""
        if not isinstance(self.mailbox, LocalMailbox):
            return False
        self.mailbox.drop(addressee(conn), up_to)
        return True

    async def ack(self, conn: Connection, up_to: int) -> None:
        """Raises ``MailboxUnavailable``: the caller answers ``mailbox_unavailable``."""
        await self.mailbox.ack(addressee(conn), up_to)

    # -- what is addressed to users -------------------------------------------------------

    async def alert(self, group: str, frame: str) -> int:
        """A group's ``system_alert``: kept for its members who are away; how many."""
        kept = await self._quietly("keep a group alert", self.mailbox.to_group(group, frame))
        return int(kept or 0)

    def input_requested(self, user: str, frame: str, request_id: str) -> None:
        """An ``input_request`` of ``user``'s run: kept if they are away (once per request)."""
        self._spawn(
            self._quietly(
                "keep an input request", self.mailbox.to_user(user, frame, if_away=True, key=f"input:{request_id}")
            )
        )

    async def send(self, user: str, data: dict[str, Any], sender: str | None) -> tuple[Letter, int]:
        """``POST /api/send``: always kept; handed at once to the user's connections everywhere.

        Returns the letter and how many of this gateway's connections got it. Raises
        ``MailboxUnavailable``.
        """
        message = encode(DirectMessage(type="direct_message", data=data, sender=sender))
        letter = await self.mailbox.to_user(user, message, if_away=False)
        assert letter is not None  # a direct message is always kept
        frame = mail_frame(letter)
        if self.broker.shared:
            self.broker.send(MAIL, orjson.dumps([user, letter.mail_seq, frame]).decode())
        return letter, self._hand(user, letter.mail_seq, frame)

    def deliver_remote(self, payload: str) -> None:
        """Direct mail another gateway kept: to this gateway's connections of its user."""
        user, seq, frame = orjson.loads(payload)
        self._hand(user, seq, frame)

    def _hand(self, user: str, seq: int, frame: str) -> int:
        delivered = 0
        for conn in self._here.get(user, ()):
            held = self._held.get(conn)
            if held is not None:
                held.append((seq, frame))
                delivered += 1
            elif self._push(conn, seq, frame):
                delivered += 1
        return delivered

    def _push(self, conn: Connection, seq: int, frame: str) -> bool:
        sent = self._sent.get(conn)
        if sent is None or seq in sent or conn.closed:
            return False
        sent.add(seq)
        conn.enqueue(frame)
        return True
