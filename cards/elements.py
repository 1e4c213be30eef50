"""Small typed helpers over the ``adaptivecards`` package, converted to plain JSON at the edge.

The package covers TextBlock, FactSet, Container and the card itself; it has no ``Action.*`` or ``Input.*``
classes and no ``refresh`` property, so those are written as dicts (teams-platform.md §11).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adaptivecards import adaptivecard, containers, elements
from adaptivecards.baseobject import AdaptiveCardJSONEncoder

CARD_VERSION = "1.5"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_TEXT = 600


def _clip(value: str, limit: int = MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, cls=AdaptiveCardJSONEncoder))


def text(
    value: str,
    *,
    weight: str | None = None,
    size: str | None = None,
    subtle: bool = False,
    color: str | None = None,
    spacing: str | None = None,
) -> Any:
    block = elements.TextBlock(text=_clip(value), wrap=True)
    if weight:
        block.weight = weight
    if size:
        block.size = size
    if subtle:
        block.isSubtle = True
    if color:
        block.color = color
    if spacing:
        block.spacing = spacing
    return block


def facts(pairs: Sequence[tuple[str, str]]) -> Any:
    return containers.FactSet(facts=[containers.Fact(title=_clip(t, 60), value=_clip(v or "—", 200)) for t, v in pairs])


def container(items: Sequence[Any], *, style: str | None = None) -> Any:
    box = containers.Container(items=list(items))
    if style:
        box.style = style
    return box


def execute(title: str, verb: str, data: dict[str, Any], *, inputs: str = "auto") -> dict[str, Any]:
    """An ``Action.Execute`` that always carries a verb (and the verb in ``data`` for Action.Submit fallbacks)."""
    action: dict[str, Any] = {
        "type": "Action.Execute",
        "title": title,
        "verb": verb,
        "data": {**data, "verb": verb},
    }
    if inputs == "none":
        action["associatedInputs"] = "none"
    return action


def choice_set(input_id: str, label: str, choices: Sequence[tuple[str, str]], value: str | None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "Input.ChoiceSet",
        "id": input_id,
        "label": label,
        "style": "expanded",
        "choices": [{"title": title, "value": key} for key, title in choices],
    }
    if value:
        element["value"] = value
    return element


def text_input(input_id: str, label: str, *, max_length: int = 500) -> dict[str, Any]:
    return {
        "type": "Input.Text",
        "id": input_id,
        "label": label,
        "isMultiline": True,
        "maxLength": max_length,
    }


def card(
    body: Sequence[Any],
    actions: Sequence[dict[str, Any]] = (),
    *,
    refresh: dict[str, Any] | None = None,
    fallback_text: str = "",
) -> dict[str, Any]:
    built = adaptivecard.AdaptiveCard()
    built.set_data("version", CARD_VERSION)
    built.set_data("$schema", SCHEMA)
    built.body = list(body)
    if actions:
        built.actions = list(actions)
    if fallback_text:
        built.fallback_text = _clip(fallback_text, 300)
    result: dict[str, Any] = _plain(built.render())
    if refresh:
        result["refresh"] = refresh
    return result
