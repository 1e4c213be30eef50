"""Bulk deprovision end to end over HTTP: a pasted list → one summary card → confirm once → each device sent once."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import uuid
from typing import Any

from bot import messages as m
from bot.batches import FINISHED, RUNNING, BatchStore
from bot.store import CANCELLED, QUEUED, SUBMITTED
from cards.deprovision import message_card
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ADELE, ALEX, LYNNE, MEGAN, BotUnderTest, Connector, card_of, card_text, verbs_in

CART = [f"NHS-CART7-{i:02d}" for i in range(1, 31)]
REASON = "retiring_device"


def serial_of(sim: Simulator, name: str) -> str:
    [serial] = [d["serialNumber"] for d in sim.state.devices.values() if d["deviceName"] == name]
    return str(serial)


def device_id(sim: Simulator, name: str) -> str:
    [found] = [d["id"] for d in sim.state.devices.values() if d["deviceName"] == name]
    return str(found)


def add_cart(sim: Simulator, count: int, prefix: str = "NHS-CART8") -> list[str]:
    """More Chromebooks like NHS-CART7-01 (scope tag 1), through the simulator's tenant state."""
    template = sim.state.devices[device_id(sim, "NHS-CART7-01")]
    names = []
    for i in range(1, count + 1):
        device = copy.deepcopy(template)
        device.update(
            id=str(uuid.uuid4()),
            deviceName=f"{prefix}-{i:02d}",
            serialNumber=f"{prefix[-5:].replace('-', '')}{i:04d}X",
            azureADDeviceId=str(uuid.uuid4()),
            azureActiveDirectoryDeviceId="",
            deviceActionResults=[],
        )
        sim.state.devices[device["id"]] = device
        names.append(device["deviceName"])
    return names


def bulk_card(replies: list[Any]) -> tuple[dict[str, Any], str, str]:
    """(card, batch id, message id) of the bulk summary among the replies."""
    cards = [r for r in replies if r.cards]
    assert cards, [r.text for r in replies]
    card = cards[-1].cards[0]
    ids = [a["data"]["batchId"] for a in card.get("actions", []) if "batchId" in (a.get("data") or {})]
    ids += [str((card.get("refresh") or {}).get("action", {}).get("data", {}).get("batchId", ""))]
    return card, ids[0], str(cards[-1].activity_id)


def items_by_class(card: dict[str, Any]) -> str:
    return card_text(card)


async def wait_rows(bot: BotUnderTest, batch_id: str, done: Any, timeout: float = 30.0) -> list[Any]:
    assert bot.services is not None
    store = BatchStore(bot.running.store)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await store.rows(batch_id)
        if done(rows):
            return rows
        assert asyncio.get_running_loop().time() < deadline, [r.state for r in rows]
        await asyncio.sleep(0.05)


