"""The bulk request card: every state for every viewer is Teams-safe, phone-first, and under the size limit."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest

from bot import messages as m
from cards import verbs
from cards.bulk import MAX_BYTES, MORE_ID, VISIBLE, BulkView, bulk_card, shared_card
from cards.info import pending_card
from tests.cards.test_cards import DEVICE, assert_teams_safe, walk

STATES = ("requested", "awaiting_approval", "running", "finished", "cancelled", "expired")
CLASSES = tuple(m.BULK_CLASSES)


def item(i: int, klass: str = "ready", long: bool = False) -> dict[str, Any]:
    name = f"NHS-CART7-{i:03d}" + ("-" + "L" * 250 if long else "")
    device = dict(DEVICE, id=f"id-{i}", name=name, serial=f"PF{i:06d}" + ("S" * 100 if long else ""))
    if long:
        device["enrollment_profile"] = "/Students/" + "Very Long Organisational Unit " * 10
    return {"entry": name, "class": klass, "device": device, "detail": "why " * (40 if long else 2), "requester": "R"}


def view(state: str, items: list[dict[str, Any]], **kw: Any) -> BulkView:
    results = kw.pop("results", None)
    if results is None and state in ("running", "finished", "cancelled"):
        states = ("submitted", "failed", "unknown", "queued", "cancelled", "confirmed")
        results = [(i["device"]["name"], i["device"]["serial"], states[n % 6]) for n, i in enumerate(items)]
    values: dict[str, Any] = {"expires_at": 1_800_000_000, "updated_at": 1_800_000_000, "reason": "retiring_device"}
    values.update(kw)
    return BulkView("batch-id-1234567890abcd", state, "Alex Wilber", "29:alex", items, results=results or (), **values)


def mixed(count: int, long: bool = False) -> list[dict[str, Any]]:
    return [item(i, CLASSES[i % len(CLASSES)] if i % 3 else "ready", long) for i in range(count)]


def _state_card(state: str, viewer: str, group: bool) -> dict[str, Any]:
    return bulk_card(view(state, mixed(30), is_group=group), viewer)


def bulk_catalogue() -> dict[str, Callable[[], dict[str, Any]]]:
    """Every bulk card shape, for the schema test."""
    cards: dict[str, Callable[[], dict[str, Any]]] = {}
    for state in STATES:
        for viewer in ("requester", "approver", "other"):
            for group in (False, True):
                name = f"bulk-{state}-{viewer}-{'group' if group else '1to1'}"
                cards[name] = functools.partial(_state_card, state, viewer, group)
    cards["bulk-100-long-names"] = lambda: bulk_card(view("requested", mixed(100, long=True)), "requester")
    cards["bulk-nothing-ready"] = lambda: bulk_card(view("requested", [item(1, "not_found")]), "requester")
    cards["bulk-rejected"] = lambda: bulk_card(view("cancelled", mixed(3), comment="no", results=[]), "other")
    cards["pending-with-bulk"] = lambda: pending_card(
        "2 request(s)",
        [("abcdefghijklmnopqrstuvwx", "NHS-CART3-01", "NHS-CART3-01 by Alex", 1_800_000_000)],
        [("batch-id-1234567890abcd", m.pending_bulk_label(30), m.pending_bulk_row(30, "Alex", own=False), 1.8e9)],
    )
    cards["bulk-note"] = lambda: bulk_card(view("requested", mixed(3), note="Choose a reason"), "requester")
    for state in STATES:
        cards[f"bulk-shared-{state}"] = functools.partial(
            lambda s: shared_card(view(s, mixed(30), is_group=True)), state
        )
    return cards


@pytest.mark.parametrize("name", sorted(bulk_catalogue()))
def test_every_bulk_card_is_teams_safe(name: str) -> None:
    card = bulk_catalogue()[name]()
    assert_teams_safe(card)
    for node in walk(card):
        if node.get("type") == "Action.Execute":
            # never a device in the data (``covers``: a digest of the devices an approval covers)
            assert set(node["data"]) <= {"batchId", "actionId", "verb", "covers"}, node


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("long", [False, True])
def test_a_hundred_devices_stay_under_the_size_limit(state: str, long: bool) -> None:
    card = bulk_card(view(state, mixed(100, long=long)), "requester")
    size = len(json.dumps(card).encode())
    assert size <= MAX_BYTES < 28 * 1024, size


def test_long_lists_collapse_behind_show_all() -> None:
    card = bulk_card(view("requested", [item(i) for i in range(30)]), "requester")
    toggles = [a for a in card["actions"] if a["type"] == "Action.ToggleVisibility"]
    assert toggles and toggles[0]["targetElements"] == [MORE_ID] and toggles[0]["title"] == "Show all (30)"
    [hidden] = [n for n in walk(card) if n.get("id") == MORE_ID]
    assert hidden["isVisible"] is False
    shown = [n for n in card["body"] if n.get("type") == "TextBlock" and "PF0000" in n.get("text", "")]
    assert len(shown) == VISIBLE
    # Everything is still in the card: 30 ready lines.
    assert sum(1 for n in walk(card) if n.get("type") == "TextBlock" and "· PF" in n.get("text", "")) == 30
    small = bulk_card(view("requested", [item(i) for i in range(3)]), "requester")
    assert not [a for a in small["actions"] if a["type"] == "Action.ToggleVisibility"]


def test_confirm_buttons_name_the_count_and_only_the_requester_gets_them() -> None:
    card = bulk_card(view("requested", mixed(9)), "requester")
    assert [a.get("verb") for a in card["actions"][:2]] == [verbs.BULK_CONFIRM, verbs.BULK_CANCEL]
    assert card["actions"][0]["title"] == "Deprovision 3 devices" and card["actions"][0]["style"] == "destructive"
    assert not [a for a in bulk_card(view("requested", mixed(9)), "other").get("actions", []) if "verb" in a]
    peer = bulk_card(view("requested", mixed(9), approval_mode=True), "requester")
    assert peer["actions"][0]["title"] == "Request approval for 3 devices" and "style" not in peer["actions"][0]
    running = bulk_card(view("running", mixed(9)), "requester")
    assert [a.get("verb") for a in running["actions"] if "verb" in a] == [verbs.BULK_CANCEL]


def test_hostile_entries_render_as_text() -> None:
    hostile = "[click](https://evil.example) <at>Alex</at> **bold**"
    card = bulk_card(view("requested", [dict(item(1, "not_found"), entry=hostile), item(2)]), "requester")
    text = json.dumps(card)
    assert "[click](" not in text and "<at>" not in text and "**bold**" not in text


@pytest.mark.parametrize("state", STATES)
def test_the_shared_card_names_no_device_and_no_count(state: str) -> None:
    """What every member of a group chat or channel reads (graph-intune.md §16): each person's view comes by refresh."""
    card = shared_card(view(state, mixed(30), is_group=True, comment="no" if state == "cancelled" else None))
    text = "\n".join(str(n.get(k)) for n in walk(card) for k in ("text", "title", "fallbackText") if n.get(k))
    assert "NHS-CART7" not in text and "PF0" not in text and not any(ch.isdigit() for ch in text), text
    assert [a.get("verb") for a in card["actions"]] == [verbs.REFRESH]
    assert card["refresh"]["userIds"][0] == "29:alex"  # the requester's own view, in every state


def test_an_approver_sees_what_approve_sends() -> None:
    items = [item(1), item(2), item(3, "not_covered")]
    card = bulk_card(view("awaiting_approval", items, covers="digest-of-1-and-2"), "approver")
    approve = card["actions"][0]
    assert approve["title"] == "Approve 2 of 3 devices" and approve["data"]["covers"] == "digest-of-1-and-2"
    assert m.BULK_CLASSES["not_covered"] in json.dumps(card)
    assert bulk_card(view("awaiting_approval", items[:2]), "approver")["actions"][0]["title"] == "Approve 2 devices"
