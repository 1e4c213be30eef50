"""The Adaptive Card 1.5 subset this bot uses, as TypedDicts, and the helpers that build it.

Model decision: local TypedDicts instead of a card package — a card *is* JSON, the bot uses nine shapes, and the
type checker then knows every property (the schema test guards spelling); no dependency, nothing to convert.

Escaping happens here, once, for every card: a plain ``str`` that reaches a TextBlock or a Fact is untrusted
text (a device, user or requester name from Graph or chat) and is escaped with :func:`bot.markup.md` (one line,
no links, mentions or markup); :class:`~bot.markup.Markup` from ``bot/messages.py`` is trusted and used as it is.
Choice titles, input labels and button titles are plain text in the renderers, so they are only made one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast

from bot.markup import Markup, md, one_line

CARD_VERSION = "1.5"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_TEXT = 600

Weight = Literal["default", "lighter", "bolder"]
Size = Literal["default", "small", "medium", "large", "extraLarge"]
#: Text colours used on cards. ``good`` (light green) and ``warning`` (yellow) read poorly on a light theme, so
#: headings use the default colour, ``accent`` (in progress) or ``attention`` (failed / unknown) and always say
#: their state in words; no emoji carries meaning (clients without colour emoji show a box).
Color = Literal["default", "accent", "attention"]
Spacing = Literal["none", "small", "default", "medium", "large", "extraLarge", "padding"]
ContainerStyle = Literal["default", "emphasis", "good", "attention", "warning", "accent"]
ActionStyle = Literal["default", "positive", "destructive"]


class TextBlock(TypedDict):
    type: Literal["TextBlock"]
    text: str
    wrap: bool
    weight: NotRequired[Weight]
    size: NotRequired[Size]
    isSubtle: NotRequired[bool]
    color: NotRequired[Color]
    spacing: NotRequired[Spacing]


class Fact(TypedDict):
    title: str
    value: str


class FactSet(TypedDict):
    type: Literal["FactSet"]
    facts: list[Fact]


class Container(TypedDict):
    type: Literal["Container"]
    items: list[Element]
    style: NotRequired[ContainerStyle]
    id: NotRequired[str]
    isVisible: NotRequired[bool]


class Choice(TypedDict):
    title: str
    value: str


class ChoiceSetInput(TypedDict):
    type: Literal["Input.ChoiceSet"]
    id: str
    label: str
    style: Literal["compact", "expanded"]
    choices: list[Choice]
    value: NotRequired[str]


class TextInput(TypedDict):
    type: Literal["Input.Text"]
    id: str
    label: str
    isMultiline: bool
    maxLength: int


Element = TextBlock | FactSet | Container | ChoiceSetInput | TextInput


class ExecuteAction(TypedDict):
    type: Literal["Action.Execute"]
    title: str
    verb: str
    data: dict[str, Any]
    associatedInputs: NotRequired[Literal["auto", "none"]]
    style: NotRequired[ActionStyle]


class ToggleAction(TypedDict):
    """Shows or hides elements on the card itself (no round trip): the "show all" of a long list."""

    type: Literal["Action.ToggleVisibility"]
    title: str
    targetElements: list[str]


CardAction = ExecuteAction | ToggleAction


class Refresh(TypedDict):
    action: ExecuteAction
    userIds: list[str]


AdaptiveCard = TypedDict(
    "AdaptiveCard",
    {
        "type": Literal["AdaptiveCard"],
        "$schema": str,
        "version": str,
        "body": list[Element],
        "actions": NotRequired[list[CardAction]],
        "refresh": NotRequired[Refresh],
        "fallbackText": NotRequired[str],
    },
)


def _clip(value: str, limit: int = MAX_TEXT) -> str:
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    trailing = len(cut) - len(cut.rstrip("\\"))
    return (cut[:-1] if trailing % 2 else cut) + "…"  # never leave half of an escape behind


def _limit(value: str, plain_limit: int) -> int:
    """Untrusted text is cut at ``plain_limit``; the bot's own markup (a ``{{DATE()}}``, say) only at MAX_TEXT."""
    return MAX_TEXT if isinstance(value, Markup) else plain_limit