async def test_mixed_list_is_classified_and_confirm_posts_each_ready_device_once(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot()
    # One device already sent through the bot (held, "already in progress or done").
    replies = await bot.say(ADELE, "deprovision NHS-CART7-30")
    single = replies[-1].cards[0]
    action_id = single["actions"][0]["data"]["actionId"]
    await bot.click(ADELE, "deprovision.confirm", {"actionId": action_id, "reason": REASON})
    await connector.wait_for(lambda c: len(sim.deprovision_posts()) == 1)

    ready = CART[:22]
    listed = [
        "Serial number",  # a header line: skipped
        *ready[:12],
        *[serial_of(sim, n) for n in ready[12:]],  # by serial
        "nhs-cart7-01",  # a duplicate of an entry (any case): counted once
        serial_of(sim, "NHS-CART7-02"),  # the same device by serial: listed twice
        "NO-SUCH-DEVICE-1",
        "NO-SUCH-DEVICE-2",
        "NHS-OFFICE-PC01",  # Windows
        "RMS-LOANER-01",  # outside Adele's scope: exactly like a device that does not exist
        "NHS-LIB-01",  # two devices share the name
        "NHS-CART7-30",  # already sent
    ]
    assert len(listed) == 31
    graph_before = len(sim.round_trips())
    replies = await bot.say(ADELE, "deprovision\n" + "\n".join(listed) + "\nreason: retiring")
    card, batch_id, message_id = bulk_card(replies)
    _assert_mixed_summary(card, sim, graph_before)

    response = card_of(await bot.click(ADELE, "bulk.confirm", {"batchId": batch_id, "reason": REASON}))
    assert m.bulk_running_title(22) in card_text(response) or "finished" in card_text(response)
    rows = await wait_rows(bot, batch_id, lambda rows: all(r.state == SUBMITTED for r in rows))
    assert len(rows) == 22
    posts = sim.deprovision_posts()
    assert len(posts) == 23
    by_device = {p.path.split("/")[-2] for p in posts}
    assert by_device == {device_id(sim, n) for n in [*ready, "NHS-CART7-30"]}
    # The card is updated in place to the final list; a second confirm changes nothing.
    final = await connector.wait_for(
        lambda c: [u for u in c.updates(message_id) if "finished" in card_text(u.cards[0])], timeout=15
    )
    assert "NHS-CART7-01" in card_text(final[-1].cards[0])
    again = card_of(await bot.click(ADELE, "bulk.confirm", {"batchId": batch_id, "reason": REASON}))
    assert "bulk.confirm" not in verbs_in(again)
    assert len(sim.deprovision_posts()) == 23
    await _assert_each_device_audited_and_one_history_line(bot, batch_id)


def _assert_mixed_summary(card: dict[str, Any], sim: Simulator, graph_before: int) -> None:
    """The summary card of the mixed list: counts per class, nothing disclosed, the batched lookup."""
    text = card_text(card)
    assert m.bulk_title(22) in text
    counts = {f["title"]: f["value"] for f in card["body"][3]["facts"]}
    assert counts == {
        m.BULK_CLASSES["ready"]: "22",
        m.BULK_CLASSES["not_found"]: "3",
        m.BULK_CLASSES["ambiguous"]: "1",
        m.BULK_CLASSES["not_chromeos"]: "1",
        m.BULK_CLASSES["busy"]: "1",
        m.BULK_CLASSES["duplicate"]: "1",
    }, counts
    assert "RMS-LOANER-01" in text and "NXHQEAA500959207600" not in text  # listed as typed, nothing about it
    assert "runs Windows" in text and "PF881HK3" in text and "already sent to Intune" in text
    assert verbs_in(card) == ["bulk.confirm", "bulk.cancel"]
    assert card["actions"][0]["title"] == "Deprovision 22 devices"
    assert any(a["type"] == "Action.ToggleVisibility" for a in card["actions"])  # long list: "Show all"
    assert set(card["actions"][0]["data"]) == {"batchId", "verb"}  # nothing else travels in the card
    # The lookup is batched: 29 unique entries → 2 $batch rounds for the serials/ids round, 1 for the names left.
    lookups = [c for c in sim.round_trips()[graph_before:] if c.path == "/$batch"]
    assert len(lookups) <= math.ceil(29 / 20) + 2 + 3, len(lookups)  # + the role checks (3 batches of 20)
    assert len(sim.deprovision_posts()) == 1


async def _assert_each_device_audited_and_one_history_line(bot: BotUnderTest, batch_id: str) -> None:
    # Audit: every device on its own, with the batch id.
    events = [r async for r in bot.running.audit.rows()]
    bulk_events = [e for e in events if json.loads(e["details"]).get("batch_id") == batch_id]
    assert sorted({e["event"] for e in bulk_events}) == ["confirmed", "requested", "submitted", "succeeded"]
    for event in ("requested", "confirmed", "submitted", "succeeded"):
        assert len([e for e in bulk_events if e["event"] == event]) == 22, event
    # history: the bulk request is one line; history <device> shows the device's own line.
    history = card_text((await bot.say(ADELE, "history"))[-1].cards[0])
    assert "Bulk request, 22 devices" in history and "sent 22" in history
    # The batch's state in words (review finding 11), not its stored name.
    assert m.state_label(FINISHED) != FINISHED and m.state_label(RUNNING) != RUNNING
    assert f"22 devices — {m.state_label(FINISHED)} —" in history
    device_history = card_text((await bot.say(ADELE, "history NHS-CART7-05"))[-1].cards[0])
    assert "NHS-CART7-05" in device_history


async def test_unreadable_and_missing_devices_are_indistinguishable(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot()
    # Lynne may read nothing: whatever she lists, the answer is the same and nothing is disclosed.
    a = card_text(bulk_card(await bot.say(LYNNE, "deprovision NHS-CART7-01, NHS-OFFICE-PC01, NHS-LIB-01"))[0])
    b = card_text(bulk_card(await bot.say(LYNNE, "deprovision NO-SUCH-A, NO-SUCH-B, NO-SUCH-C"))[0])
    assert a.replace("NHS-CART7-01", "X").replace("NHS-OFFICE-PC01", "Y").replace("NHS-LIB-01", "Z") == (
        b.replace("NO-SUCH-A", "X").replace("NO-SUCH-B", "Y").replace("NO-SUCH-C", "Z")
    )
    assert "Windows" not in a and "PF881HK3" not in a
    # Megan may read but not deprovision: she learns why, and gets no button.
    card, batch_id, _ = bulk_card(await bot.say(MEGAN, "deprovision NHS-CART7-01, NHS-CART7-02, NO-SUCH-A"))
    assert m.BULK_CLASSES["denied"] in card_text(card) and not batch_id and not verbs_in(card)
    # Each denial is audited, and under no batch id: nothing was kept to look one up by.
    denied = [e async for e in bot.running.audit.rows() if e["event"] == "denied"]
    assert sorted(e["device_name"] for e in denied) == ["NHS-CART7-01", "NHS-CART7-02"]
    assert all("batch_id" not in json.loads(e["details"]) for e in denied), denied
    assert not sim.deprovision_posts()


async def test_too_many_matches_is_said_only_of_devices_the_requester_may_read(
    make_bot: BotFactory, sim: Simulator
) -> None:
    """Review finding 6: 101 Riverside devices share a name. Whoever may read none of them learns nothing from it —
    the same answer as for a name that does not exist; only someone who may read them hears "too many matches"."""
    bot = await make_bot()
    template = sim.state.devices[device_id(sim, "RMS-LOANER-01")]
    for i in range(101):
        spare = copy.deepcopy(template)
        spare.update(
            id=str(uuid.uuid4()),
            deviceName="RMS-SPARE",
            serialNumber=f"SPARE{i:04d}",
            azureADDeviceId=str(uuid.uuid4()),
            deviceActionResults=[],
        )
        sim.state.devices[spare["id"]] = spare
    for who in (LYNNE, ADELE):  # Lynne may read nothing, Adele only Northside
        spares = card_text(bulk_card(await bot.say(who, "deprovision\nRMS-SPARE\nNO-SUCH-THING"))[0])
        missing = card_text(bulk_card(await bot.say(who, "deprovision\nNO-SUCH-SPARE\nNO-SUCH-THING"))[0])
        assert spares.replace("RMS-SPARE", "X") == missing.replace("NO-SUCH-SPARE", "X"), who.name
        assert m.BULK_CLASSES["incomplete"] not in spares
    spares = card_text(bulk_card(await bot.say(ALEX, "deprovision\nRMS-SPARE\nNO-SUCH-THING"))[0])
    assert m.BULK_CLASSES["incomplete"] in spares  # Alex may read them: the list is too long to check safely


async def test_bad_lists_get_clear_answers_and_send_nothing(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(BULK_MAX="100")
    for text, expected in [
        ("deprovision ,;,\n", m.usage("empty")),
        ("deprovision " + ", ".join(f"D{i}" for i in range(101)), m.bulk_too_many(101, 100)),
        ("deprovision " + "A" * 100_000, m.usage("list_too_long")),
        ("deprovision A1, B\x072", m.usage("control")),
        ("deprovision A1, " + "B" * 200, m.bulk_entry_invalid(2, "B" * 200, "too_long")),
        ("deprovision A1, B2 reason: because I said", m.unknown_reason("because I said")),
    ]:
        replies = await bot.say(ALEX, text)
        assert replies[-1].text == expected, (text[:40], replies[-1].text)
    # OData quotes are data, never syntax.
    card, _, _ = bulk_card(await bot.say(ALEX, "deprovision O'Brien-Lab-01, x' or 1 eq 1 or 'a"))
    assert m.BULK_CLASSES["not_found"] in card_text(card) and "O'Brien" in card_text(card)
    assert not sim.deprovision_posts()


async def test_one_line_with_spaces_is_one_device_first_then_a_list(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot()
    replies = await bot.say(ALEX, "deprovision Chrome- PFSXKG0X")  # a device name with a space: one device
    assert verbs_in(replies[-1].cards[0]) == ["deprovision.confirm", "deprovision.cancel"]
    card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision NHS-CART7-01 NHS-CART7-02 NHS-CART7-03"))
    assert batch_id and card["actions"][0]["title"] == "Deprovision 3 devices"
    replies = await bot.say(ALEX, "deprovision NO SUCH DEVICE")  # nothing readable: the single answer
    assert replies[-1].text == m.not_found("NO SUCH DEVICE")


async def test_cancel_mid_run_stops_the_devices_not_yet_sent(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(BULK_CONCURRENCY="1")
    sim.control.latency = 0.15
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART)))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    await connector.wait_for(lambda c: len(sim.deprovision_posts()) >= 3, timeout=20)
    cancelled = card_of(await bot.click(ALEX, "bulk.cancel", {"batchId": batch_id}))
    assert m.BULK_TITLE_CANCELLED in card_text(cancelled)
    rows = await wait_rows(bot, batch_id, lambda rows: not [r for r in rows if r.state in (QUEUED, "submitting")])
    sent = [r for r in rows if r.state == SUBMITTED]
    assert 3 <= len(sent) < 30 and len(sent) + len([r for r in rows if r.state == CANCELLED]) == 30
    await asyncio.sleep(0.5)
    assert len(sim.deprovision_posts()) == len(sent)
    # Audit: every device was confirmed at the click, the ones not sent were cancelled — nothing else.
    for row in rows:
        events = [e["event"] for e in await bot.running.audit.for_action(row.id)]
        if row.state == CANCELLED:
            assert events == ["confirmed", "cancelled"], (row.device_name, events)
        else:
            assert events[:3] == ["confirmed", "submitted", "succeeded"], (row.device_name, events)
    # The cancelled devices are free again.
    free = next(r for r in rows if r.state == CANCELLED)
    replies = await bot.say(ALEX, f"deprovision {free.device_serial}")
    assert verbs_in(replies[-1].cards[0]) == ["deprovision.confirm", "deprovision.cancel"]


async def test_throttling_429_bursts_are_honoured_and_each_device_sent_once(
    make_bot: BotFactory, sim: Simulator
) -> None:
    # The bot's own budget is larger than Intune's here, so Graph answers 429 and the bot must wait it out.
    bot = await make_bot(BULK_CONCURRENCY="4", BULK_WRITE_BUDGET="100/1s", GRAPH_RETRY_AFTER_CAP="1")
    sim.control.write_limit = (5, 1.0)
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:14])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    rows = await wait_rows(bot, batch_id, lambda rows: all(r.state == SUBMITTED for r in rows), timeout=40)
    assert len(rows) == 14
    posts = sim.deprovision_posts()
    assert sorted(p.path for p in posts) == sorted(set(p.path for p in posts)) and len(posts) == 14
    assert [c for c in sim.calls if c.status == 429], "the simulator never throttled: the test proves nothing"


