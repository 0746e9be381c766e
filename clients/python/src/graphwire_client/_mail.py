"""The offline mailbox: what a client has of it (``MailboxState``), and ``Mailbox``, its mail as an async iterator.

The server keeps ``mail`` for a user (with auth on, the token's ``sub``; without, the
client id) until ``ack_mail {up_to}``; what is not acknowledged comes again on the next
connection. So the client acknowledges only what it handed to the application, and
skips the repeats a reconnect brings (the ack was lost with the socket): every mail is
handed out once per client object, and each mail the server holds still reaches the
application even when the connection drops mid-delivery.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from graphwire_client._generated.messages import Mail
from graphwire_client.exceptions import GraphwireError

__all__ = ["MailClaim", "Mailbox", "MailboxState"]


@dataclass(eq=False)
class MailboxState:
    """One mailbox (``owner``: a user, or a client id) as this client knows it, across connections (sans-I/O)."""

    owner: str
    seen: int = 0
    """The highest ``mail_seq`` received; one at or below it is a repeat and is skipped."""
    handled: int = 0
    """Every mail received up to this ``mail_seq`` was handed to the application: the next ``up_to``."""
    acked: int = 0
    """The server answered ``ack_mail`` up to here."""
    acking: str | None = None
    """The id of the ``ack_mail`` waiting for its answer (at most one: later ones coalesce)."""
    generation: int = 0
    """Bumped when the server's mailbox turns out to be a new one (``mail_seq`` started again)."""
    # Received, not yet folded into ``handled``, in arrival (= mail_seq) order: seq -> handed out.
    _open: dict[int, bool] = field(default_factory=dict)

    def receive(self, mail_seq: int) -> bool:
        """Take a delivered ``mail_seq``: True if it is new, False for a repeat."""
        if mail_seq <= self.acked:
            # The server removes acknowledged mail for good: a seq it confirmed coming back
            # means its mailbox was recreated (a gateway without Redis restarted), from 1.
            self.seen = self.handled = self.acked = 0
            self._open.clear()
            self.generation += 1
        elif mail_seq <= self.seen:
            return False
        self.seen = mail_seq
        self._open[mail_seq] = False
        return True

    def handed_out(self, mail_seq: int, generation: int) -> None:
        """The application has ``mail_seq``; ``handled`` moves over every mail received before it that it has too."""
        if generation != self.generation or mail_seq not in self._open:
            return
        self._open[mail_seq] = True
        while self._open:
            first, done = next(iter(self._open.items()))
            if not done:
                return
            del self._open[first]
            self.handled = max(self.handled, first)

    @property
    def ack_due(self) -> bool:
        """Mail was handled that the server was not told of, and no ``ack_mail`` is on the wire."""
        return self.acking is None and self.handled > self.acked


class MailClaim:
    """One mail on its way to the application: it is handled once every consumer let go of it.

    A consumer is the ``on("mail")`` handlers (until they returned; ``async def`` ones
    until they finished), a ``client.mail()`` iterator (until the application took the
    mail, or the iterator dropped it: its buffer was full), or the client's backlog of
    mail nobody took yet (until a ``client.mail()`` takes it over).
    """

    def __init__(self, mail: Mail, on_handled: Callable[[MailClaim], None]) -> None:
        self.mail = mail
        self._holders = 0
        self._on_handled = on_handled

    def hold(self) -> None:
        self._holders += 1

    def release(self) -> None:
        self._holders -= 1
        if self._holders == 0:
            self._on_handled(self)


class Mailbox:
    """``client.mail()``: the user's ``mail`` as an async iterator, in ``mail_seq`` order.

    ``async for mail in mailbox`` waits for the next one. Taking a mail from the iterator
    hands it to the application: the client then acknowledges it (``ack_mail``, one for
    a burst). The first mailbox opened also gets the mail that came before it (waiting
    mail arrives right after ``connected``, before ``connect()`` returns). Iteration ends
    after ``close()``; its unread mail is kept for the next ``client.mail()``, unless
    another mailbox has it too. At most ``buffer`` unread mails are kept; older ones are
    dropped (counted in ``dropped``) and acknowledged with the rest, as if read.
    """

    def __init__(self, on_close: Callable[[Mailbox, list[MailClaim]], None], buffer: int = 1000) -> None:
        self.dropped = 0
        self._queue: deque[MailClaim] = deque()
        self._buffer = buffer
        self._on_close = on_close
        self._closed = False
        self._failure: GraphwireError | None = None
        self._wakeup = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Mailbox unread={len(self._queue)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def _push(self, claim: MailClaim, *, held: bool = False) -> None:
        """Queue a mail; ``held``: the claim's hold is handed over (from the client's backlog)."""
        if not held:
            claim.hold()
        if len(self._queue) >= self._buffer:
            self._queue.popleft().release()
            self.dropped += 1
        self._queue.append(claim)
        self._wakeup.set()

    def _end(self, failure: GraphwireError | None = None) -> list[MailClaim]:
        """No more mail: iteration ends (or raises ``failure``); returns the unread, still held."""
        self._failure = failure
        self._closed = True
        self._wakeup.set()
        unread = list(self._queue)
        self._queue.clear()
        return unread

    def __aiter__(self) -> Mailbox:
        return self

    async def __anext__(self) -> Mail:
        while not self._queue:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        claim = self._queue.popleft()
        claim.release()
        return claim.mail

    async def close(self) -> None:
        """Stop receiving mail here."""
        if not self._closed:
            self._on_close(self, self._end())

    async def __aenter__(self) -> Mailbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
