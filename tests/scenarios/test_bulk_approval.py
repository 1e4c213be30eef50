"""Peer approval of a bulk request over HTTP, as for one device (tests/scenarios/test_approval.py): the requester's
waiting card says who can approve and how; eligible approvers among the conversation's members (not the requester,
a role covering at least one device of the list) are @mentioned and get the approver view through refresh.userIds;
``APPROVAL_CHANNEL_ID`` gets a proactive card that can be approved from there."""

from __future__ import annotations

from typing import Any

from bot import messages as m
from bot.batches import BatchStore
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import (
    ADELE,
    ALEX,
    ISAIAH,
    LYNNE,
    MEGAN,
    PATTI,
    BotUnderTest,
    Connector,
    card_of,
    card_text,
    verbs_in,
)
from tests.scenarios.test_bulk import REASON, bulk_card, wait_rows

APPROVAL_CHANNEL = "19:approvals@thread.tacv2"
# Northside (Adele's tag) and one Riverside loaner (Isaiah's scope group): each of them covers part of the list.
LISTED = ["NHS-CART7-01", "NHS-CART7-02", "NHS-CART7-03", "RMS-LOANER-01"]


async def confirmed(bot: BotUnderTest, conversation_type: str = "groupChat") -> tuple[str, str, dict[str, Any]]:
    """Alex asks for the list and confirms it: (batch id, the shared card's message id, the requester's card)."""
    replies = await bot.say(ALEX, "deprovision " + ", ".join(LISTED), conversation_type=conversation_type)
    _card, batch_id, message_id = bulk_card(replies)
    waiting = await bot.click(
        ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON}, conversation_type=conversation_type
    )
    return batch_id, message_id, card_of(waiting)


def approve_data(view: dict[str, Any]) -> dict[str, Any]:
    """The data of the Approve button on an approver's view (the batch and the digest of what it covers)."""
    [approve] = [a for a in view.get("actions", []) if a.get("verb") == "bulk.approve"]
    data: dict[str, Any] = approve["data"]
    return data


