"""Least disclosure (graph-intune.md §16): a requester learns about a device only what Intune would show them.

A matrix over HTTP: demo users × commands × devices they can read, devices outside their scope and devices that
do not exist. Replies about an unreadable device must be *identical* to those about a nonexistent one (apart from
the typed text) and must carry none of its facts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot import messages as m
from bot.batches import BatchStore
from cards.deprovision import message_card
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import (
    ADELE,
    ALEX,
    GROUP,
    ISAIAH,
    LYNNE,
    MEGAN,
    PATTI,
    BotUnderTest,
    Captured,
    Connector,
    User,
    action_id_of,
    card_of,
    card_text,
    verbs_in,
)
from tests.scenarios.test_bulk import wait_rows

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


# -- bulk requests: every viewer × every surface ------------------------------------------------------------------
#
# Alex (all devices) lists, in a group chat whose members are Alex, Megan, Adele and Lynne: three Northside Chromebooks
# (Adele's scope tag), a Riverside loaner (Isaiah's scope group), a Windows PC, a Chromebook Patti's own request holds,
# and a device that does not exist. Isaiah and Patti are not members of the chat. What each person may learn:
#
# | viewer                         | shared card | own view (refresh, Open)            | pending            | approve/reject |
# |--------------------------------|-------------|-------------------------------------|--------------------|----------------|
# | Alex, requester                | no device   | everything he typed, every class    | own, 4 devices     | not his own    |
# | Adele, approver for Northside  | no device   | the 3 Northside ones, Approve 3     | 3 devices you see  | the 3 only     |
# | Isaiah, approver for Riverside | —           | from his own chat: the loaner only  | 1 device you see   | the loaner     |
# | Megan, read-only (all devices) | no device   | the 4 ready ones, no button         | nothing            | refused        |
# | Lynne, no role (member)        | no device   | no device, no count                 | nothing            | refused        |
# | Lynne or Megan from their chat | —           | "not available"                     | —                  | "not available"|
#
# "No device" means no name, serial, id, typed entry, OS, other person's request, denial or count: the shared card
# and every message in the chat are read by every member (and by Teams clients that show the base card).

BULK_READY = ["NHS-CART7-01", "NHS-CART7-02", "NHS-CART7-03", "RMS-LOANER-01"]
BULK_LISTED = [*BULK_READY, "NHS-OFFICE-PC01", "NHS-CART3-06", NOWHERE]
BULK_MEMBERS = [ALEX, MEGAN, ADELE, LYNNE]
#: The ready devices each person may read (their projection).
BULK_SEES: dict[str, list[str]] = {
    ADELE.name: BULK_READY[:3],
    ISAIAH.name: BULK_READY[3:],
    MEGAN.name: BULK_READY,
    LYNNE.name: [],
}
IN_GROUP: dict[str, Any] = {"conversation_type": "groupChat"}


def _secrets(sim: Simulator, names: list[str]) -> list[str]:
    """Every listed device's name, serial and ids, and the facts of the entries that are not ready."""
    values = [NOWHERE, "Windows", "Patti"]
    for name in names:
        device = row(sim, name)
        values += [name, str(device["serialNumber"]), str(device["id"]), str(device.get("azureADDeviceId") or "")]
    return [v for v in values if v]


def _unseen(sim: Simulator, user: User) -> list[str]:
    hidden = [n for n in BULK_LISTED if n != NOWHERE and n not in BULK_SEES[user.name]]
    return _secrets(sim, hidden)


