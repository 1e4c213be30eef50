"""Cards are pure functions; every card the bot can produce must be safe for Teams desktop and mobile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from bot import messages as m
from bot.decision import Decision
from bot.markup import Markup, md
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
DESTRUCTIVE = (verbs.CONFIRM, verbs.APPROVE, verbs.RETRY, verbs.BULK_CONFIRM, verbs.BULK_APPROVE)


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


def walk(node: Any) -> Iterator[dict[str, Any]]:
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
        if kind == "Action.Execute" and "style" in node:
            # teams-platform.md §14 (2026-11-30): Teams accepts "destructive"; clients that don't style it ignore it.
            # Only the buttons that send the deprovision to Intune are styled, so red always means "this deletes".
            assert node["style"] == "destructive" and node["verb"] in DESTRUCTIVE, node
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
    assert out.strip() == "['bot', 'bot.decision', 'bot.markup', 'bot.messages']", out


# -- escaping at the element level (issue "Trust boundary") ---------------------------------------------------

HOSTILE = (
    "[click](https://evil.example)",
    "<at>x</at>",
    "**bold**",
    "Line1\r\nLine2",
    "- list\n1. item",
    "{{DATE(2026-11-30T14:05:00Z, SHORT)}}",
    "www.evil.example alex@evil.example",
    "a\u202eb\u200bc\tz",
)
#: Unescaped, any of these would render as a link, a mention, HTML, emphasis, a list or a date function.
FORBIDDEN = re.compile(
    r"(?<!\\)\[click(?<!\\)\]|(?<!\\)<at>|(?<!\\)\*\*bold|^\s*-\s|^\d+\.\s|(?<!\\)\{\{DATE\(2026-11-30|https://|www\.e|x@e"
    r"|[\r\n\t\u202e\u200b]"
)


def hostile_device(value: str) -> dict[str, Any]:
    return dict(
        DEVICE,
        name=f"{value} NAME",
        serial=f"{value} SERIAL",
        user_display_name=f"{value} USER",
        user_principal_name="u@contoso.com",
        enrollment_profile=f"/{value}",
    )


def shown(card: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (property, string) a client shows: TextBlock text, Fact title/value, titles and labels."""
    out = []
    for node in walk(card):
        for key in ("text", "title", "value", "label", "fallbackText"):
            if isinstance(node.get(key), str) and not (key == "value" and "facts" not in json.dumps(card)):
                out.append((key, node[key]))
    return out


def assert_no_hostile_markup(card: dict[str, Any]) -> None:
    texts = [n["text"] for n in walk(card.get("body", [])) if n.get("type") == "TextBlock"] + [
        f[k] for n in walk(card.get("body", [])) if n.get("type") == "FactSet" for f in n["facts"] for k in f
    ]
    titles = [c["title"] for n in walk(card) if n.get("type") == "Input.ChoiceSet" for c in n["choices"]]
    titles += [a["title"] for a in walk(card) if str(a.get("type", "")).startswith("Action.")]
    for value in texts:
        assert not FORBIDDEN.search(value.replace("{{DATE(2027", "").replace("{{TIME(", "")), value
    for value in [*titles, card.get("fallbackText", "")]:
        assert not re.search(r"[\r\n\t\u202e\u200b]", value), value  # plain-text properties: one line


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("viewer", VIEWERS)
def test_hostile_names_render_as_text_on_every_action_card(value: str, state: str, viewer: str) -> None:
    card = action_card(
        view(
            state,
            device=hostile_device(value),
            requester_name=f"{value} REQ",
            approver_name=f"{value} APPROVER",
            comment=f"{value} COMMENT" if state == "cancelled" else None,
            error_message=f"{value} ERROR",
            approval_mode=True,
            note=m.card_only_requester(f"{value} REQ"),
            graph_request_id=f"{value} RID",
        ),
        viewer,
    )
    assert_teams_safe(card)
    assert_no_hostile_markup(card)
    assert "NAME" in json.dumps(card)  # the name is still there, as text


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_render_as_text_on_every_info_card(value: str) -> None:
    device = hostile_device(value)
    cards = [
        selection_card(value, 3, "selection-id", [device, device]),
        status_card(
            device,
            {"1": f"{value} TAG"},
            operating_system=value,
            management_state=value,
            chrome_state=value,
            last_action=m.last_action("submitted", f"{value} REQ", 1_800_000_000),
        ),
        history_card(
            m.history_title(device["name"]), [(1_800_000_000.0, m.history_row(value, value, "x", value, None))]
        ),
        history_card(m.history_title(None), [(value, value)]),  # plain strings from an old caller: escaped too
        pending_card(
            m.pending_title(1),
            [("abcdefghijklmnopqrstuvwx", value, m.pending_row(value, value, value, own=False), 1_800_000_000)],
        ),
        pending_card("t", [("abcdefghijklmnopqrstuvwx", value, value, 1_800_000_000)]),
        message_card(value, [value, m.card_not_eligible(value)]),
    ]
    for card in cards:
        assert_teams_safe(card)
        assert_no_hostile_markup(card)