async def test_the_write_budget_keeps_within_intunes_limit(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(BULK_WRITE_BUDGET="5/1s")
    sim.control.write_limit = (5, 1.0)
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:12])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    await wait_rows(bot, batch_id, lambda rows: all(r.state == SUBMITTED for r in rows), timeout=40)
    assert not [c for c in sim.calls if c.status == 429]
    assert len(sim.deprovision_posts()) == 12


async def test_peer_approval_of_a_batch_drops_what_the_approver_may_not_approve(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    # Alex (all devices) asks for cart 7 and RMS-LOANER-01; Adele (Northside only) approves.
    listed = [*CART[:5], "RMS-LOANER-01"]
    card, batch_id, message_id = bulk_card(
        await bot.say(ALEX, "deprovision " + ", ".join(listed), conversation_type="groupChat")
    )
    # The shared card in a group chat: no device; the requester's own view comes by refresh (or "Show my view").
    assert verbs_in(card) == ["deprovision.refresh"] and "NHS-CART7" not in card_text(card)
    mine = card_of(await bot.click(ALEX, "deprovision.refresh", {"batchId": batch_id}, conversation_type="groupChat"))
    assert mine["actions"][0]["title"] == "Request approval for 6 devices"
    waiting = card_of(
        await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON}, conversation_type="groupChat")
    )
    assert m.BULK_TITLE_WAITING in card_text(waiting) and not sim.deprovision_posts()
    own = card_of(await bot.click(ALEX, "bulk.approve", {"batchId": batch_id}, conversation_type="groupChat"))
    assert m.card_cannot_approve_own() in card_text(own)
    adele = card_of(await bot.click(ADELE, "deprovision.refresh", {"batchId": batch_id}, conversation_type="groupChat"))
    [approve] = [a for a in adele["actions"] if a.get("verb") == "bulk.approve"]
    assert approve["title"] == "Approve 5 devices" and "RMS-LOANER-01" not in card_text(adele)
    approved = card_of(await bot.click(ADELE, "bulk.approve", approve["data"], conversation_type="groupChat"))
    assert "Adele Vance" in card_text(approved)
    rows = await wait_rows(bot, batch_id, lambda rows: rows and all(r.state == SUBMITTED for r in rows))
    assert sorted(r.device_name for r in rows) == CART[:5]
    assert all(r.approver_name == "Adele Vance" for r in rows)
    assert len(sim.deprovision_posts()) == 5 and not sim.deprovision_posts(device_id(sim, "RMS-LOANER-01"))
    batch = await BatchStore(bot.running.store).get(batch_id)
    assert batch is not None
    assert [i["entry"] for i in batch.items if i["class"] == "not_approved"] == ["RMS-LOANER-01"]
    # Audit: each device approved before it was submitted; the device left out is on record, with the batch.
    for row in rows:
        events = [e["event"] for e in await bot.running.audit.for_action(row.id)]
        assert events[:3] == ["approved", "submitted", "succeeded"], (row.device_name, events)
    dropped = [e async for e in bot.running.audit.rows() if e["event"] == "dropped"]
    assert [(e["device_name"], e["actor_name"]) for e in dropped] == [("RMS-LOANER-01", "Adele Vance")]
    assert json.loads(dropped[0]["details"]) == {"batch_id": batch_id, "why": "not_approved"}
    await connector.wait_for(
        lambda c: [u for u in c.updates(message_id) if m.BULK_TITLE_FINISHED in card_text(u.cards[0])], timeout=15
    )
    # The requester's view names what was left out, and by whom, so the rest can be requested again.
    final = card_text(card_of(await bot.click(ALEX, "deprovision.refresh", {"batchId": batch_id})))
    assert m.BULK_CLASSES["not_approved"] in final
    assert "RMS-LOANER-01" in final and m.bulk_not_approved_by("Adele Vance") in final


