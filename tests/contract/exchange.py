"""One frame out, everything it caused back, judged against the spec.

``check_answer`` is the oracle shared by the live and the raw-frame fuzzers. Whatever a
client sends, the first message after it that is not an event of a run the client
already watched is the answer, and the spec says what that answer may be:

- a valid message gets, first, one of its operation's ``reply.messages`` or an ``error``
  whose code refuses a well-formed command (``unknown_run``, ``unknown_workflow``…), with
  ``reply_to`` = its ``id``; what follows belongs to the run that reply names;
- an invalid one gets exactly one ``error`` with a schema code (``invalid_json``,
  ``not_an_object``, ``unknown_type``, ``invalid_message``) and nothing else.
"""

from __future__ import annotations

from typing import Any

from contract.catalog import SCHEMA_CODES, SPEC, client_messages, refusal_codes
from contract.frames import frame_text, judge
from contract.known_gaps import known_gap
from contract.wire import STATS, WireClient
from graphwire_codegen import schema_validator
from harness import Server

__all__ = ["BY_TYPE", "REFUSALS", "UNIONS", "Sockets", "check_answer", "send_and_check", "send_text_and_check"]

UNIONS = {m.channel: schema_validator(SPEC, m.union) for m in client_messages(SPEC)}
BY_TYPE = {(m.channel, m.type): m for m in client_messages(SPEC)}
REFUSALS = refusal_codes()


def _check_reply_to(body: Any, reply: dict[str, Any]) -> None:
    command_id = body.get("id") if isinstance(body, dict) else None
    if isinstance(command_id, str) and 0 < len(command_id) <= 64:
        assert reply.get("reply_to") == command_id, f"the answer does not carry reply_to={command_id!r}: {reply}"
    else:
        assert "reply_to" not in reply, f"reply_to without a usable id: {reply}"


def check_answer(
    channel: str, text: str, body: Any, valid: bool, seen: list[dict[str, Any]], watched: set[str]
) -> None:
    """The oracle: what came back for one frame (``seen``, up to the barrier's pong) is what the spec promises."""
    # Events of runs the client already watched may interleave; everything else answers this frame.
    answers = [
        m
        for m in seen
        if not (
            "seq" in m and m["workflow_id"] in watched and not (m["type"] == "workflow_started" and "reply_to" in m)
        )
    ]
    assert answers, f"no answer to {text[:200]!r}"
    first, rest = answers[0], answers[1:]
    _check_reply_to(body, first)
    if not valid:
        assert first["type"] == "error", f"an invalid frame was accepted: {text[:300]!r} → {first}"
        assert first["code"] in SCHEMA_CODES, f"an invalid frame got a non-schema code: {text[:300]!r} → {first}"
        assert not rest, f"more than one answer to an invalid frame: {answers}"
        return
    message = BY_TYPE[(channel, body["type"])]
    assert first["type"] in message.replies | {"error"}, (
        f"{message.type} answered with {first['type']}, not one of {sorted(message.replies)} or error: {first}"
    )
    if first["type"] == "error":
        if first["code"] not in REFUSALS and known_gap(body, first) is None:
            raise AssertionError(f"a valid {message.type} got {first['code']}: {text[:300]!r} → {first}")
        assert not rest, f"more than one answer: {answers}"
        return
    for other in rest:
        assert "seq" in other, f"after {first['type']}, a second answer: {other}"
        assert other["workflow_id"] == first.get("workflow_id"), f"after {first['type']}, another run's event: {other}"


async def send_and_check(client: WireClient, body: Any) -> None:
    """Send one generated body (see ``frame_text``) and check its answer."""
    await send_text_and_check(client, frame_text(body))


async def send_text_and_check(client: WireClient, text: str) -> None:
    """Send one text frame on a socket with nothing in flight; check what comes back up to a barrier."""
    watched = client.view.attached
    valid, parsed = judge(text, UNIONS[client.channel])
    await client.send_text(text)
    seen = await client.barrier()
    check_answer(client.channel, text, parsed, valid, seen, watched)
    STATS.cases += 1


class Sockets:
    """One reusable socket per channel, for frames that must not change any state (invalid ones).

    A socket is dropped after any failure, so a shrink never reads another example's leftovers.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.open: dict[str, WireClient] = {}

    async def check(self, channel: str, body: Any) -> None:
        await self.check_text(channel, frame_text(body))

    async def check_text(self, channel: str, text: str) -> None:
        client = self.open.get(channel)
        if client is None:
            client = self.open[channel] = await WireClient.connect(self.server, channel)
        try:
            await send_text_and_check(client, text)
            assert not client.view.attached, "an invalid frame attached the socket to a run"
        except BaseException:
            del self.open[channel]
            await client.close()
            raise

    async def close(self) -> None:
        for client in self.open.values():
            await client.close()
        self.open.clear()