def test_markup_is_used_as_is_and_plain_text_is_escaped() -> None:
    trusted = m.card_rejected("**Patti**", "[x](https://evil.example)")
    assert isinstance(trusted, Markup)
    assert trusted == "Rejected by \\*\\*Patti\\*\\*: “\\[x\\](https\\://evil.example)”. Nothing was changed."
    card = message_card("t", [trusted, "**plain**", Markup("**bold on purpose**")])
    assert [b["text"] for b in card["body"]][1:] == [trusted, "\\*\\*plain\\*\\*", "**bold on purpose**"]
    assert md(trusted) is trusted  # escaping twice is impossible
    assert md("a\r\n\r\nb\u2028c") == "a b c"


def test_bot_text_functions_return_markup() -> None:
    assert isinstance(m.not_found("x"), Markup) and isinstance(m.help_text(), Markup)
    assert isinstance(m.denied(Decision(allowed=False), "x"), Markup)
    assert not isinstance(m.reason_label("retiring_device"), Markup)  # a label: plain text, escaped where shown


# -- conversation polish (issue "A conversation that meets helpdesk people where they are") ------------------


def test_help_placeholders_survive_in_card_and_text() -> None:
    card = help_card()
    titles = [f["title"] for n in walk(card["body"]) if n.get("type") == "FactSet" for f in n["facts"]]
    assert titles[0] == "deprovision \\<device\\>"  # renders "deprovision <device>", not an HTML tag
    assert "- **deprovision \\<device\\>** — " in m.help_text()  # no code span: Teams shows &lt; inside one
    assert "`" not in m.help_text() and "&lt;" not in m.help_text()
    assert "<device>" in card["fallbackText"]  # plain text
    for text in (m.usage("empty"), m.card_unknown_request(), m.card_selection_used(), m.card_not_available()):
        assert "\\<device\\>" in text and "`deprovision" not in text, text


def test_times_are_local_on_cards_and_utc_in_the_fallback() -> None:
    ts = 1_800_000_000  # 2027-01-15T08:00:00Z
    card = action_card(view("submitted", updated_at=ts), "requester")
    text = json.dumps(card)
    assert "{{DATE(2027-01-15T08:00:00Z, SHORT)}} {{TIME(2027-01-15T08:00:00Z)}}" in text
    assert "UTC" not in json.dumps(card["body"])
    assert card["fallbackText"].endswith("(2027-01-15 08:00 UTC)")
    sync = next(
        f for n in walk(card["body"]) if n.get("type") == "FactSet" for f in n["facts"] if f["title"] == "Last sync"
    )
    assert sync["value"] == "{{DATE(2026-11-20T08:00:00Z, SHORT)}} {{TIME(2026-11-20T08:00:00Z)}}"
    history = history_card("t", [(float(ts), "x")])
    assert history["body"][1]["facts"][0]["title"].startswith("{{DATE(2027-01-15T08:00:00Z")


def test_the_button_that_deprovisions_is_destructive_and_peer_mode_asks_for_approval() -> None:
    direct = action_card(view("requested"), "requester")
    assert [(a["title"], a.get("style")) for a in direct["actions"]] == [
        ("Deprovision", "destructive"),
        ("Cancel", None),
    ]
    peer = action_card(view("requested", approval_mode=True), "requester")
    assert [(a["title"], a.get("style")) for a in peer["actions"]] == [("Request approval", None), ("Cancel", None)]
    assert peer["actions"][0]["verb"] == verbs.CONFIRM
    approver = action_card(view("awaiting_approval", approval_mode=True), "approver")
    assert [(a["title"], a.get("style")) for a in approver["actions"]] == [
        ("Approve", "destructive"),
        ("Reject", None),
    ]


@pytest.mark.parametrize("state", STATES)
def test_status_headings_say_their_state_in_words_with_readable_colours(state: str) -> None:
    card = action_card(view(state, retryable=False), "requester")
    heading = card["body"][0]
    assert heading.get("color", "default") in ("default", "accent", "attention")
    assert all(c.isascii() or c in "—…" for c in heading["text"]), heading  # no emoji, words only
