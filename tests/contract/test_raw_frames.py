"""Raw-frame fuzzing: bytes that are not the messages the spec describes.

Text that is not JSON, mutated frames, binary frames, invalid UTF-8 in text frames
(sent with ``send(..., text=True)``, which writes the bytes unchecked), deeply nested
JSON, huge numbers, duplicate keys, frames at ``max_message_size`` and one byte over,
and bursts sent without reading. For each: the gateway answers as the spec says (or
closes as RFC 6455 and ``CloseCode`` say), never leaks a traceback (every frame passes
``check_server_frame``), stays alive and healthy, and its RSS stays within the bound.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st

from contract.catalog import SPEC, client_messages
from contract.exchange import UNIONS, Sockets, send_text_and_check
from contract.frames import frame_text, judge
from contract.profiles import PROFILE, contract_settings
from contract.strategies import build_strategies
from contract.wire import STATS, GatewayProbe, WireClient, connected
from harness import Server

STRATEGIES = build_strategies()
CHANNELS = sorted({m.channel for m in client_messages(SPEC)})
CLOSE_CODES = frozenset(int(code) for code in SPEC["components"]["schemas"]["CloseCode"]["enum"])
INVALID_UTF8 = 1007  # RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection
FLOOD = {"bounded": 10_000, "fuzz": 100_000}[PROFILE]  # pings sent without reading


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop_runner:
        yield loop_runner


@pytest.fixture(scope="module")
def sockets(contract_server: Server, runner: asyncio.Runner) -> Iterator[Sockets]:
    pool = Sockets(contract_server)
    yield pool
    runner.run(pool.close())


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    """A valid message's JSON text with slices deleted, repeated, or replaced by random text."""
    key = draw(st.sampled_from(sorted(STRATEGIES.valid)))
    text: str = frame_text(draw(STRATEGIES.valid[key]))
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 8)))
        action = draw(st.sampled_from(["delete", "repeat", "replace", "truncate"]))
        if action == "delete":
            text = text[:start] + text[end:]
        elif action == "repeat":
            text = text[:end] + text[start:end] + text[end:]
        elif action == "replace":
            text = (
                text[:start]
                + draw(st.text(st.sampled_from('{}[]",:0123456789-.eE tnulfasr\\'), max_size=4))
                + text[end:]
            )
        else:
            text = text[:start]
    return text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

TEXT_FRAMES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda data: data.decode("latin-1")),
    JSON_VALUES.map(json.dumps),
    mutated_frames(),
)


async def _check_text(server: Server, sockets: Sockets, channel: str, text: str) -> None:
    valid, _ = judge(text, UNIONS[channel])
    if valid:  # a valid command changes state: give it a socket of its own
        async with connected(server, channel) as client:
            await send_text_and_check(client, text)
    else:
        await sockets.check_text(channel, text)


@contract_settings()
@given(channel=st.sampled_from(CHANNELS), text=TEXT_FRAMES)
def test_arbitrary_text_frames_get_one_spec_answer(
    contract_server: Server, probe: GatewayProbe, runner: asyncio.Runner, sockets: Sockets, channel: str, text: str
) -> None:
    runner.run(_check_text(contract_server, sockets, channel, text))
    probe.check()


async def _check_binary(sockets: Sockets, channel: str, data: bytes) -> None:
    client = sockets.open.get(channel) or await WireClient.connect(sockets.server, channel)
    sockets.open[channel] = client
    await client.send_binary(data)
    seen = await client.barrier()
    assert [(m["type"], m.get("code"), "reply_to" in m) for m in seen] == [("error", "binary_not_supported", False)]


@contract_settings(0.5)
@given(channel=st.sampled_from(CHANNELS), data=st.binary(max_size=2048))
def test_binary_frames_get_binary_not_supported(
    probe: GatewayProbe, runner: asyncio.Runner, sockets: Sockets, channel: str, data: bytes
) -> None:
    runner.run(_check_binary(sockets, channel, data))
    probe.check()


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


