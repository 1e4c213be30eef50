"""Stale cards: a request superseded, expired or cancelled shows that state everywhere, with no live buttons."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from bot import messages as m
from bot.store import CANCELLED, EXPIRED, REQUESTED, SUBMITTED, SUPERSEDED
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ADELE, ALEX, BotUnderTest, Connector, User, action_id_of, card_of, card_text, verbs_in

SERIAL = "5CD0832TGL"  # NHS-CART3-01


async def request_card(bot: BotUnderTest, user: User = ALEX, target: str = SERIAL) -> tuple[dict[str, Any], str | None]:
    replies = await bot.say(user, f"deprovision {target}")
    assert replies and replies[-1].cards, [r.text for r in replies]
    return replies[-1].cards[0], replies[-1].activity_id


async def history_text(bot: BotUnderTest, user: User = ALEX, target: str = "") -> str:
    replies = await bot.say(user, f"history {target}".strip())
    assert replies[-1].cards, replies[-1].text
    return card_text(replies[-1].cards[0])


async def test_a_second_card_for_the_device_supersedes_the_first_in_place(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    first, first_message = await request_card(bot)
    second, _ = await request_card(bot)
    first_id, second_id = action_id_of(first), action_id_of(second)
    assert (await bot.action(first_id)).state == SUPERSEDED
    assert (await bot.action(second_id)).state == REQUESTED
    updated = await connector.wait_for(lambda c: c.updates(first_message))
    stale = updated[-1].cards[0]
    assert m.CARD_TITLE_SUPERSEDED in card_text(stale) and not verbs_in(stale)
    # The old card's button, clicked anyway, does nothing and says why.
    late = card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": first_id, "reason": "retiring_device"}))
    assert m.CARD_TITLE_SUPERSEDED in card_text(late) and not verbs_in(late)
    assert not sim.deprovision_posts()
    # The newest card still works.
    card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": second_id, "reason": "retiring_device"}))
    assert len(sim.deprovision_posts()) == 1
    text = await history_text(bot)
    assert m.state_label(SUPERSEDED) in text and m.state_label(SUBMITTED) in text
    assert m.state_label(REQUESTED) not in text
    events = [row["event"] async for row in bot.running.audit.rows()]
    assert events.count("superseded") == 1


async def test_another_persons_newer_request_supersedes_too(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    first, first_message = await request_card(bot, ADELE)
    await request_card(bot, ALEX)
    assert (await bot.action(action_id_of(first))).state == SUPERSEDED
    updated = await connector.wait_for(lambda c: c.updates(first_message))
    assert not verbs_in(updated[-1].cards[0])
    assert m.state_label(SUPERSEDED) in await history_text(bot, ADELE)


async def test_confirming_one_request_supersedes_the_devices_other_open_ones(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    # An older open request that creation did not replace (written before this rule, or a race between two
    # instances): confirming the other request for the device closes it and updates its card in place.
    card, message_id = await request_card(bot)
    store = bot.running.store
    current = await bot.action(action_id_of(card))
    other = dataclasses.replace(current, id=secrets.token_urlsafe(18), created_at=current.created_at - 1, version=1)
    await store.create(other)
    card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": current.id, "reason": "retiring_device"}))
    assert (await bot.action(other.id)).state == SUPERSEDED
    assert (await bot.action(current.id)).state == SUBMITTED
    updated = await connector.wait_for(lambda c: [u for u in c.updates(message_id) if not verbs_in(u.cards[0])])
    assert updated


async def test_expired_request_shows_expired_in_history_and_loses_its_buttons(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    card, message_id = await request_card(bot)
    action_id = action_id_of(card)
    await bot.running.store.update_fields(action_id, expires_at=0.0)
    # Before any sweep has run, history already tells the truth.
    text = await history_text(bot, target=SERIAL)
    assert m.state_label(EXPIRED) in text and m.state_label(REQUESTED) not in text
    counts = await bot.running.workflow.sweep()
    assert counts["expired"] == 1
    updated = await connector.wait_for(lambda c: c.updates(message_id))
    assert "Expired" in card_text(updated[-1].cards[0]) and not verbs_in(updated[-1].cards[0])
    assert m.state_label(EXPIRED) in await history_text(bot)


async def test_cancelled_request_shows_cancelled_in_history(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    card, message_id = await request_card(bot)
    action_id = action_id_of(card)
    done = card_of(await bot.click(ALEX, "deprovision.cancel", {"actionId": action_id}, reply_to=message_id))
    assert not verbs_in(done)
    assert (await bot.action(action_id)).state == CANCELLED
    text = await history_text(bot)
    assert m.state_label(CANCELLED) in text and m.state_label(REQUESTED) not in text


async def test_confirming_in_peer_mode_supersedes_the_devices_other_open_requests(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    card, _ = await request_card(bot)
    store = bot.running.store
    current = await bot.action(action_id_of(card))
    other = dataclasses.replace(current, id=secrets.token_urlsafe(18), created_at=current.created_at - 1, version=1)
    await store.create(other)
    waiting = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": current.id, "reason": "retiring_device"})
    )
    assert "Waiting for approval" in card_text(waiting)
    assert (await bot.action(other.id)).state == SUPERSEDED
    text = await history_text(bot)
    assert m.state_label(SUPERSEDED) in text and m.state_label(REQUESTED) not in text


async def test_two_requests_created_at_once_never_supersede_each_other(bot: BotUnderTest, sim: Simulator) -> None:
    # The older request's creation finishing late (another instance, a slow database) must not close the newer one.
    card, _ = await request_card(bot)
    store = bot.running.store
    older = await bot.action(action_id_of(card))
    newer = dataclasses.replace(older, id=secrets.token_urlsafe(18), created_at=older.created_at + 5, version=1)
    await store.create(newer)
    await bot.running.workflow.views.supersede_others(older)
    assert (await bot.action(newer.id)).state == REQUESTED
    await bot.running.workflow.views.supersede_others(newer)
    assert (await bot.action(older.id)).state == SUPERSEDED
