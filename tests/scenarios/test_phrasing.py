"""How a new helpdesk user types: forgiving around the command, exact about the device, one answer per message."""

from __future__ import annotations

import pytest

from bot import messages as m
from simulator import Simulator
from tests.harness import ADELE, ALEX, ISAIAH, LYNNE, BotUnderTest, card_of, card_text, verbs_in


@pytest.mark.parametrize(
    ("text", "device"),
    [
        ("Deprovision nhs-cart3-02 please", "NHS-CART3-02"),
        ("can you deprovision RMS-LOANER-01?", "RMS-LOANER-01"),
        ("Could you please deprovision RMS-LOANER-01, thanks", "RMS-LOANER-01"),
        ("pls deprovision NHS-CART3-02!", "NHS-CART3-02"),
        ("DEPROVISION: nhs-cart3-02.", "NHS-CART3-02"),
        ("deprovision NHS-CART3-02 reason: retiring please", "NHS-CART3-02"),
    ],
)
async def test_polite_phrasings_reach_the_normal_confirmation(
    bot: BotUnderTest, sim: Simulator, text: str, device: str
) -> None:
    replies = await bot.say(ALEX, text)
    assert len(replies) == 1 and replies[0].cards, [r.text for r in replies]
    card = replies[0].cards[0]
    assert device in card_text(card)
    assert verbs_in(card) == ["deprovision.confirm", "deprovision.cancel"]
    assert not sim.deprovision_posts()


async def test_the_mention_may_stand_anywhere_in_a_channel(bot: BotUnderTest) -> None:
    for text in (
        "deprovision <at>Device Deprovision</at> NHS-CART3-02 please",
        "can you deprovision NHS-CART3-02 <at>Device Deprovision</at>?",
    ):
        replies = await bot.say(ALEX, text, conversation_type="groupChat", mention=False)
        assert replies[-1].cards and "NHS-CART3-02" in card_text(replies[-1].cards[0]), text


async def test_help_is_one_card_with_a_text_fallback(bot: BotUnderTest) -> None:
    for text in ("help", "Help!", "hi", "?"):
        replies = await bot.say(ALEX, text)
        assert len(replies) == 1, text
        assert replies[0].cards and not replies[0].body.get("text"), text
        assert replies[0].cards[0].get("fallbackText")


async def test_unknown_text_gets_one_answer_not_the_help_twice(bot: BotUnderTest, sim: Simulator) -> None:
    replies = await bot.say(ALEX, "make me a sandwich")
    assert len(replies) == 1 and not replies[0].cards
    assert "didn't understand" in replies[0].text and "deprovision \\<device\\>" in replies[0].text
    assert not [c for c in sim.calls if "managedDevices" in c.path]


async def test_a_mistyped_command_gets_a_suggestion(bot: BotUnderTest, sim: Simulator) -> None:
    replies = await bot.say(ALEX, "deprovison NHS-CART3-01")
    assert len(replies) == 1
    assert "Did you mean `deprovision NHS-CART3-01`?" in replies[0].text
    assert "Did you mean `status NHS-CART3-01`?" in (await bot.say(ALEX, "stauts NHS-CART3-01"))[-1].text
    assert not sim.deprovision_posts()


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("status", "status"),
        ("Status?", "status"),
        ("deprovision", "deprovision"),
        ("please deprovision!", "deprovision"),
    ],
)
async def test_usage_names_the_command_typed(bot: BotUnderTest, text: str, command: str) -> None:
    reply = (await bot.say(ALEX, text))[-1].text
    assert reply == m.usage("empty", command)
    assert f"**{command} \\<device\\>**" in reply
    other = "deprovision" if command == "status" else "status"
    assert f"**{other}" not in reply


async def test_denial_names_the_command_typed(bot: BotUnderTest) -> None:
    for text in ("history", "History please", "can you show history?"):
        reply = (await bot.say(LYNNE, text))[-1].text
        assert "`history`" in reply and "Managed devices / Read" in reply, text


# -- near misses: "did you mean …?" ---------------------------------------------------------------------------


async def test_a_typo_in_the_serial_offers_the_device_and_the_button_starts_the_normal_flow(
    bot: BotUnderTest, sim: Simulator
) -> None:
    replies = await bot.say(ALEX, "deprovision 5CD0832TGI please")  # the serial ends in L, not I
    assert len(replies) == 1 and replies[0].cards
    card = replies[0].cards[0]
    text = card_text(card)
    assert m.CARD_SUGGEST_TITLE in text and "No device you can manage matches **5CD0832TGI**" in text
    assert "NHS-CART3-01" in text and "5CD0832TGL" in text
    assert verbs_in(card) == ["deprovision.select"]
    data = card["actions"][0]["data"]
    assert set(data) == {"selectionId", "index", "verb"}  # only a server-side id travels in the card
    confirm = card_of(await bot.click(ALEX, "deprovision.select", data, reply_to=replies[0].activity_id))
    assert verbs_in(confirm) == ["deprovision.confirm", "deprovision.cancel"]
    assert "NHS-CART3-01" in card_text(confirm)
    assert not sim.deprovision_posts()


async def test_a_typo_in_the_name_offers_at_most_five_readable_devices(bot: BotUnderTest, sim: Simulator) -> None:
    replies = await bot.say(ALEX, "deprovision NHS-CART7-0")
    card = replies[-1].cards[0]
    assert m.CARD_SUGGEST_TITLE in card_text(card)
    assert 1 <= len(verbs_in(card)) <= m.MAX_SUGGESTIONS


async def test_suggestions_list_only_devices_the_requester_can_read(bot: BotUnderTest, sim: Simulator) -> None:
    alex = (await bot.say(ALEX, "deprovision RMS-LOANER-0l"))[-1]
    assert alex.cards and "RMS-LOANER-01" in card_text(alex.cards[0])
    # Adele (Northside tag) and Lynne (no role) cannot read Riverside devices: the one not-found answer, no card.
    for user in (ADELE, LYNNE):
        reply = (await bot.say(user, "deprovision RMS-LOANER-0l"))[-1]
        assert not reply.cards and reply.text == m.not_found("RMS-LOANER-0l"), user.name
    # Isaiah (Riverside) gets Riverside suggestions only, never a Northside device.
    isaiah = (await bot.say(ISAIAH, "deprovision NHS-CART3-0l"))[-1]
    assert not isaiah.cards and isaiah.text == m.not_found("NHS-CART3-0l")


async def test_nothing_near_is_the_plain_not_found(bot: BotUnderTest, sim: Simulator) -> None:
    reply = (await bot.say(ALEX, "deprovision NO-SUCH-DEVICE-99"))[-1]
    assert not reply.cards and reply.text == m.not_found("NO-SUCH-DEVICE-99")


@pytest.mark.parametrize("command", ["deprovision", "status", "history"])
async def test_every_usage_answer_names_the_command_typed(bot: BotUnderTest, sim: Simulator, command: str) -> None:
    for text in (f"{command} ABC\x07DEF", f"{command} " + "A" * 300, f"please {command} " + "A" * 1200):
        reply = (await bot.say(ALEX, text))[-1].text
        assert f"`{command}`" in reply, (text[:30], reply)
        assert not [c for c in sim.calls if "managedDevices" in c.path]
