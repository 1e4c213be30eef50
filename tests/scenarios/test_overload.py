"""Overload (issue 18): beyond MAX_CONCURRENT_TURNS a turn waits briefly for a slot, then gets a clear "busy"
answer — a message a reply, a card click an invoke response — without touching Graph or the store."""

from __future__ import annotations

import asyncio

from bot import messages as m
from bot.overload import QUEUE_WAIT
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, LYNNE, MEGAN, BotUnderTest

SERIAL = "5CD0832TGL"  # NHS-CART3-01


async def wait_until_full(bot: BotUnderTest) -> None:
    assert bot.services is not None
    for _ in range(500):
        if bot.services.turns.full:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first turn never took its slot")


async def test_beyond_the_cap_turns_are_answered_busy(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(MAX_CONCURRENT_TURNS="1")
    assert bot.services is not None
    await bot.services.rbac.catalog()
    # Every Graph call now takes 2.5 s: the first turn (two round trips) holds the only slot for at least 5 s.
    sim.control.latency = 2.5
    slow = asyncio.create_task(bot.say(ALEX, f"deprovision {SERIAL}"))
    await wait_until_full(bot)
    loop = asyncio.get_running_loop()
    started = loop.time()
    said, clicked = await asyncio.gather(
        bot.say(LYNNE, "help"),
        bot.click(MEGAN, "deprovision.confirm", {"actionId": "x" * 24, "reason": "retiring_device"}),
    )
    waited = loop.time() - started
    assert [r.text for r in said] == [m.busy()]
    assert clicked == {"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": m.busy()}
    assert QUEUE_WAIT <= waited < 2 * QUEUE_WAIT + 1.5  # queued briefly, then answered at once
    assert not slow.done()
    assert bot.services.turns.refused == 2
    sim.control.latency = 0.0
    replies = await slow
    assert replies[-1].cards  # the admitted turn was not disturbed
    events = [row["event"] async for row in bot.services.audit.rows()]
    assert events == ["requested"]  # the refused turns wrote nothing
    # The slot is free again: the next turn is served normally.
    assert (await bot.say(LYNNE, "help"))[-1].cards
    assert bot.services.turns.refused == 2


async def test_within_the_cap_turns_queue_instead_of_being_refused(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(MAX_CONCURRENT_TURNS="1")
    assert bot.services is not None
    sim.control.latency = 0.05  # a status turn takes four round trips: ~0.2 s, well within the 1 s queue wait
    replies = await asyncio.gather(*(bot.say(ALEX, f"status {SERIAL}") for _ in range(2)))
    sim.control.latency = 0.0
    assert all(r[-1].cards for r in replies), [[x.text for x in r] for r in replies]
    assert bot.services.turns.refused == 0