async def _close_code(client: WireClient) -> int | None:
    """Read until the server closes; its close code (None: dropped without a close frame)."""
    try:
        while True:
            await client.recv(timeout=10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def _expect_close(client: WireClient, code: int) -> None:
    assert await _close_code(client) == code


async def _check_invalid_utf8(server: Server, channel: str, data: bytes) -> None:
    async with connected(server, channel) as client:
        await client.send_raw_text(data)
        await _expect_close(client, INVALID_UTF8)


@contract_settings(0.1)
@given(channel=st.sampled_from(CHANNELS), data=st.binary(min_size=1, max_size=256).filter(_not_utf8))
def test_invalid_utf8_text_frame_fails_the_connection_only(
    contract_server: Server, probe: GatewayProbe, runner: asyncio.Runner, channel: str, data: bytes
) -> None:
    runner.run(_check_invalid_utf8(contract_server, channel, data))
    probe.check()


def _nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def _nested_in_message(depth: int) -> str:
    return '{"type": "start_workflow", "workflow": "tick", "params": {"n": ' + _nested_array(depth) + "}}"


def _nested_objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


ODD_FRAMES = [
    # deeply nested JSON, at and around the parsers' limits
    *[_nested_array(d) for d in (1, 100, 255, 1023, 1024, 1025, 100_000)],
    *[_nested_objects(d) for d in (100, 255, 1024, 1025, 50_000)],
    *[_nested_in_message(d) for d in (10, 199, 200, 254, 1022, 5000)],
    # huge and odd numbers
    '{"type": "ping", "id": "n", "x": 1e400}',
    '{"type": "ping", "id": "n", "x": -1e400}',
    '{"type": "ping", "id": "n", "x": 1' + "0" * 5000 + "}",
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": 1' + "0" * 400 + "}",
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": 1e400}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": 1e-400}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": -0}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": 1E2}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": 0.5}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": NaN}',
    '{"type": "subscribe", "id": "n", "workflow_id": "w", "since_seq": Infinity}',
    '{"type": "start_workflow", "id": "n", "workflow": "data_processing", "params": {"data": [1e308, 1e308]}}',
    '{"type": "start_workflow", "id": "n", "workflow": "data_processing", "params": {"data": [1' + "0" * 400 + "]}}",
    '{"type": "start_workflow", "id": "n", "workflow": "tick", "params": {"count": 1e400}}',
    # duplicate keys (the last one wins, as in every mainstream parser)
    '{"type": "ping", "type": "ping", "id": "d"}',
    '{"type": "bogus", "type": "ping", "id": "d"}',
    '{"type": "ping", "type": "bogus", "id": "d"}',
    '{"type": "ping", "id": "first", "id": "second"}',
    '{"type": "ping", "id": "d", "id": 5}',
    '{"type": "join_group", "group": "a", "group": "", "id": "d"}',
    # strings the parsers disagree on
    '{"type": "ping", "id": "\\ud800"}',
    '{"type": "ping", "id": "\\u0000"}',
    '{"type": "ping", "id": "\\uDBFF\\uDFFF"}',
    '{"type": "ping"}\x00',
    '{"type": "ping"} {"type": "ping"}',
    "\ufeff" + '{"type": "ping"}',
    " \t\r\n" + '{"type": "ping"}' + " \t\r\n",
    "",
    "null",
    "true",
    '"ping"',
    "[]",
    "{}",
]


@pytest.mark.parametrize("text", ODD_FRAMES, ids=lambda t: repr(t[:40]) + (f"…{len(t)}" if len(t) > 40 else ""))
async def test_odd_frames_get_one_spec_answer(contract_server: Server, probe: GatewayProbe, text: str) -> None:
    async with connected(contract_server) as client:
        await send_text_and_check(client, text)
        cancel = [w for w in client.view.attached if w not in client.view.terminal]
        for wid in cancel:
            await client.request({"type": "cancel_workflow", "workflow_id": wid})
    probe.check()


async def _close_code_after_sending(server: Server, payload: str | bytes | list[str]) -> int | None:
    async with connected(server) as client:
        STATS.frames_sent += 1
        try:
            await client.ws.send(payload)
        except websockets.ConnectionClosed as closed:  # closed while the frame was still going out
            return closed.rcvd.code if closed.rcvd is not None else None
        return await _close_code(client)