def markdown(value: str, limit: int = MAX_TEXT) -> str:
    """Text for a markdown property (TextBlock, Fact): :class:`Markup` as it is, anything else escaped."""
    return _clip(md(value), limit)


def label(value: str, limit: int = MAX_TEXT) -> str:
    """Text for a plain-text property (button and choice titles, input labels): one line, never markdown."""
    return _clip(one_line(value), limit)


def text(
    value: str,
    *,
    weight: Weight | None = None,
    size: Size | None = None,
    subtle: bool = False,
    color: Color | None = None,
    spacing: Spacing | None = None,
) -> TextBlock:
    block: TextBlock = {"type": "TextBlock", "text": markdown(value), "wrap": True}
    if weight:
        block["weight"] = weight
    if size:
        block["size"] = size
    if subtle:
        block["isSubtle"] = True
    if color and color != "default":
        block["color"] = color
    if spacing:
        block["spacing"] = spacing
    return block


def facts(pairs: Sequence[tuple[str, str]]) -> FactSet:
    return {
        "type": "FactSet",
        "facts": [{"title": markdown(t, _limit(t, 60)), "value": markdown(v or "—", _limit(v, 200))} for t, v in pairs],
    }


def container(
    items: Sequence[Element], *, style: ContainerStyle | None = None, id: str | None = None, hidden: bool = False
) -> Container:
    box: Container = {"type": "Container", "items": list(items)}
    if style:
        box["style"] = style
    if id:
        box["id"] = id
    if hidden:
        box["isVisible"] = False
    return box


def toggle(title: str, *targets: str) -> ToggleAction:
    return {"type": "Action.ToggleVisibility", "title": label(title, 80), "targetElements": list(targets)}


def execute(
    title: str,
    verb: str,
    data: dict[str, Any],
    *,
    inputs: Literal["auto", "none"] = "auto",
    style: ActionStyle | None = None,
) -> ExecuteAction:
    """An ``Action.Execute`` that always carries a verb (and the verb in ``data`` for Action.Submit fallbacks)."""
    action: ExecuteAction = {
        "type": "Action.Execute",
        "title": label(title, 80),
        "verb": verb,
        "data": {**data, "verb": verb},
    }
    if inputs == "none":
        action["associatedInputs"] = "none"
    if style:
        action["style"] = style
    return action


def choice_set(input_id: str, title: str, choices: Sequence[tuple[str, str]], value: str | None) -> ChoiceSetInput:
    element: ChoiceSetInput = {
        "type": "Input.ChoiceSet",
        "id": input_id,
        "label": label(title),
        "style": "expanded",
        "choices": [{"title": label(name), "value": key} for key, name in choices],
    }
    if value:
        element["value"] = value
    return element


def text_input(input_id: str, title: str, *, max_length: int = 500) -> TextInput:
    return {
        "type": "Input.Text",
        "id": input_id,
        "label": label(title),
        "isMultiline": True,
        "maxLength": max_length,
    }


def card(
    body: Sequence[Element],
    actions: Sequence[CardAction] = (),
    *,
    refresh: Refresh | None = None,
    fallback_text: str = "",
) -> dict[str, Any]:
    """The card as plain JSON (what the connector sends)."""
    built: AdaptiveCard = {"type": "AdaptiveCard", "$schema": SCHEMA, "version": CARD_VERSION, "body": list(body)}
    if actions:
        built["actions"] = list(actions)
    if fallback_text:
        built["fallbackText"] = _clip(
            fallback_text if isinstance(fallback_text, Markup) else one_line(fallback_text), 300
        )
    if refresh:
        built["refresh"] = refresh
    return cast(dict[str, Any], built)