async def test_eligible_approvers_are_mentioned_and_get_buttons_through_refresh(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    batch_id, message_id, waiting = await confirmed(bot)
    assert m.BULK_TITLE_WAITING in card_text(waiting) and not sim.deprovision_posts()
    assert "eligible members of this chat see Approve" in card_text(waiting)
    assert verbs_in(waiting) == ["bulk.cancel"]  # the requester may withdraw

    def refreshed(c: Connector) -> list[str] | None:
        for update in c.updates(message_id):
            users = (update.cards[0].get("refresh") or {}).get("userIds", [])
            if PATTI.mri in users:
                return list(users)
        return None

    users = await connector.wait_for(refreshed)
    # The requester, and everyone whose role covers at least one device: Adele (the Northside tag), Isaiah (the
    # loaner's scope group), Patti (Entra Intune Administrator) — not Megan (read only) nor Lynne (no role).
    assert set(users) == {ALEX.mri, ADELE.mri, ISAIAH.mri, PATTI.mri}

    notice = await connector.wait_for(lambda c: [s for s in c.sent() if s.body.get("entities")])
    body = notice[-1].body
    mentioned = {e["mentioned"]["name"] for e in body["entities"] if e.get("type") == "mention"}
    assert mentioned == {"Adele Vance", "Isaiah Langer", "Patti Fernandez"}
    for name in mentioned:
        assert f"<at>{name}</at>" in body["text"]
    # Every member reads the notice: it names no device and no count.
    assert "Alex Wilber" in body["text"] and not any(ch.isdigit() for ch in body["text"])
    assert not [name for name in LISTED if name in body["text"]]

    view = card_of(
        await bot.click(
            ISAIAH, "deprovision.refresh", {"batchId": batch_id}, conversation_type="groupChat", trigger="automatic"
        )
    )
    assert verbs_in(view) == ["bulk.approve", "bulk.reject"]
    assert "RMS-LOANER-01" in card_text(view) and "NHS-CART7" not in card_text(view)  # only what he may read
    for bystander in (LYNNE, MEGAN):
        seen = card_of(
            await bot.click(bystander, "deprovision.refresh", {"batchId": batch_id}, conversation_type="groupChat")
        )
        assert not verbs_in(seen)
        refused = card_of(
            await bot.click(
                bystander, "bulk.reject", {"batchId": batch_id, "comment": "no"}, conversation_type="groupChat"
            )
        )
        assert m.card_not_eligible_bulk() in card_text(refused)

    # Isaiah approves: only the device his role covers is sent; the rest is left out, visibly.
    approve = approve_data(view)
    approved = card_of(await bot.click(ISAIAH, "bulk.approve", approve, conversation_type="groupChat"))
    assert "Isaiah Langer" in card_text(approved)
    rows = await wait_rows(bot, batch_id, lambda rows: rows and all(r.state == "submitted" for r in rows))
    assert [r.device_name for r in rows] == ["RMS-LOANER-01"]
    assert len(sim.deprovision_posts()) == 1


async def test_the_approval_channel_gets_a_card_that_approves(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer", APPROVAL_CHANNEL_ID=APPROVAL_CHANNEL)
    batch_id, _, waiting = await confirmed(bot, conversation_type="personal")
    assert "posted in the approvals channel" in card_text(waiting)
    posted = await connector.wait_for(lambda c: c.sent(APPROVAL_CHANNEL))
    channel_card = posted[-1].cards[0]
    # The shared copy: no device, no count; approvers open their own view from it (or from pending).
    assert m.BULK_TITLE_WAITING in card_text(channel_card) and "NHS-CART7" not in card_text(channel_card)
    assert verbs_in(channel_card) == ["deprovision.refresh"]
    approval_message = posted[-1].activity_id
    where: dict[str, Any] = {
        "conversation_type": "channel",
        "conversation_id": APPROVAL_CHANNEL,
        "reply_to": approval_message,
    }
    mine = card_of(await bot.click(ADELE, "deprovision.refresh", {"batchId": batch_id}, **where))
    assert "NHS-CART7-01" in card_text(mine) and "RMS-LOANER-01" not in card_text(mine)
    done = card_of(await bot.click(ADELE, "bulk.approve", approve_data(mine), **where))
    assert "Adele Vance" in card_text(done)
    rows = await wait_rows(bot, batch_id, lambda rows: len(rows) == 3 and all(r.state == "submitted" for r in rows))
    assert sorted(r.device_name for r in rows) == LISTED[:3]
    # The channel's copy follows the run in place.
    await connector.wait_for(
        lambda c: [u for u in c.updates(approval_message) if m.BULK_TITLE_WAITING not in card_text(u.cards[0])]
    )
    # Someone in the channel may look at the card after it ran (it was posted there).
    seen = card_of(
        await bot.click(
            LYNNE,
            "deprovision.refresh",
            {"batchId": batch_id},
            conversation_type="channel",
            conversation_id=APPROVAL_CHANNEL,
        )
    )
    assert not verbs_in(seen) and m.card_not_available() not in card_text(seen)


async def test_in_a_one_to_one_chat_without_a_channel_the_requester_is_told_plainly(
    make_bot: BotFactory, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    before = len(connector.sent())
    _, _, waiting = await confirmed(bot, conversation_type="personal")
    text = card_text(waiting)
    assert "No approvals channel is set" in text and "**pending**" in text
    assert not [s for s in connector.sent()[before:] if s.body.get("entities")]  # nobody to mention in a 1:1 chat


async def test_only_an_eligible_approver_may_approve_or_reject_and_bystanders_learn_nothing(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """Review finding 5: Megan (read only) and Lynne (no role) may neither approve nor reject, from the chat or from
    their own; what they are shown is their own projection (Lynne: nothing), and the request waits on."""
    bot = await make_bot(APPROVAL_MODE="peer")
    batch_id, _, _ = await confirmed(bot)
    ref = {"batchId": batch_id}
    for user in (MEGAN, LYNNE):
        for verb in ("bulk.approve", "bulk.reject"):
            seen = card_of(await bot.click(user, verb, {**ref, "comment": "no"}, conversation_type="groupChat"))
            assert m.card_not_eligible_bulk() in card_text(seen) and not verbs_in(seen)
            elsewhere = card_of(await bot.click(user, verb, {**ref, "comment": "no"}))  # from their own chat
            assert m.card_not_available() in card_text(elsewhere)
    lynne = card_text(
        card_of(await bot.click(LYNNE, "bulk.reject", {**ref, "comment": "x"}, conversation_type="groupChat"))
    )
    assert not [name for name in LISTED if name in lynne] and "NHS" not in lynne
    batch = await BatchStore(bot.running.store).get(batch_id)
    assert batch is not None and batch.state == "awaiting_approval" and batch.comment is None
    assert not sim.deprovision_posts()
    # An approver whose role covers part of the list may reject the request (with a comment).
    isaiah = card_of(await bot.click(ISAIAH, "deprovision.refresh", ref))  # from his own chat
    assert verbs_in(isaiah) == ["bulk.approve", "bulk.reject"]
    rejected = card_of(await bot.click(ISAIAH, "bulk.reject", {**ref, "comment": "not this term"}))
    assert m.BULK_TITLE_REJECTED in card_text(rejected) and "NHS-CART7" not in card_text(rejected)
    mine = card_text(card_of(await bot.click(ALEX, "deprovision.refresh", ref, conversation_type="groupChat")))
    assert m.bulk_rejected("Isaiah Langer", "not this term") in mine and not sim.deprovision_posts()


async def test_a_narrow_approver_approves_exactly_what_the_card_showed(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """Review finding 5: the approver sees before clicking what their click sends; if that changes in Intune before
    the click, nothing is sent and the card shows the new list; the requester sees what was left out, and by whom."""
    bot = await make_bot(APPROVAL_MODE="peer")
    batch_id, message_id, _ = await confirmed(bot)
    ref = {"batchId": batch_id}
    adele = card_of(await bot.click(ADELE, "deprovision.refresh", ref, conversation_type="groupChat"))
    assert adele["actions"][0]["title"] == "Approve 3 devices" and "RMS-LOANER-01" not in card_text(adele)
    # NHS-CART7-03 moves to the Riverside scope tag before Adele clicks: she may no longer read it.
    moved = next(d for d in sim.state.devices.values() if d["deviceName"] == "NHS-CART7-03")
    moved["roleScopeTagIds"] = ["2"]
    refused = card_of(await bot.click(ADELE, "bulk.approve", approve_data(adele), conversation_type="groupChat"))
    assert m.card_bulk_approval_changed() in card_text(refused) and not sim.deprovision_posts()
    assert refused["actions"][0]["title"] == "Approve 2 devices" and "NHS-CART7-03" not in card_text(refused)
    done = card_of(await bot.click(ADELE, "bulk.approve", approve_data(refused), conversation_type="groupChat"))
    assert "Adele Vance" in card_text(done)
    rows = await wait_rows(bot, batch_id, lambda rows: rows and all(r.state == "submitted" for r in rows))
    assert sorted(r.device_name for r in rows) == LISTED[:2] and len(sim.deprovision_posts()) == 2
    await connector.wait_for(
        lambda c: [u for u in c.updates(message_id) if m.BULK_TITLE_FINISHED in card_text(u.cards[0])], timeout=15
    )
    final = card_text(card_of(await bot.click(ALEX, "deprovision.refresh", ref, conversation_type="groupChat")))
    for name in ("NHS-CART7-03", "RMS-LOANER-01"):
        assert f"**{name}** — {m.bulk_not_approved_by('Adele Vance')}" in final
