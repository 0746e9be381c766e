"""``graphwire.mailbox.LocalMailbox``: who is away, what is kept, for how long, how much."""

from __future__ import annotations

from graphwire.mailbox import LocalMailbox

HOUR = 3600.0
DAY = 24 * HOUR


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def box(max_messages: int = 100, ttl: float = DAY) -> tuple[LocalMailbox, Clock]:
    clock = Clock()
    return LocalMailbox(max_messages, ttl, clock), clock


async def test_away_for_an_hour_the_mail_waits_and_after_the_ttl_it_is_gone() -> None:
    mailbox, clock = box()
    await mailbox.joined("ann", "ops")
    assert await mailbox.to_group("ops", '{"n":1}') == 1
    clock.now += HOUR
    assert [(letter.mail_seq, letter.message) for letter in await mailbox.opened("ann")] == [(1, '{"n":1}')]
    await mailbox.closed("ann")
    clock.now += DAY  # a day after it was kept
    assert await mailbox.opened("ann") == []


async def test_only_members_who_are_away_get_a_group_alert() -> None:
    mailbox, _ = box()
    for user in ("ann", "bob", "cid"):
        await mailbox.joined(user, "ops")
    await mailbox.opened("bob")  # here: gets it live
    await mailbox.left("cid", "ops")  # left on purpose
    assert await mailbox.to_group("ops", "{}") == 1
    assert await mailbox.to_group("nobody", "{}") == 0
    assert len(await mailbox.opened("ann")) == 1
    assert await mailbox.opened("cid") == []


async def test_a_user_with_two_connections_is_away_only_when_both_closed() -> None:
    mailbox, _ = box()
    await mailbox.opened("ann")
    await mailbox.opened("ann")
    await mailbox.closed("ann")
    assert await mailbox.to_user("ann", "{}", if_away=True) is None
    await mailbox.closed("ann")
    letter = await mailbox.to_user("ann", "{}", if_away=True)
    assert letter is not None
    assert letter.mail_seq == 1


async def test_bounded_the_oldest_go_first_and_seqs_keep_growing() -> None:
    mailbox, _ = box(max_messages=3)
    for i in range(5):
        await mailbox.to_user("ann", str(i), if_away=False)
    assert [(letter.mail_seq, letter.message) for letter in await mailbox.opened("ann")] == [
        (3, "2"),
        (4, "3"),
        (5, "4"),
    ]


async def test_acknowledged_mail_is_not_delivered_again() -> None:
    mailbox, _ = box()
    for i in range(4):
        await mailbox.to_user("ann", str(i), if_away=False)
    await mailbox.ack("ann", 2)
    assert [letter.mail_seq for letter in await mailbox.opened("ann")] == [3, 4]
    await mailbox.ack("ann", 99)
    assert await mailbox.opened("ann") == []
    later = await mailbox.to_user("ann", "x", if_away=False)
    assert later is not None
    assert later.mail_seq == 5


async def test_one_key_one_mail() -> None:
    mailbox, _ = box()
    assert await mailbox.to_user("ann", "a", if_away=True, key="input:req_1") is not None
    assert await mailbox.to_user("ann", "a", if_away=True, key="input:req_1") is None
    assert await mailbox.to_user("ann", "b", if_away=True, key="input:req_2") is not None
    assert len(await mailbox.opened("ann")) == 2


async def test_members_who_never_came_back_are_forgotten_after_the_ttl() -> None:
    mailbox, clock = box(ttl=HOUR)
    await mailbox.joined("ann", "ops")
    clock.now += 2 * HOUR
    assert await mailbox.to_group("ops", "{}") == 0