async def test_an_expired_bulk_request_sends_nothing(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    bot = await make_bot(ACTION_TTL="1")
    _card, batch_id, message_id = bulk_card(await bot.say(ALEX, "deprovision NHS-CART7-01, NHS-CART7-02"))
    await asyncio.sleep(1.1)
    counts = await bot.running.workflow.sweep()
    assert counts["bulk_expired"] == 1
    updated = await connector.wait_for(lambda c: c.updates(message_id))
    assert m.BULK_TITLE_EXPIRED in card_text(updated[-1].cards[0]) and not verbs_in(updated[-1].cards[0])
    answer = card_of(await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON}))
    assert m.BULK_TITLE_EXPIRED in card_text(answer) and not verbs_in(answer)
    assert not sim.deprovision_posts()
    # Someone else's click on the card learns nothing about it.
    other = card_of(await bot.click(MEGAN, "bulk.confirm", {"batchId": batch_id, "reason": REASON}))
    assert card_text(other) == card_text(message_card(m.CARD_TITLE_UNAVAILABLE, [m.card_not_available()]))


async def test_an_approver_in_another_chat_finds_the_bulk_request_with_pending(
    make_bot: BotFactory, sim: Simulator
) -> None:
    bot = await make_bot(APPROVAL_MODE="peer")
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision NHS-CART7-01, NHS-CART7-02, NHS-CART7-03"))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    # Lynne may approve nothing: the bulk request is not even listed for her.
    assert (await bot.say(LYNNE, "pending"))[-1].text == m.pending_empty()
    pending = (await bot.say(ADELE, "pending"))[-1].cards[0]
    assert "Bulk request, 3 devices you can see — by Alex Wilber" in card_text(pending)
    [open_] = [a for a in pending["actions"] if a["data"].get("batchId") == batch_id]
    view = card_of(await bot.click(ADELE, open_["verb"], open_["data"]))  # in Adele's own 1:1 chat
    assert verbs_in(view) == ["bulk.approve", "bulk.reject"]
    rejected = card_of(await bot.click(ADELE, "bulk.reject", {"batchId": batch_id, "comment": "not this term"}))
    assert m.BULK_TITLE_REJECTED in card_text(rejected) and "not this term" in card_text(rejected)
    assert not sim.deprovision_posts()
    assert (await bot.say(ADELE, "pending"))[-1].text == m.pending_empty()


