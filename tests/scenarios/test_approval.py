"""The optional two-person rule (APPROVAL_MODE=peer), end to end over HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot import messages as m
from bot.store import AWAITING_APPROVAL, CANCELLED, EXPIRED, SUBMITTED
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import (
    ADELE,
    ALEX,
    LYNNE,
    MEGAN,
    PATTI,
    BotUnderTest,
    Connector,
    User,
    action_id_of,
    card_of,
    card_text,
    verbs_in,
)

SERIAL = "5CD0832TGL"  # NHS-CART3-01, Northside High (tag 1)
HELPDESK_GROUP = "b9155c07-315c-5251-83a0-4b3c4801f5a1"  # only Alex is a member
APPROVAL_CHANNEL = "19:approvals@thread.tacv2"


async def confirmed(
    bot: BotUnderTest, requester: User = ADELE, conversation_type: str = "groupChat"
) -> tuple[str, str | None, dict[str, Any]]:
    replies = await bot.say(requester, f"deprovision {SERIAL}", conversation_type=conversation_type)
    card, message_id = replies[-1].cards[0], replies[-1].activity_id
    action_id = action_id_of(card)
    response = await bot.click(
        requester,
        "deprovision.confirm",
        {"actionId": action_id, "reason": "retiring_device"},
        reply_to=message_id,
        conversation_type=conversation_type,
    )
    return action_id, message_id, card_of(response)


async def test_confirmation_waits_for_a_second_person(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, _, card = await confirmed(bot)
    assert "Waiting for approval" in card_text(card)
    assert not sim.deprovision_posts()
    assert (await bot.action(action_id)).state == AWAITING_APPROVAL


async def test_requester_cannot_approve_own_request(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, _, _ = await confirmed(bot)
    response = card_of(
        await bot.click(ADELE, "approval.approve", {"actionId": action_id}, conversation_type="groupChat")
    )
    assert "someone else must approve" in card_text(response)
    assert not sim.deprovision_posts()


async def test_ineligible_approver_is_refused_with_the_reason(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, _, _ = await confirmed(bot)
    for user, expected in ((LYNNE, "Remote tasks / Retire"), (MEGAN, "Read Only Operator")):
        response = card_of(
            await bot.click(user, "approval.approve", {"actionId": action_id}, conversation_type="groupChat")
        )
        text = card_text(response)
        assert "You can't approve this request" in text and expected in text
    assert not sim.deprovision_posts()
    assert (await bot.action(action_id)).state == AWAITING_APPROVAL


async def test_approver_outside_the_approver_group_is_refused(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer", APPROVER_GROUP_ID=HELPDESK_GROUP)
    action_id, _, _ = await confirmed(bot)
    refused = card_of(
        await bot.click(PATTI, "approval.approve", {"actionId": action_id}, conversation_type="groupChat")
    )
    assert "approvers group" in card_text(refused)
    assert not sim.deprovision_posts()
    approved = card_of(
        await bot.click(ALEX, "approval.approve", {"actionId": action_id}, conversation_type="groupChat")
    )
    assert m.CARD_TITLE_SENT in card_text(approved) and "Alex Wilber" in card_text(approved)
    assert len(sim.deprovision_posts()) == 1


async def test_two_approvers_at_once_make_one_graph_call(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, message_id, _ = await confirmed(bot)
    data = {"actionId": action_id}
    results = await asyncio.gather(
        *(
            bot.click(user, "approval.approve", data, conversation_type="groupChat", reply_to=message_id)
            for user in (ALEX, PATTI, ALEX, PATTI)
        )
    )
    assert len(sim.deprovision_posts()) == 1
    action = await bot.action(action_id)
    assert action.state == SUBMITTED and action.approver_id in (ALEX.aad_id, PATTI.aad_id)
    assert all("approval.approve" not in verbs_in(card_of(r)) for r in results)
    events = [row async for row in bot.running.audit.rows()]
    approved = [e for e in events if e["event"] == "approved"]
    assert len(approved) == 1 and approved[0]["actor_id"] == action.approver_id
    assert '"requester_id"' in approved[0]["details"] and ADELE.aad_id in approved[0]["details"]
    notices = await connector.wait_for(lambda c: [s for s in c.sent() if "approved deprovisioning" in s.text])
    assert notices


async def test_reject_requires_a_comment_and_notifies_the_requester(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, message_id, _ = await confirmed(bot)
    needs = card_of(
        await bot.click(
            PATTI, "approval.reject", {"actionId": action_id, "comment": "  "}, conversation_type="groupChat"
        )
    )
    assert "Add a comment" in card_text(needs)
    rejected = card_of(
        await bot.click(
            PATTI,
            "approval.reject",
            {"actionId": action_id, "comment": "Device is still in use"},
            conversation_type="groupChat",
        )
    )
    assert "Rejected by Patti Fernandez" in card_text(rejected) and "still in use" in card_text(rejected)
    assert (await bot.action(action_id)).state == CANCELLED
    assert not sim.deprovision_posts()
    await connector.wait_for(lambda c: [s for s in c.sent() if "rejected deprovisioning" in s.text])
    await connector.wait_for(lambda c: [u for u in c.updates(message_id) if "Rejected" in card_text(u.cards[0])])
    late = card_of(await bot.click(ALEX, "approval.approve", {"actionId": action_id}, conversation_type="groupChat"))
    assert "Rejected" in card_text(late)
    assert not sim.deprovision_posts()


async def test_approval_expires_and_the_card_says_so(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer", APPROVAL_TTL="1")
    action_id, message_id, _ = await confirmed(bot)
    await asyncio.sleep(1.2)
    counts = await bot.running.workflow.sweep()
    assert counts["expired"] == 1
    assert (await bot.action(action_id)).state == EXPIRED
    await connector.wait_for(lambda c: [u for u in c.updates(message_id) if "expired" in card_text(u.cards[0])])
    late = card_of(await bot.click(PATTI, "approval.approve", {"actionId": action_id}, conversation_type="groupChat"))
    assert "Expired" in card_text(late)
    assert not sim.deprovision_posts()


async def test_eligible_approvers_get_buttons_through_refresh(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, message_id, _ = await confirmed(bot)

    def refreshed(c: Connector) -> list[str] | None:
        for update in c.updates(message_id):
            users = (update.cards[0].get("refresh") or {}).get("userIds", [])
            if PATTI.mri in users:
                return users
        return None

    users = await connector.wait_for(refreshed)
    assert ADELE.mri in users and ALEX.mri in users
    assert LYNNE.mri not in users and MEGAN.mri not in users
    view = card_of(
        await bot.click(
            PATTI, "deprovision.refresh", {"actionId": action_id}, conversation_type="groupChat", trigger="automatic"
        )
    )
    assert verbs_in(view) == ["approval.approve", "approval.reject"]
    bystander = card_of(
        await bot.click(LYNNE, "deprovision.refresh", {"actionId": action_id}, conversation_type="groupChat")
    )
    assert not verbs_in(bystander)


async def test_approval_channel_gets_a_proactive_card(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer", APPROVAL_CHANNEL_ID=APPROVAL_CHANNEL)
    action_id, message_id, _ = await confirmed(bot, conversation_type="personal")
    posted = await connector.wait_for(lambda c: c.sent(APPROVAL_CHANNEL))
    approval_card = posted[-1].cards[0]
    assert "Waiting for approval" in card_text(approval_card) and "NHS-CART3-01" in card_text(approval_card)
    approval_message = posted[-1].activity_id
    done = card_of(
        await bot.click(
            PATTI,
            "approval.approve",
            {"actionId": action_id},
            conversation_type="channel",
            conversation_id=APPROVAL_CHANNEL,
            reply_to=approval_message,
        )
    )
    assert m.CARD_TITLE_SENT in card_text(done)
    await connector.wait_for(
        lambda c: [u for u in c.updates(approval_message) if m.CARD_TITLE_SENT in card_text(u.cards[0])]
    )
    await connector.wait_for(lambda c: [u for u in c.updates(message_id) if m.CARD_TITLE_SENT in card_text(u.cards[0])])
    assert len(sim.deprovision_posts()) == 1


async def test_pending_lists_requests_and_opens_them_for_approval(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    action_id, _, _ = await confirmed(bot, conversation_type="personal")
    replies = await bot.say(PATTI, "pending")
    card = replies[-1].cards[0]
    assert "NHS-CART3-01" in card_text(card) and "Adele Vance" in card_text(card)
    open_action = card["actions"][0]
    view = card_of(await bot.click(PATTI, open_action["verb"], open_action["data"]))
    assert verbs_in(view) == ["approval.approve", "approval.reject"]
    # The requester sees her own waiting request; someone who may not approve it and did not make it sees nothing.
    own = card_text((await bot.say(ADELE, "pending"))[-1].cards[0])
    assert "NHS-CART3-01" in own and "your request" in own
    assert "Nothing is waiting" in (await bot.say(LYNNE, "pending"))[-1].text
    done = card_of(await bot.click(PATTI, "approval.approve", {"actionId": action_id}))
    assert m.CARD_TITLE_SENT in card_text(done)


async def test_requester_is_told_how_to_get_approval_and_can_withdraw(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    # A 1:1 chat without an approvals channel: said plainly.
    action_id, _, card = await confirmed(bot, conversation_type="personal")
    text = card_text(card)
    assert "No approvals channel is set" in text and "**pending**" in text
    assert verbs_in(card) == ["deprovision.cancel"] and "Withdraw" in json.dumps(card)
    # `pending` lists her own request; opening it shows Withdraw; withdrawing cancels it and frees the device.
    own = (await bot.say(ADELE, "pending"))[-1].cards[0]
    opened = card_of(await bot.click(ADELE, own["actions"][0]["verb"], own["actions"][0]["data"]))
    assert verbs_in(opened) == ["deprovision.cancel"]
    withdrawn = card_of(await bot.click(ADELE, "deprovision.cancel", {"actionId": action_id}))
    assert m.CARD_TITLE_CANCELLED in card_text(withdrawn) and not verbs_in(withdrawn)
    assert (await bot.action(action_id)).state == CANCELLED
    assert not sim.deprovision_posts()


async def test_with_an_approval_channel_the_requester_is_told_where(make_bot: BotFactory) -> None:
    bot = await make_bot(APPROVAL_MODE="peer", APPROVAL_CHANNEL_ID=APPROVAL_CHANNEL)
    _, _, card = await confirmed(bot, conversation_type="personal")
    assert "posted in the approvals channel" in card_text(card)


async def test_eligible_approvers_in_the_group_are_mentioned(make_bot: BotFactory, connector: Connector) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    await confirmed(bot)  # Adele, in the group chat whose members are the demo users
    notice = await connector.wait_for(lambda c: [s for s in c.sent() if s.body.get("entities")])
    body = notice[-1].body
    mentioned = {e["mentioned"]["name"] for e in body["entities"] if e.get("type") == "mention"}
    assert mentioned == {"Alex Wilber", "Patti Fernandez"}  # eligible; not Adele herself, not Megan, Isaiah, Lynne
    for name in mentioned:
        assert f"<at>{name}</at>" in body["text"]
    assert "NHS-CART3-01" in body["text"] and "Adele Vance" in body["text"]
