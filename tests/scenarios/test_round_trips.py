"""Graph round trips per flow, over HTTP (issue 18): counts are deterministic, unlike times, so they are asserted.

One table, :data:`EXPECTED`, holds today's numbers — the regression guard. Each flow runs on the real app against
the simulator with a warm role catalogue (fetched once before counting, as in a running bot) on a device the bot
has not seen before (its Entra device object is not cached yet). A round trip is a top-level HTTP request to
Graph (a ``$batch`` counts once), counted twice, independently: the bot's ``GraphClient.stats.calls`` and the
simulator's own log (``Simulator.round_trips()``); both must agree.

When a change makes a flow cheaper, lower its number here (and say so in the commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from simulator import Simulator
from tests.harness import ADELE, ALEX, ISAIAH, BotUnderTest, User, action_id_of, card_of, card_text

#: Graph round trips per flow (warm role catalogue, a device new to the bot).
EXPECTED: dict[str, int] = {
    # deprovision <device> → confirmation card, by the requester's kind of role assignment
    # one $batch: the exact lookup + the requester's memberships and Entra roles (role catalogue cached)
    "message, tenant-wide role": 1,
    "message, tag-scoped role": 1,
    # … a device scope group: the device's Entra object id (cached after), then its group memberships
    "message, scope-group role": 3,
    # the requester's Confirm click: fresh device + role re-check ($batch), then the deprovision POST
    "confirm": 2,
    # lookup + requester facts ($batch), then Intune's record: device details and its audit events, side by side
    "status": 3,
    # lookup + requester facts ($batch)
    "history of a device": 1,
    # may the requester read devices at all, then which of their requests' devices they can still read
    "history of my requests": 2,
    "pending, one request I may approve": 1,
    "approve (peer mode)": 2,
}

NHS_CART = "5CD0832TGL"  # NHS-CART3-01: Northside High (tag 1)
RMS_LOANER = "NXHQEAA500959207600"  # RMS-LOANER-01: in Isaiah's scope group (through its Entra device object)


async def counted(bot: BotUnderTest, sim: Simulator, work: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    """Round trips spent by ``work`` and by the background work it started (a submission's Graph call)."""
    assert bot.services is not None
    graph, workflow = bot.services.graph, bot.services.workflow
    await workflow.drain()
    client, server = graph.stats.calls, len(sim.round_trips())
    result = await work()
    await workflow.drain()
    seen = sim.round_trips()[server:]
    assert graph.stats.calls - client == len(seen), (graph.stats.calls - client, [c.path for c in seen])
    return len(seen), result


@pytest.fixture
def ready(make_bot: Any) -> Callable[..., Awaitable[BotUnderTest]]:
    """The bot with its role catalogue fetched (as in a bot that has been running)."""

    async def factory(**env: Any) -> BotUnderTest:
        bot = await make_bot(**env)
        assert bot.services is not None
        await bot.services.rbac.catalog()
        return bot

    return factory


async def request_card(bot: BotUnderTest, user: User, serial: str, **kw: Any) -> tuple[str, str | None]:
    replies = await bot.say(user, f"deprovision {serial}", **kw)
    cards = [r for r in replies if r.cards]
    assert cards, [r.text for r in replies]
    return action_id_of(cards[-1].cards[0]), cards[-1].activity_id


@pytest.mark.parametrize(
    ("flow", "user", "serial"),
    [
        ("message, tenant-wide role", ALEX, NHS_CART),
        ("message, tag-scoped role", ADELE, NHS_CART),
        ("message, scope-group role", ISAIAH, RMS_LOANER),
    ],
)
async def test_message_turn(ready: Any, sim: Simulator, flow: str, user: User, serial: str) -> None:
    bot = await ready()
    spent, _ = await counted(bot, sim, lambda: request_card(bot, user, serial))
    assert spent == EXPECTED[flow]


async def test_confirm_turn(ready: Any, sim: Simulator) -> None:
    bot = await ready()
    action_id, message_id = await request_card(bot, ALEX, NHS_CART)
    data = {"actionId": action_id, "reason": "retiring_device"}
    spent, _ = await counted(bot, sim, lambda: bot.click(ALEX, "deprovision.confirm", data, reply_to=message_id))
    assert len(sim.deprovision_posts()) == 1
    assert spent == EXPECTED["confirm"]


@pytest.mark.parametrize(
    ("flow", "text"),
    [
        ("status", f"status {NHS_CART}"),
        ("history of a device", f"history {NHS_CART}"),
        ("history of my requests", "history"),
    ],
)
async def test_status_and_history(ready: Any, sim: Simulator, flow: str, text: str) -> None:
    bot = await ready()
    await request_card(bot, ALEX, NHS_CART)  # something for history to show
    spent, replies = await counted(bot, sim, lambda: bot.say(ALEX, text))
    assert replies and replies[-1].cards, [r.text for r in replies]
    assert spent == EXPECTED[flow]


async def confirmed_by_adele(bot: BotUnderTest) -> str:
    action_id, message_id = await request_card(bot, ADELE, NHS_CART, conversation_type="groupChat")
    data = {"actionId": action_id, "reason": "retiring_device"}
    answer = await bot.click(ADELE, "deprovision.confirm", data, reply_to=message_id, conversation_type="groupChat")
    assert "Waiting for approval" in card_text(card_of(answer))
    return action_id


async def test_pending(ready: Any, sim: Simulator) -> None:
    bot = await ready(APPROVAL_MODE="peer")
    await confirmed_by_adele(bot)
    spent, replies = await counted(bot, sim, lambda: bot.say(ALEX, "pending"))
    assert replies and replies[-1].cards, [r.text for r in replies]
    assert spent == EXPECTED["pending, one request I may approve"]


async def test_approve(ready: Any, sim: Simulator) -> None:
    bot = await ready(APPROVAL_MODE="peer")
    action_id = await confirmed_by_adele(bot)
    data = {"actionId": action_id}
    spent, _ = await counted(bot, sim, lambda: bot.click(ALEX, "approval.approve", data, conversation_type="groupChat"))
    assert len(sim.deprovision_posts()) == 1
    assert spent == EXPECTED["approve (peer mode)"]