async def test_frames_at_max_message_size(contract_server: Server, probe: GatewayProbe) -> None:
    """``connected.max_message_size`` bytes pass; one byte more closes with 1009 (CloseCode.message_too_big).

    Every time: the gateway's socket layer (``graphwire.transport``) half-closes after the
    1009 and reads the rest of the frame away, so the kernel never resets the connection
    under the close frame. Each oversize frame is sent three times.
    """
    async with connected(contract_server) as client:
        limit = client.hello["max_message_size"]
        head, tail = '{"type": "ping", "id": "max", "pad": "', '"}'
        exact = head + "x" * (limit - len(head) - len(tail)) + tail
        assert len(exact.encode()) == limit
        await send_text_and_check(client, exact)  # an error (unknown field `pad`), not a close
        await send_text_and_check(client, "é" * (limit // 2))  # 2-byte characters: exactly the limit in UTF-8
        await client.send_binary(b"\x00" * limit)
        assert [m["code"] for m in await client.barrier()] == ["binary_not_supported"]
    for over in (
        "x" * (limit + 1),
        "é" * (limit // 2) + "x",
        b"\x00" * (limit + 1),
        ["x" * (limit // 2), "x" * (limit // 2 + 1)],
    ):
        codes = [await _close_code_after_sending(contract_server, over) for _ in range(3)]
        assert codes == [1009, 1009, 1009], f"closed with {codes} (None: reset, no close frame)"
        probe.check()
    assert 1009 in CLOSE_CODES


async def test_burst_without_reading_gets_every_answer_in_order(contract_server: Server, probe: GatewayProbe) -> None:
    """2,000 frames sent back to back, then read: one answer each, in order, nothing lost."""
    async with connected(contract_server, query="?batch=1") as client:
        kinds = ["ping", "bad_json", "unknown", "join"]
        for i in range(2000):
            kind = kinds[i % len(kinds)]
            if kind == "ping":
                await client.send_json({"type": "ping", "id": f"b{i}"})
            elif kind == "bad_json":
                await client.send_text('{"type": "ping", "id": "b' + str(i) + '"')
            elif kind == "unknown":
                await client.send_json({"type": "nope", "id": f"b{i}"})
            else:
                await client.send_json({"type": "join_group", "id": f"b{i}", "group": f"g{i % 7}"})
        answers = await client.barrier(timeout=60)
        expected = [f"b{i}" for i in range(2000) if kinds[i % len(kinds)] != "bad_json"]
        assert [m.get("reply_to") for m in answers if "reply_to" in m] == expected
        assert len(answers) == 2000
    probe.check()


async def test_burst_never_read_is_bounded(contract_server: Server, probe: GatewayProbe) -> None:
    """A client that sends and does not read (its transport paused) gets everything once it
    reads again, or is closed with 1013 (CloseCode.try_again_later); nothing else, and the
    gateway's memory stays bounded either way. It stops after 10 s, well within the
    gateway's keepalive (a client that answers no ping for 20 s is dropped, rightly)."""
    sent, answered, code = 0, 0, None
    async with connected(contract_server) as client:
        frame = json.dumps({"type": "ping", "id": "flood"})
        client.ws.transport.pause_reading()
        deadline = asyncio.get_running_loop().time() + 10
        try:
            for _ in range(FLOOD):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.wait_for(client.send_text(frame), 10)
                sent += 1
            client.ws.transport.resume_reading()
            answered = len(await client.barrier(timeout=120))
        except websockets.ConnectionClosed:
            client.ws.transport.resume_reading()
            code = await _close_code(client)
    if code is None:
        assert answered == sent
    else:
        assert code == 1013, f"closed with {code}, not 1013 (try again later)"
        assert code in CLOSE_CODES
    probe.check()
    async with connected(contract_server) as again:  # the gateway takes new clients at once
        await again.barrier()


async def test_memory_stays_bounded_under_large_frames(contract_server: Server, probe: GatewayProbe) -> None:
    """Forty frames of just under a megabyte, each refused; the gateway's RSS stays within the bound."""
    async with connected(contract_server) as client:
        limit = client.hello["max_message_size"]
        big = json.dumps({"type": "start_workflow", "workflow": "nope", "params": {"blob": "y" * (limit - 200)}})
        for i in range(40):
            await client.send_text(big)
            if i % 10 == 9:
                assert {m.get("code") for m in await client.barrier()} == {"unknown_workflow"}
    probe.check()
