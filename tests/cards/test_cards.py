"""Cards are pure functions; every card the bot can produce must be safe for Teams desktop and mobile."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bot import messages as m
from cards import verbs
from cards.deprovision import ActionView, action_card, message_card
from cards.info import help_card, history_card, pending_card, selection_card, status_card

DEVICE = {
    "id": "27ab6835-99f8-5907-ac4d-64c0365f0d40",
    "name": "NHS-CART3-01",
    "serial": "5CD0832TGL",
    "user_display_name": "",
    "user_principal_name": "",
    "enrollment_profile": "/Students/Northside High/Cart 3",
    "last_sync": "2026-11-20T08:00:00Z",
    "scope_tag_ids": ["1"],
}
STATES = ("requested", "awaiting_approval", "submitting", "submitted", "failed", "unknown", "cancelled", "expired")
VIEWERS = ("requester", "approver", "other")
MAX_CARD_BYTES = 28 * 1024


def view(state: str, **kw: Any) -> ActionView:
    defaults: dict[str, Any] = {
        "action_id": "abcdefghijklmnopqrstuvwx",
        "state": state,
        "requester_name": "Alex Wilber",
        "requester_mri": "29:alex",
        "device": DEVICE,
        "reason": "retiring_device" if state != "requested" else None,
        "expires_at": 1_800_000_000,
        "updated_at": 1_800_000_000,
        "tag_names": {"1": "Northside High"},
    }
    defaults.update(kw)
    return ActionView(**defaults)


def walk(node: Any):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def assert_teams_safe(card: dict[str, Any]) -> None:
    assert card["type"] == "AdaptiveCard"
    major, minor = (int(x) for x in card["version"].split("."))
    assert (major, minor) <= (1, 5)
    assert len(json.dumps(card).encode()) < MAX_CARD_BYTES
    for node in walk(card):
        kind = node.get("type")
        if kind == "Action.Execute":
            assert node.get("verb") in verbs.ALL, node
            assert node["data"].get("verb") == node["verb"]  # Action.Submit fallbacks can route too
        if kind == "Image":
            assert node.get("url"), "an Image without url blanks the card on Teams mobile"
        if kind in ("Action.Submit", "Media"):
            raise AssertionError(f"{kind} is not used by this bot")
        if kind == "ActionSet":
            raise AssertionError("body-level ActionSet breaks iOS rendering; use card-level actions")
        assert "style" not in node or node.get("type") not in ("Action.Execute",), (
            "positive/destructive styling unsupported"
        )
        if kind and kind.startswith("Input."):
            assert not node.get("isRequired"), (
                "isRequired inputs break Action.Execute on Teams mobile (AdaptiveCards#9315)"
            )
            assert node.get("label"), "inputs need a visible label"
    for node in walk(card.get("body", [])):
        if node.get("type") == "TextBlock":
            assert node.get("wrap") is True, "text must wrap on phones"
    refresh = card.get("refresh")
    if refresh:
        assert refresh["action"]["verb"] == verbs.REFRESH
        assert len(refresh.get("userIds", [])) <= 60


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("is_group", [False, True])
def test_every_state_card_is_teams_safe(state: str, viewer: str, is_group: bool) -> None:
    card = action_card(view(state, is_group=is_group, retryable=state == "failed", approver_mris=("29:patti",)), viewer)
    assert_teams_safe(card)
    text = json.dumps(card)
    assert "NHS-CART3-01" in text and "5CD0832TGL" in text
    ids = [n["data"].get("actionId") for n in walk(card) if n.get("type") == "Action.Execute"]
    assert all(i == "abcdefghijklmnopqrstuvwx" for i in ids)
    assert "27ab6835" not in json.dumps([n.get("data") for n in walk(card) if "data" in n])  # no device id in card data


def test_confirmation_card_content() -> None:
    card = action_card(view("requested"), "requester")
    text = json.dumps(card, ensure_ascii=False)
    for line in m.WHAT_IT_DOES:
        assert line in text
    assert [a["title"] for a in card["actions"]] == ["Deprovision", "Cancel"]
    assert card["actions"][1]["associatedInputs"] == "none"
    choice = next(e for e in card["body"] if e.get("type") == "Input.ChoiceSet")
    assert [c["value"] for c in choice["choices"]] == list(m.REASONS)
    assert "value" not in choice  # no silent default reason
    assert "Northside High" in text and "none (shared device)" in text


def test_base_card_in_group_has_no_buttons_and_refreshes_for_the_requester() -> None:
    card = action_card(view("requested", is_group=True), "other")
    assert "actions" not in card
    assert card["refresh"]["userIds"] == ["29:alex"]
    assert "Waiting for Alex Wilber" in json.dumps(card)


def test_awaiting_approval_refresh_includes_approvers() -> None:
    card = action_card(view("awaiting_approval", is_group=True, approver_mris=("29:patti", "29:alex")), "other")
    assert card["refresh"]["userIds"] == ["29:alex", "29:patti"]
    approver = action_card(view("awaiting_approval", is_group=True), "approver")
    assert [a["verb"] for a in approver["actions"]] == [verbs.APPROVE, verbs.REJECT]


def test_user_text_cannot_blow_the_card_size() -> None:
    huge = dict(DEVICE, name="N" * 10_000, enrollment_profile="/" + "x" * 10_000)
    card = action_card(view("requested", device=huge, requester_name="R" * 5000), "requester")
    assert_teams_safe(card)


def test_info_cards_are_teams_safe() -> None:
    assert_teams_safe(help_card())
    candidates = [dict(DEVICE, serial=f"SER{i}") for i in range(10)]
    selection = selection_card("NHS-LIB-01", 12, "selection-id-1234567890", candidates)
    assert_teams_safe(selection)
    assert len(selection["actions"]) == 10
    assert all(set(a["data"]) == {"selectionId", "index", "verb"} for a in selection["actions"])
    assert_teams_safe(
        status_card(
            DEVICE, {}, operating_system="ChromeOS", management_state="managed", chrome_state="", last_action=""
        )
    )
    assert_teams_safe(history_card("Your last actions", [("2026-11-28 10:00", "NHS-CART3-01 — deprovisioned")] * 10))
    assert_teams_safe(
        pending_card(
            "1 request(s)", [("abcdefghijklmnopqrstuvwx", "NHS-CART3-01", "NHS-CART3-01 by Alex", 1_800_000_000)]
        )
    )
    assert_teams_safe(message_card("Expired", ["This card is no longer valid."]))


def test_importing_cards_imports_no_graph_client() -> None:
    """``cards/`` depends on nothing in ``bot/`` but the user text and the value types (bot/decision.py)."""
    code = (
        "import sys, cards.deprovision, cards.info; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'bot', 'adaptivecards', 'pydantic')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bot', 'bot.decision', 'bot.messages']", out
