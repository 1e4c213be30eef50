"""Turn chat text into a typed command. Grammar lives here, not in SDK route selectors."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

MAX_MESSAGE_LENGTH = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_TAGS = re.compile(r"</?(?:p|div|span|br|b|i|strong|em)\b[^>]*>", re.IGNORECASE)
_MENTION = re.compile(r"<at>[^<]{0,100}</at>", re.IGNORECASE)
_REASON_SPLIT = re.compile(r"\s+(?:reason|because)\s*[:=]\s*", re.IGNORECASE)

_REASON_ALIASES = {
    "samemodelreplacement": "same_model_replacement",
    "samemodel": "same_model_replacement",
    "rma": "same_model_replacement",
    "warranty": "same_model_replacement",
    "differentmodelreplacement": "different_model_replacement",
    "differentmodel": "different_model_replacement",
    "newmodel": "different_model_replacement",
    "retiringdevice": "retiring_device",
    "retiring": "retiring_device",
    "retire": "retiring_device",
    "retired": "retiring_device",
    "upgradetransfer": "upgrade_transfer",
    "upgrade": "upgrade_transfer",
    "transfer": "upgrade_transfer",
}


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Deprovision:
    target: str
    reason: str | None = None
    reason_text: str | None = None  # what the user typed when it matched no reason


@dataclass(frozen=True)
class Status:
    target: str


@dataclass(frozen=True)
class History:
    target: str | None = None


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class Unknown:
    text: str


@dataclass(frozen=True)
class Invalid:
    problem: str  # empty | message_too_long | control


Command = Help | Deprovision | Status | History | Pending | Unknown | Invalid


def match_reason(text: str) -> str | None:
    key = re.sub(r"[^a-z]", "", text.lower())
    return _REASON_ALIASES.get(key)


def normalise(text: str) -> str:
    """Teams text → plain command text: entities decoded, leftover markup and mentions removed, spaces collapsed."""
    text = html.unescape(_TAGS.sub(" ", text or ""))
    text = _MENTION.sub(" ", text).replace("\xa0", " ")
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


def parse(raw: str | None) -> Command:
    if raw is None or not raw.strip():
        return Invalid("empty")
    if len(raw) > MAX_MESSAGE_LENGTH:
        return Invalid("message_too_long")
    text = normalise(raw)
    if not text:
        return Invalid("empty")
    if _CONTROL.search(text):
        return Invalid("control")
    verb, _, rest = text.partition(" ")
    verb, rest = verb.lower().rstrip(":"), rest.strip()
    if verb in ("help", "?", "hi", "hello"):
        return Help()
    if verb in ("deprovision", "deprov"):
        if not rest:
            return Invalid("empty")
        parts = _REASON_SPLIT.split(rest, maxsplit=1)
        target = parts[0].strip()
        if not target:
            return Invalid("empty")
        if len(parts) == 2:
            reason = match_reason(parts[1])
            return Deprovision(target, reason, None if reason else parts[1].strip())
        return Deprovision(target)
    if verb == "status":
        return Status(rest) if rest else Invalid("empty")
    if verb == "history":
        return History(rest or None)
    if verb in ("pending", "approvals"):
        return Pending()
    return Unknown(text)