def _counts(card: dict[str, Any]) -> dict[str, str]:
    def walk(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            return [node, *(n for v in node.values() for n in walk(v))]
        return [n for v in node for n in walk(v)] if isinstance(node, list) else []

    return {
        f["title"]: f["value"] for n in walk(card.get("body", [])) if n.get("type") == "FactSet" for f in n["facts"]
    }


def _plain(text: str) -> str:
    """Without the client-side date and time functions (their digits are the expiry, not a count)."""
    return re.sub(r"\{\{(DATE|TIME)\([^)]*\)[^}]*\}\}", "", text)


def assert_shared(sim: Simulator, what: str) -> None:
    """Anything every member of the chat reads: no device fact, no typed entry, no count."""
    leaked = [s for s in _secrets(sim, BULK_LISTED[:-1]) if s.lower() in what.lower()]
    assert not leaked and not re.search(r"\d", _plain(what)), (leaked, what)


def assert_projection(
    sim: Simulator, user: User, card: dict[str, Any], *, covered: int | None = None, sent: list[str] | None = None
) -> None:
    """``user`` sees exactly the ready devices they may read (of those ``sent``, once it ran), counted over those."""
    text = card_text(card)
    seen = [n for n in BULK_SEES[user.name] if sent is None or n in sent]
    leaked = [s for s in _unseen(sim, user) if s.lower() in text.lower()]
    assert not leaked, (user.name, leaked, text)
    assert all(name in text for name in seen), (user.name, text)
    expected = {m.BULK_CLASSES["ready"]: str(len(seen))} if seen else {}
    if covered is not None and covered < len(seen):
        expected = {m.BULK_CLASSES["ready"]: str(covered), m.BULK_CLASSES["not_covered"]: str(len(seen) - covered)}
    counts = {k: v for k, v in _counts(card).items() if k in m.BULK_CLASSES.values()}
    if sent is not None and seen:  # the run's tally: every device it counts is one the viewer may read
        tally = (m.FACT_DONE, m.FACT_FAILED, m.FACT_UNKNOWN, m.FACT_REMAINING, m.FACT_NOT_SENT)
        expected, counts = (
            {"devices": str(len(seen))},
            {"devices": str(sum(int(_counts(card).get(k, 0)) for k in tally))},
        )
    assert counts == expected, (user.name, _counts(card))


def assert_unavailable(card: dict[str, Any]) -> None:
    assert card_text(card) == card_text(message_card(m.CARD_TITLE_UNAVAILABLE, [m.card_not_available()]))


async def _group_messages(bot: BotUnderTest, since: int) -> str:
    calls = [c for c in bot.connector.calls[since:] if c.conversation_id == GROUP and c.body.get("type") == "message"]
    return "\n".join([c.text for c in calls] + [card_text(card) for c in calls for card in c.cards])


async def test_a_bulk_request_shows_each_person_only_what_they_may_read(
    peer_bot: BotUnderTest, sim: Simulator, connector: Connector
) -> None:
    bot = peer_bot
    connector.members[GROUP] = BULK_MEMBERS
    await _request_and_confirm(bot, PATTI, row(sim, "NHS-CART3-06")["serialNumber"])  # Patti's request holds it
    start = len(connector.calls)
    replies = await bot.say(ALEX, "deprovision " + "\n".join(BULK_LISTED), **IN_GROUP)
    [shared] = [r for r in replies if r.cards]
    assert_shared(sim, card_text(shared.cards[0]))
    batch_id = str(shared.cards[0]["refresh"]["action"]["data"]["batchId"])
    ref = {"batchId": batch_id}

    async def view(user: User, verb: str = "deprovision.refresh", **data: Any) -> dict[str, Any]:
        where = IN_GROUP if user in BULK_MEMBERS else {}
        return card_of(await bot.click(user, verb, {**ref, **data}, **where))

    await _before_confirm(bot, sim, view, ref)

    await bot.click(ALEX, "bulk.confirm", {**ref, **REASON}, **IN_GROUP)
    adele, isaiah = await _approver_views(bot, sim, view, ref)
    await _pending_rows(bot, sim, batch_id)
    await _only_eligible_approvers(bot, sim, view, adele, isaiah, batch_id)

    done = await view(ADELE, "bulk.approve", covers=adele["actions"][0]["data"]["covers"])
    assert_projection(sim, ADELE, done, sent=BULK_READY[:3])
    rows = await wait_rows(bot, batch_id, lambda rows: rows and all(r.state == "submitted" for r in rows))
    assert sorted(r.device_name for r in rows) == BULK_READY[:3]
    await connector.wait_for(
        lambda c: [u for u in c.updates(shared.activity_id) if m.BULK_TITLE_FINISHED in card_text(u.cards[0])],
        timeout=15,
    )

    await _after_the_run(bot, sim, view)

    # Everything the chat's members read — the cards as sent and updated, the notices — stayed neutral.
    await connector.wait_for(lambda c: [s for s in c.sent(GROUP) if s.text == m.proactive_bulk_finished_shared()])
    assert_shared(sim, await _group_messages(bot, start))


View = Callable[..., Awaitable[dict[str, Any]]]


async def _before_confirm(bot: BotUnderTest, sim: Simulator, view: View, ref: dict[str, str]) -> None:
    # The requester's own view: everything he typed, every class.
    mine = card_text(await view(ALEX))
    for fact in [NOWHERE, "NHS-OFFICE-PC01", "Windows", "NHS-CART3-06", "Patti Fernandez", *BULK_READY]:
        assert fact in mine, fact
    # Members see their projection; nobody else learns of the request.
    for user in (ADELE, MEGAN, LYNNE):
        card = await view(user)
        assert_projection(sim, user, card)
        assert not verbs_in(card)
    graph_calls = len(sim.round_trips())
    for outsider in (ISAIAH, PATTI):
        assert_unavailable(await view(outsider))
    for member in (LYNNE, MEGAN):  # a member clicking from their own chat is an outsider there
        assert_unavailable(card_of(await bot.click(member, "deprovision.refresh", ref)))
    assert len(sim.round_trips()) == graph_calls  # nothing to approve yet: a stranger's click costs no Graph call


async def _approver_views(
    bot: BotUnderTest, sim: Simulator, view: View, ref: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    # Approvers: the devices they may read, marked by what Approve sends; Isaiah finds it from his own chat.
    adele = await view(ADELE)
    assert_projection(sim, ADELE, adele, covered=3)
    assert verbs_in(adele) == ["bulk.approve", "bulk.reject"] and adele["actions"][0]["title"] == "Approve 3 devices"
    isaiah = await view(ISAIAH)
    assert_projection(sim, ISAIAH, isaiah, covered=1)
    assert isaiah["actions"][0]["title"] == "Approve 1 device"
    for user in (MEGAN, LYNNE):
        card = await view(user)
        assert_projection(sim, user, card)
        assert not verbs_in(card)
    for outsider in (LYNNE, MEGAN):
        assert_unavailable(card_of(await bot.click(outsider, "deprovision.refresh", ref)))
        assert_unavailable(card_of(await bot.click(outsider, "bulk.reject", {**ref, "comment": "no"})))
    return adele, isaiah


async def _pending_rows(bot: BotUnderTest, sim: Simulator, batch_id: str) -> None:
    # pending + Open: someone else's request counts only what the viewer may read.
    expected_rows = {
        ALEX.name: "Bulk request, 4 devices — your request",
        ADELE.name: "Bulk request, 3 devices you can see — by Alex Wilber",
        ISAIAH.name: "Bulk request, 1 device you can see — by Alex Wilber",
    }
    for user in (ALEX, ADELE, ISAIAH, MEGAN, LYNNE):
        reply = (await bot.say(user, "pending"))[-1]
        bulk_rows = [line for c in reply.cards for line in card_text(c).splitlines() if "Bulk request" in line]
        assert [r.split(" · ")[0] for r in bulk_rows] == (
            [expected_rows[user.name]] if user.name in expected_rows else []
        )
        if user in (ADELE, ISAIAH):
            [open_] = [a for a in reply.cards[0]["actions"] if a["data"].get("batchId") == batch_id]
            opened = card_of(await bot.click(user, open_["verb"], open_["data"]))  # from their own chat
            assert_projection(sim, user, opened, covered=len(BULK_SEES[user.name]))


async def _only_eligible_approvers(
    bot: BotUnderTest, sim: Simulator, view: View, adele: dict[str, Any], isaiah: dict[str, Any], batch_id: str
) -> None:
    # Approve and reject: only an eligible approver, and only what their view showed.
    for user in (MEGAN, LYNNE):
        for verb in ("bulk.approve", "bulk.reject"):
            card = await view(user, verb, comment="no", covers=adele["actions"][0]["data"]["covers"])
            assert m.card_not_eligible_bulk() in card_text(card) and not verbs_in(card)
            assert_projection(sim, user, card)
    assert m.card_cannot_approve_own() in card_text(await view(ALEX, "bulk.approve"))
    stale = await view(ADELE, "bulk.approve", covers=isaiah["actions"][0]["data"]["covers"])
    assert m.card_bulk_approval_changed() in card_text(stale)
    assert not sim.deprovision_posts(device_id=row(sim, "NHS-CART7-01")["id"])
    batch = await BatchStore(bot.running.store).get(batch_id)
    assert batch is not None and batch.state == "awaiting_approval"


async def _after_the_run(bot: BotUnderTest, sim: Simulator, view: View) -> None:
    # After the run: each person's results over what they may read; the requester sees what was left out.
    final = card_text(await view(ALEX))
    assert "RMS-LOANER-01" in final and m.bulk_not_approved_by("Adele Vance") in final
    for user in (ADELE, MEGAN, LYNNE):
        card = await view(user)
        assert_projection(sim, user, card, sent=BULK_READY[:3])
        assert sum(1 for line in card_text(card).splitlines() if "sent, waiting for Google" in line) == min(
            3, len(BULK_SEES[user.name])
        )
    assert_unavailable(await view(ISAIAH))

    # history: the requester's own line; a device's line only for its readers.
    assert "Bulk request, 3 devices" in shown(await bot.say(ALEX, "history"))
    assert "Alex Wilber" in shown(await bot.say(ADELE, "history NHS-CART7-01"))
    await only_not_found(bot, ISAIAH, "history", "NHS-CART7-01")
    await only_not_found(bot, ADELE, "history", "RMS-LOANER-01")
    assert (await bot.say(LYNNE, "history"))[-1].text == m.denied_read("history")
    assert "Alex Wilber" not in shown(await bot.say(ADELE, "history"))


async def test_in_a_bulk_request_an_unreadable_device_looks_like_a_missing_one(peer_bot: BotUnderTest) -> None:
    """Two lists that differ only in devices Isaiah (Riverside) and Lynne (no role) may not read — Northside
    Chromebooks and a Windows PC in one, devices that do not exist in the other — look the same to them, card for
    card and count for count: their views before and after confirmation, and their pending rows."""
    bot = peer_bot
    lists = [
        ["NHS-CART7-01", "NHS-CART7-02", "RMS-LOANER-01", "NHS-OFFICE-PC01", NOWHERE],
        ["NO-SUCH-DEVICE-43", "NO-SUCH-DEVICE-44", "RMS-LOANER-01", "NO-SUCH-DEVICE-45", NOWHERE],
    ]
    batches: list[str] = []
    for listed in lists:
        replies = await bot.say(ALEX, "deprovision " + ", ".join(listed), **IN_GROUP)
        [shared] = [r for r in replies if r.cards]
        batches.append(str(shared.cards[0]["refresh"]["action"]["data"]["batchId"]))

    def same(cards: list[dict[str, Any]]) -> str:
        texts = []
        for card, batch_id in zip(cards, batches, strict=True):
            visible = json.dumps({"body": card.get("body"), "actions": card.get("actions")}, sort_keys=True)
            texts.append(_plain(visible.replace(batch_id, "BATCH")))
        assert texts[0] == texts[1], texts
        return texts[0]

    async def views(user: User, where: dict[str, Any]) -> str:
        return same([card_of(await bot.click(user, "deprovision.refresh", {"batchId": b}, **where)) for b in batches])

    for user in (ISAIAH, LYNNE):
        await views(user, IN_GROUP)
    for batch_id in batches:
        await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, **REASON}, **IN_GROUP)
    assert "RMS-LOANER-01" in await views(ISAIAH, {})  # his approver view, from his own chat
    await views(LYNNE, IN_GROUP)
    pending = card_text((await bot.say(ISAIAH, "pending"))[-1].cards[0]).splitlines()
    rows = [_plain(line) for line in pending if "Bulk request" in line]
    assert len(rows) == 2 and rows[0] == rows[1] and rows[0].startswith(m.pending_bulk_row(1, "Alex Wilber", own=False))
