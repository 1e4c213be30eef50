"""Least disclosure (graph-intune.md §16): a requester learns about a device only what Intune would show them.

A matrix over HTTP: demo users × commands × devices they can read, devices outside their scope and devices that
do not exist. Replies about an unreadable device must be *identical* to those about a nonexistent one (apart from
the typed text) and must carry none of its facts.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot import messages as m
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import (
    ADELE,
    ALEX,
    ISAIAH,
    LYNNE,
    PATTI,
    BotUnderTest,
    Captured,
    User,
    action_id_of,
    card_of,
    card_text,
)

NOWHERE = "NO-SUCH-DEVICE-42"
REASON = {"reason": "retiring_device"}


def row(sim: Simulator, name: str) -> dict[str, Any]:
    rows = [d for d in sim.state.devices.values() if d.get("deviceName") == name]
    assert len(rows) == 1, name
    return rows[0]


def facts_of(sim: Simulator, name: str) -> list[str]:
    """What must never reach someone who cannot read the device."""
    device = row(sim, name)
    values = [device.get("serialNumber"), device.get("enrollmentProfileName"), device.get("id")]
    user = sim.state.users.get(str(device.get("userId") or "")) if device.get("userId") else None
    if user:
        values += [user.get("displayName"), user.get("userPrincipalName")]
    if str(device.get("operatingSystem", "")).lower() not in ("chromeos", "chrome os"):
        values.append(device.get("operatingSystem"))
    return [str(v) for v in values if v]


def shown(replies: list[Captured]) -> str:
    return "\n".join([r.text for r in replies] + [card_text(c) for r in replies for c in r.cards])


async def only_not_found(bot: BotUnderTest, user: User, command: str, query: str) -> str:
    replies = await bot.say(user, f"{command} {query}")
    assert len(replies) == 1 and not replies[0].cards, (command, query, shown(replies))
    assert replies[0].text == m.not_found(query), (user.name, command, query, replies[0].text)
    return replies[0].text


@pytest.fixture
async def peer_bot(make_bot: BotFactory) -> BotUnderTest:
    return await make_bot(APPROVAL_MODE="peer")


async def _request_and_confirm(bot: BotUnderTest, user: User, serial: str) -> str:
    replies = await bot.say(user, f"deprovision {serial}")
    action_id = action_id_of(replies[-1].cards[0])
    await bot.click(user, "deprovision.confirm", {"actionId": action_id, **REASON}, reply_to=replies[-1].activity_id)
    return action_id


async def test_unreadable_and_nonexistent_devices_get_the_same_answer(peer_bot: BotUnderTest, sim: Simulator) -> None:
    bot = peer_bot
    # State to leak: a request waiting for approval and a device already deprovisioned through the bot (Alex).
    waiting = await _request_and_confirm(bot, ALEX, row(sim, "NHS-CART3-06")["serialNumber"])
    done = await _request_and_confirm(bot, ALEX, row(sim, "NHS-CART3-05")["serialNumber"])
    card_of(await bot.click(PATTI, "approval.approve", {"actionId": done}))
    assert len(sim.deprovision_posts()) == 1

    # Who cannot read what: Isaiah (Riverside scope group) sees no Northside device; Adele (Northside tag) no
    # Riverside device; Lynne (no role) nothing at all.
    outside: dict[str, list[str]] = {
        ISAIAH.name: ["NHS-CART3-02", "NHS-OFFICE-PC01", "NHS-CART3-05", "NHS-CART3-06", "O'Brien-Lab-01"],
        ADELE.name: ["RMS-LOANER-01", "RMS-TEACHER-LT01"],
        LYNNE.name: ["NHS-CART3-02", "RMS-LOANER-01", "NHS-OFFICE-PC01", "NHS-CART3-05"],
    }
    for user in (ISAIAH, ADELE, LYNNE):
        for command in ("deprovision", "status", "history"):
            await only_not_found(bot, user, command, NOWHERE)
        for name in outside[user.name]:
            device = row(sim, name)
            secrets = [*facts_of(sim, name), "Alex Wilber", "Windows", "already", "progress"]
            for query in (name, device["serialNumber"], device["id"], device.get("azureADDeviceId")):
                if not query:
                    continue
                for command in ("deprovision", "status", "history"):
                    text = await only_not_found(bot, user, command, str(query))
                    leaked = [s for s in secrets if s.lower() in text.lower() and s.lower() not in str(query).lower()]
                    assert not leaked, (user.name, command, query, leaked)

    # A name shared by two Northside devices: Isaiah is told nothing, Adele gets the choice.
    await only_not_found(bot, ISAIAH, "deprovision", "NHS-LIB-01")
    choice = (await bot.say(ADELE, "deprovision NHS-LIB-01"))[-1]
    assert choice.cards and "PF881HK3" in card_text(choice.cards[0])

    # pending: only requests the viewer may approve or made; Isaiah and Lynne see none of Alex's.
    for user in (ISAIAH, LYNNE):
        replies = await bot.say(user, "pending")
        assert replies[-1].text == m.pending_empty(), shown(replies)
    assert "NHS-CART3-06" in shown(await bot.say(ALEX, "pending"))  # his own
    assert "NHS-CART3-06" in shown(await bot.say(ADELE, "pending"))  # she may approve it

    # Invokes with a known action id from another chat: a neutral card, none of the request's facts.
    for user in (ISAIAH, LYNNE):
        for action_id in (waiting, done):
            for verb in ("deprovision.refresh", "deprovision.confirm", "approval.approve", "approval.reject"):
                card = card_of(await bot.click(user, verb, {"actionId": action_id, **REASON, "comment": "x"}))
                text = card_text(card)
                assert m.card_not_available() in text, (user.name, verb, text)
                assert "NHS-CART3" not in text and "Alex" not in text
    assert len(sim.deprovision_posts()) == 1


async def test_history_and_status_follow_read_scope(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot()
    serial = row(sim, "RMS-LOANER-03")["serialNumber"]
    replies = await bot.say(ISAIAH, f"deprovision {serial}")
    action_id = action_id_of(replies[-1].cards[0])
    await bot.click(ISAIAH, "deprovision.confirm", {"actionId": action_id, **REASON})
    # Readers of the device see the bot's record of it, with the requester's name.
    assert "Isaiah Langer" in shown(await bot.say(ALEX, f"history {serial}"))
    assert "Isaiah Langer" in shown(await bot.say(ALEX, f"status {serial}"))
    # Adele's tag does not cover Riverside: nothing.
    await only_not_found(bot, ADELE, "history", serial)
    await only_not_found(bot, ADELE, "status", serial)
    # Lynne may read no device at all: `history` (her own) is refused by name.
    replies = await bot.say(LYNNE, "history")
    assert replies[-1].text == m.denied_read("history")


async def test_reply_to_id_is_trusted_only_when_it_is_the_stored_message(make_bot: BotFactory) -> None:
    """The "which device?" card is replaced by the confirmation card at the message id the bot stored when it sent
    it; a forged ``replyToId`` on the click (any other message in the chat) is ignored."""
    bot = await make_bot()
    choice = (await bot.say(ALEX, "deprovision NHS-LIB-01"))[-1]
    assert choice.cards and choice.activity_id
    select = next(a for a in choice.cards[0]["actions"] if a["verb"] == "deprovision.select")
    card = card_of(await bot.click(ALEX, select["verb"], select["data"], reply_to="msg-forged-999"))
    action = await bot.action(action_id_of(card))
    assert action is not None and action.card_activity_id == choice.activity_id
    # An action card's stored id is never replaced by a click's replyToId either.
    await bot.click(ALEX, "deprovision.refresh", {"actionId": action.id}, reply_to="msg-forged-1000")
    again = await bot.action(action.id)
    assert again is not None and again.card_activity_id == choice.activity_id
    await bot.click(ALEX, "deprovision.cancel", {"actionId": action.id}, reply_to="msg-forged-1001")
    assert bot.connector.updates(choice.activity_id) and not bot.connector.updates("msg-forged-1001")
