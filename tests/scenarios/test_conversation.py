"""The conversation end to end over HTTP: real app, simulated Graph over HTTPS, capture connector."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bot import messages as m
from bot.store import SUBMITTED
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import (
    ALEX,
    LYNNE,
    MEGAN,
    TENANT,
    BotUnderTest,
    Connector,
    User,
    action_id_of,
    activity,
    card_of,
    card_text,
    verbs_in,
)

SERIAL = "5CD0832TGL"  # NHS-CART3-01, ChromeOS, shared cart device
OTHER_SERIAL = "5CD6259KKH"  # NHS-CART3-02


async def request_card(
    bot: BotUnderTest, user: User = ALEX, target: str = SERIAL, **kw: Any
) -> tuple[dict[str, Any], str | None]:
    replies = await bot.say(user, f"deprovision {target}", **kw)
    cards = [r for r in replies if r.cards]
    assert cards, [r.text for r in replies]
    return cards[-1].cards[0], cards[-1].activity_id


async def test_not_found_is_specific_and_calls_no_write(bot: BotUnderTest, sim: Simulator) -> None:
    replies = await bot.say(ALEX, "deprovision NO-SUCH-DEVICE-99")
    assert "No device you can manage matches **NO-SUCH-DEVICE-99**" in replies[-1].text
    assert not sim.deprovision_posts()


async def test_non_chromeos_is_refused_with_its_os(bot: BotUnderTest) -> None:
    replies = await bot.say(ALEX, "deprovision NHS-OFFICE-PC01")
    assert "runs Windows" in replies[-1].text and "not ChromeOS" in replies[-1].text
    assert not replies[-1].cards


async def test_denied_user_is_told_which_roles_would_work(bot: BotUnderTest, sim: Simulator) -> None:
    # Megan can see the device (Read Only Operator) but not deprovision it: she is told which roles would work.
    replies = await bot.say(MEGAN, f"deprovision {SERIAL}")
    text = replies[-1].text
    assert "You can't deprovision" in text and "Help Desk Operator" in text and "School Administrator" in text
    assert "Read Only Operator" in text
    assert not replies[-1].cards
    # Lynne has no Intune role at all: she learns nothing about the device, not even that it exists.
    replies = await bot.say(LYNNE, f"deprovision {SERIAL}")
    assert replies[-1].text == m.not_found(SERIAL)
    events = [row async for row in bot.running.audit.rows()]
    assert [e["event"] for e in events] == ["denied"]
    assert not sim.deprovision_posts()


async def test_ambiguous_name_offers_a_choice_that_continues_the_flow(bot: BotUnderTest, sim: Simulator) -> None:
    replies = await bot.say(ALEX, "deprovision nhs-lib-01")
    card = replies[-1].cards[0]
    assert verbs_in(card) == ["deprovision.select", "deprovision.select"]
    text = card_text(card)
    assert "PF881HK3" in text and "PF9XH00P" in text
    data = card["actions"][1]["data"]
    assert set(data) == {"selectionId", "index", "verb"}  # no device id travels in the card
    response = await bot.click(ALEX, "deprovision.select", data, reply_to=replies[-1].activity_id)
    confirm = card_of(response)
    assert verbs_in(confirm) == ["deprovision.confirm", "deprovision.cancel"]
    chosen = card["actions"][1]["title"].split(". ", 1)[1]
    assert chosen in card_text(confirm)
    again = card_of(await bot.click(ALEX, "deprovision.select", data))
    assert "already made" in card_text(again)
    assert not sim.deprovision_posts()


async def test_confirm_deprovisions_once_and_updates_the_card_for_everyone(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    card, message_id = await request_card(bot)
    assert card["version"] == "1.5"
    action_id = action_id_of(card)
    done = card_of(
        await bot.click(
            ALEX, "deprovision.confirm", {"actionId": action_id, "reason": "retiring_device"}, reply_to=message_id
        )
    )
    text = card_text(done)
    assert m.CARD_TITLE_SENT in text and "Alex Wilber" in text and "factory reset" in text
    assert "Retiring device" in text and "NHS-CART3-01" in text
    posts = sim.deprovision_posts()
    assert len(posts) == 1 and posts[0].body == {"deprovisionReason": "retiring_device"}
    assert posts[0].request_id and posts[0].request_id in text
    updated = await connector.wait_for(lambda c: c.updates(message_id))
    assert m.CARD_TITLE_SENT in card_text(updated[-1].cards[0])
    assert not verbs_in(updated[-1].cards[0])
    events = [row["event"] async for row in bot.running.audit.rows()]
    assert events == ["requested", "confirmed", "submitted", "succeeded"]


async def test_repeated_and_concurrent_confirms_call_graph_once(bot: BotUnderTest, sim: Simulator) -> None:
    card, message_id = await request_card(bot)
    data = {"actionId": action_id_of(card), "reason": "same_model_replacement"}
    results = await asyncio.gather(
        *(bot.click(ALEX, "deprovision.confirm", data, reply_to=message_id) for _ in range(5))
    )
    again = await bot.click(ALEX, "deprovision.confirm", data, reply_to=message_id)
    assert len(sim.deprovision_posts()) == 1
    for response in [*results, again]:
        assert not {"deprovision.confirm"} & set(verbs_in(card_of(response)))
    action = await bot.action(data["actionId"])
    assert action is not None and action.state == SUBMITTED


async def test_another_user_cannot_click_the_requesters_button(bot: BotUnderTest, sim: Simulator) -> None:
    card, message_id = await request_card(bot, conversation_type="groupChat")
    data = {"actionId": action_id_of(card), "reason": "retiring_device"}
    response = card_of(
        await bot.click(MEGAN, "deprovision.confirm", data, reply_to=message_id, conversation_type="groupChat")
    )
    assert "Only Alex Wilber can confirm" in card_text(response)
    assert not verbs_in(response)
    assert not sim.deprovision_posts()
    cancel = card_of(
        await bot.click(MEGAN, "deprovision.cancel", data, reply_to=message_id, conversation_type="groupChat")
    )
    assert "Only Alex Wilber" in card_text(cancel)
    assert (await bot.action(data["actionId"])).state == "requested"


async def test_someone_outside_the_conversation_gets_no_card(bot: BotUnderTest, sim: Simulator) -> None:
    """A click (or refresh) carrying a known action id from another chat shows nothing of the request."""
    card, message_id = await request_card(bot)
    data = {"actionId": action_id_of(card), "reason": "retiring_device"}
    for verb in ("deprovision.refresh", "deprovision.confirm", "deprovision.cancel"):
        response = card_of(await bot.click(MEGAN, verb, data, reply_to=message_id))
        shown = card_text(response)
        assert m.card_not_available() in shown, shown
        assert "NHS-CART3-01" not in shown and SERIAL not in shown and "Alex" not in shown
        assert not verbs_in(response)
    assert (await bot.action(data["actionId"])).state == "requested"
    assert not sim.deprovision_posts()


async def test_device_named_in_invoke_data_is_ignored(bot: BotUnderTest, sim: Simulator) -> None:
    card, message_id = await request_card(bot)
    forged = {
        "actionId": action_id_of(card),
        "reason": "retiring_device",
        "deviceId": "02611379-4a85-55c4-b925-43bd8d4d90ca",
        "serial": OTHER_SERIAL,
    }
    await bot.click(ALEX, "deprovision.confirm", forged, reply_to=message_id)
    posts = sim.deprovision_posts()
    assert len(posts) == 1
    assert "27ab6835-99f8-5907-ac4d-64c0365f0d40" in posts[0].path
    assert not sim.deprovision_posts("02611379-4a85-55c4-b925-43bd8d4d90ca")


async def test_reason_is_required_and_must_be_one_of_googles(bot: BotUnderTest, sim: Simulator) -> None:
    card, _message_id = await request_card(bot)
    action_id = action_id_of(card)
    for bad in ({}, {"reason": ""}, {"reason": "because I said so"}):
        response = card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id, **bad}))
        assert "Choose a reason" in card_text(response)
        assert verbs_in(response) == ["deprovision.confirm", "deprovision.cancel"]
    assert not sim.deprovision_posts()


async def test_reason_can_be_preselected_in_the_command(bot: BotUnderTest) -> None:
    card, _ = await request_card(bot, target=f"{SERIAL} reason: same model")
    choice = next(e for e in card["body"] if e.get("type") == "Input.ChoiceSet")
    assert choice["value"] == "same_model_replacement"
    replies = await bot.say(ALEX, f"deprovision {SERIAL} reason: stolen")
    assert "is not a deprovision reason" in replies[-1].text


async def test_cancel_then_confirm_does_nothing(bot: BotUnderTest, sim: Simulator, connector: Connector) -> None:
    card, message_id = await request_card(bot)
    action_id = action_id_of(card)
    cancelled = card_of(await bot.click(ALEX, "deprovision.cancel", {"actionId": action_id}, reply_to=message_id))
    assert "Cancelled by Alex Wilber" in card_text(cancelled)
    late = card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id, "reason": "retiring_device"}))
    assert "Cancelled" in card_text(late) and not verbs_in(late)
    assert not sim.deprovision_posts()
    assert connector.updates(message_id)


async def test_expired_request_cannot_be_confirmed(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(ACTION_TTL="1")
    card, _ = await request_card(bot)
    await asyncio.sleep(1.2)
    response = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    )
    assert "expired" in card_text(response).lower()
    assert not sim.deprovision_posts()


async def test_unknown_or_foreign_card_is_refused(bot: BotUnderTest, sim: Simulator) -> None:
    response = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": "A" * 24, "reason": "retiring_device"})
    )
    assert "no longer valid" in card_text(response)
    response = card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": "../../etc", "reason": "x"}))
    assert "no longer valid" in card_text(response)
    assert not sim.deprovision_posts()


async def test_invoke_without_or_with_unknown_verb_gets_an_error_not_a_500(bot: BotUnderTest) -> None:
    response = await bot.click(ALEX, "", {"actionId": "x"})
    assert response["statusCode"] == 400
    response = await bot.click(ALEX, "deprovision.nuke", {"actionId": "x"})
    assert response["statusCode"] == 400


async def test_channel_card_needs_a_mention_and_gives_buttons_only_to_the_requester(
    bot: BotUnderTest, sim: Simulator
) -> None:
    assert await bot.say(ALEX, f"deprovision {SERIAL}", conversation_type="channel", mention=False) == []
    replies = await bot.say(ALEX, f"deprovision {SERIAL}", conversation_type="channel")
    base = replies[-1].cards[0]
    assert not verbs_in(base)  # everyone sees a read-only base card
    assert base["refresh"]["userIds"] == [ALEX.mri]
    assert base["refresh"]["action"]["verb"] == "deprovision.refresh"
    data = base["refresh"]["action"]["data"]
    mine = card_of(await bot.click(ALEX, "deprovision.refresh", data, conversation_type="channel", trigger="automatic"))
    assert verbs_in(mine) == ["deprovision.confirm", "deprovision.cancel"]
    theirs = card_of(await bot.click(MEGAN, "deprovision.refresh", data, conversation_type="channel"))
    assert not verbs_in(theirs) and "Waiting for Alex Wilber" in card_text(theirs)


async def test_group_chat_flow_updates_the_shared_card(bot: BotUnderTest, sim: Simulator, connector: Connector) -> None:
    replies = await bot.say(ALEX, f"deprovision {SERIAL}", conversation_type="groupChat")
    base, message_id = replies[-1].cards[0], replies[-1].activity_id
    data = {"actionId": action_id_of(base), "reason": "retiring_device"}
    await bot.click(ALEX, "deprovision.confirm", data, conversation_type="groupChat", reply_to=message_id)
    updates = await connector.wait_for(lambda c: c.updates(message_id))
    shared = updates[-1].cards[0]
    assert m.CARD_TITLE_SENT in card_text(shared) and "refresh" not in shared


async def test_slow_graph_answers_working_then_updates_the_card(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(INVOKE_BUDGET="0.5", GRAPH_TIMEOUT="5")
    sim.control.add_fault(method="POST", path=r"/deprovision$", delay=2.0, count=1)
    card, message_id = await request_card(bot)
    response = card_of(
        await bot.click(
            ALEX,
            "deprovision.confirm",
            {"actionId": action_id_of(card), "reason": "retiring_device"},
            reply_to=message_id,
        )
    )
    assert "Deprovisioning…" in card_text(response) and not verbs_in(response)
    updated = await connector.wait_for(
        lambda c: [u for u in c.updates(message_id) if m.CARD_TITLE_SENT in card_text(u.cards[0])], timeout=10
    )
    assert updated
    assert len(sim.deprovision_posts()) == 1


async def test_throttled_graph_offers_retry_that_is_single_use(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(GRAPH_MAX_RETRY_WAIT="0.5", GRAPH_RETRY_AFTER_CAP="0.2")
    sim.control.add_fault(method="POST", path=r"/deprovision$", status=429, retry_after=0.2, count=10)
    card, message_id = await request_card(bot)
    failed = card_of(
        await bot.click(
            ALEX,
            "deprovision.confirm",
            {"actionId": action_id_of(card), "reason": "retiring_device"},
            reply_to=message_id,
        )
    )
    assert verbs_in(failed) == ["deprovision.retry"], card_text(failed)
    assert not sim.deprovision_posts()
    sim.control.reset()
    retry = {"actionId": action_id_of(card)}
    results = await asyncio.gather(*(bot.click(ALEX, "deprovision.retry", retry) for _ in range(3)))
    assert any(m.CARD_TITLE_SENT in card_text(card_of(r)) for r in results)
    assert len(sim.deprovision_posts()) == 1


async def test_graph_rejection_is_reported_without_retry(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(DEPROVISION_REASON_MAP="retiring_device=DEPROVISION_REASON_RETIRING_DEVICE")
    card, _ = await request_card(bot)
    failed = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    )
    text = card_text(failed)
    assert "failed" in text.lower() and "400" in text
    assert not verbs_in(failed)


async def test_timeout_is_reported_as_unknown_and_never_resent(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(GRAPH_TIMEOUT="1", INVOKE_BUDGET="4.5")
    sim.control.add_fault(method="POST", path=r"/deprovision$", delay=2.5, count=1)
    card, message_id = await request_card(bot)
    response = card_of(
        await bot.click(
            ALEX,
            "deprovision.confirm",
            {"actionId": action_id_of(card), "reason": "retiring_device"},
            reply_to=message_id,
        )
    )
    assert "Outcome unknown" in card_text(response)
    assert "will not send it again" in card_text(response)
    notices = await connector.wait_for(lambda c: [s for s in c.sent() if "couldn't confirm" in s.text])
    assert notices
    await asyncio.sleep(1.6)
    assert len([c for c in sim.calls if c.method == "POST" and c.path.endswith("/deprovision")]) == 1


async def test_role_removed_before_confirmation_is_honoured(bot: BotUnderTest, sim: Simulator) -> None:
    card, _ = await request_card(bot)
    # Alex leaves the admin groups between the card and the click: memberships are never cached.
    for group in sim.state.groups.values():
        if ALEX.aad_id in group.get("members", []):
            group["members"].remove(ALEX.aad_id)
    response = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    )
    assert "can't deprovision" in card_text(response)
    assert not sim.deprovision_posts()


async def test_status_and_history(bot: BotUnderTest, sim: Simulator) -> None:
    card, _ = await request_card(bot)
    await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    status = (await bot.say(ALEX, f"status {SERIAL}"))[-1].cards[0]
    text = card_text(status)
    assert "NHS-CART3-01" in text and "sent to Intune, waiting for Google — Alex Wilber" in text
    history = (await bot.say(ALEX, "history"))[-1].cards[0]
    assert "NHS-CART3-01" in card_text(history)
    assert "Managed devices / Read" in (await bot.say(LYNNE, "history"))[-1].text


async def test_bad_input_gets_usage_and_changes_nothing(bot: BotUnderTest, sim: Simulator) -> None:
    assert "too long" in (await bot.say(ALEX, "deprovision " + "A" * 1200))[-1].text
    assert "too long" in (await bot.say(ALEX, "deprovision " + "A" * 300))[-1].text
    assert "characters" in (await bot.say(ALEX, "deprovision ABC\x07DEF"))[-1].text
    assert "Tell me which device" in (await bot.say(ALEX, "deprovision"))[-1].text
    unknown = await bot.say(ALEX, "please format my laptop")
    assert any("didn't understand" in r.text for r in unknown)
    assert not [c for c in sim.calls if "managedDevices" in c.path]


async def test_hostile_text_is_echoed_as_text_not_markup(bot: BotUnderTest) -> None:
    replies = await bot.say(ALEX, "deprovision [click me](https://evil.example)")
    text = replies[-1].text
    # The bare URL is escaped too: Teams turns ``https://…`` in a message into a link by itself.
    assert "\\[click me\\](https\\://evil.example)" in text
    assert "[click me](" not in text.replace("\\[click me\\](", "")


async def test_foreign_tenant_is_refused_without_reply_or_graph_call(
    bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    body = activity(
        "message",
        ALEX,
        service_url=connector.url,
        text=f"deprovision {SERIAL}",
        tenant="ffffffff-0000-0000-0000-000000000000",
    )
    status, _payload = await bot.post(body)
    assert status == 403
    await asyncio.sleep(0.2)
    assert connector.calls == [] and sim.calls == []
    body = activity("message", ALEX, service_url=connector.url, text="help")
    body["channelData"] = {}
    body["conversation"].pop("tenantId")
    status, _ = await bot.post(body)
    assert status == 403


async def test_invoke_response_is_a_plain_200_with_a_card(bot: BotUnderTest) -> None:
    card, _ = await request_card(bot)
    response = await bot.click(ALEX, "deprovision.refresh", {"actionId": action_id_of(card)})
    assert response["statusCode"] == 200 and response["type"] == "application/vnd.microsoft.card.adaptive"
    assert json.dumps(response)  # serialisable
    assert TENANT


async def test_a_warm_flow_costs_three_graph_round_trips(bot: BotUnderTest, sim: Simulator) -> None:
    card, _ = await request_card(bot, target=OTHER_SERIAL)  # warms the role catalogue
    await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    before = len(sim.round_trips())
    card, _ = await request_card(bot)
    await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    trips = sim.round_trips()[before:]
    # lookup (serial filter) + the requester's facts ($batch) · confirm: device re-read + role re-check ($batch) ·
    # deprovision
    assert [(c.method, c.path.rsplit("/", 1)[-1]) for c in trips] == [
        ("POST", "$batch"),
        ("POST", "$batch"),
        ("POST", "deprovision"),
    ]


async def test_device_gone_before_confirmation_changes_nothing(bot: BotUnderTest, sim: Simulator) -> None:
    card, _ = await request_card(bot)
    del sim.state.devices["27ab6835-99f8-5907-ac4d-64c0365f0d40"]
    response = card_of(
        await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": "retiring_device"})
    )
    assert "changed in Intune" in card_text(response)
    assert not sim.deprovision_posts()