async def test_pending_checks_no_devices_for_someone_without_a_role_and_a_bounded_number_for_others(
    make_bot: BotFactory, sim: Simulator
) -> None:
    """Review finding 8: ``pending`` must not let anyone trigger role checks over every device of every waiting bulk
    request. Someone who may read no device costs one round trip; an approver's checks are bounded (at most
    ``BULK_MAX`` devices, each once, spread over the waiting requests), and every request they may approve is listed."""
    bot = await make_bot(APPROVAL_MODE="peer", BULK_MAX="30")

    async def ask() -> None:
        _c, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART)))
        await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})

    async def pending(who: Any) -> tuple[Any, int, int]:
        """The reply, the Graph round trips and the Graph requests (sub-requests of a $batch included) it cost."""
        calls, trips = len(sim.calls), len(sim.round_trips())
        reply = (await bot.say(who, "pending"))[-1]
        return reply, len(sim.round_trips()) - trips, len(sim.calls) - calls

    await ask()
    _reply, _trips, one_request = await pending(ADELE)
    await ask()
    await ask()  # three requests waiting, 90 devices listed
    reply, _trips, three_requests = await pending(ADELE)
    assert card_text(reply.cards[0]).count("Bulk request, 30 devices") == 3
    assert three_requests <= one_request, (one_request, three_requests)
    reply, trips, _calls = await pending(LYNNE)
    assert reply.text == m.pending_empty()
    assert trips <= 1, trips  # may she read devices at all: one round trip, nothing per device
