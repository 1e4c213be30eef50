"""Turn chat text into a typed command. Grammar lives here, not in SDK route selectors."""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass

MAX_MESSAGE_LENGTH = 1000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_TAGS = re.compile(r"</?(?:p|div|span|br|b|i|strong|em)\b[^>]*>", re.IGNORECASE)
_MENTION = re.compile(r"<at>[^<]{0,100}</at>", re.IGNORECASE)
_REASON_SPLIT = re.compile(r"\s+(?:reason|because)\s*[:=]\s*", re.IGNORECASE)
# Politeness around the whole command (never inside it): "can you …?", "please …", "… pls!", "@Bot …".
_POLITE_LEAD = re.compile(
    r"^(?:@\S+\s+|(?:hey|ok|okay)\b[\s,]*|(?:can|could|would|will)\s+(?:you|u)\b(?:\s+please\b)?[\s,]*"
    r"|(?:please|pls|plz|kindly)\b[\s,:]*|show(?:\s+me)?\s+(?=\S))",
    re.IGNORECASE,
)
_POLITE_TAIL = re.compile(
    r"(?:[\s,]+(?:please|pls|plz|thanks|thank\s+you|thx|ty)|\s*[?!.,;]+)$",
    re.IGNORECASE,
)
_VERB = re.compile(r"^(\S+?)(?::\s*|\s+|$)(.*)$", re.DOTALL)
_QUOTED = re.compile(r"^[\"“”'‘’](.+)[\"“”'‘’]$")
VERBS = {
    "deprovision": "deprovision",
    "deprov": "deprovision",
    "status": "status",
    "history": "history",
    "pending": "pending",
    "approvals": "pending",
    "help": "help",
}
_HELP_WORDS = ("help", "?", "hi", "hello")
_NO_ARGUMENT = ("history", "pending", "approvals", "help")

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
    suggestion: str | None = None  # the command the first word was probably meant to be ("deprovison" → deprovision)


@dataclass(frozen=True)
class Invalid:
    problem: str  # empty | message_too_long | control
    command: str = "deprovision"  # the command typed, so the usage answer names it


Command = Help | Deprovision | Status | History | Pending | Unknown | Invalid


def match_reason(text: str) -> str | None:
    key = re.sub(r"[^a-z]", "", text.lower())
    return _REASON_ALIASES.get(key)


def normalise(text: str) -> str:
    """Teams text → plain command text: entities decoded, leftover markup and mentions removed, spaces collapsed."""
    text = html.unescape(_TAGS.sub(" ", text or ""))
    text = _MENTION.sub(" ", text).replace("\xa0", " ")
    return re.sub(r"[ \t\r\n]+", " ", text).strip()


def strip_polite(text: str) -> str:
    """Drop polite words, the bot's name and punctuation *around* the command; a quoted device stays intact."""
    previous = None
    while previous != text:
        previous = text
        lead = _POLITE_LEAD.match(text)
        if lead and lead.end() < len(text):
            text = text[lead.end() :].lstrip()
        if not _QUOTED.match(text.partition(" ")[2].strip()):
            tail = _POLITE_TAIL.search(text)
            if tail and tail.start() > 0:
                head = text[: tail.start()].rstrip()
                # A polite *word* goes only if the command keeps its argument: `deprovision please` names a device.
                if not tail.group().strip(" ?!.,;") or " " in head or head.lower() in _NO_ARGUMENT:
                    text = head
    return text


def _unquote(target: str) -> str:
    quoted = _QUOTED.match(target.strip())
    return quoted.group(1).strip() if quoted else target.strip()


def suggest_verb(word: str) -> str | None:
    close = difflib.get_close_matches(word.lower(), VERBS, n=1, cutoff=0.75)
    return VERBS[close[0]] if close else None


def _command_of(text: str) -> str:
    """The command a message was meant to be, for naming it in a usage answer (``deprovision`` when unclear)."""
    match = _VERB.match(strip_polite(_CONTROL.sub(" ", text).strip()))
    return VERBS.get(match.group(1).lower().rstrip(":,"), "deprovision") if match else "deprovision"


def parse(raw: str | None) -> Command:
    if raw is None or not raw.strip():
        return Invalid("empty")
    if len(raw) > MAX_MESSAGE_LENGTH:
        return Invalid("message_too_long", _command_of(normalise(raw[:200])))
    text = normalise(raw)
    if not text:
        return Invalid("empty")
    if _CONTROL.search(text):
        return Invalid("control", _command_of(text))
    if text.lower().strip(" ?!.") in _HELP_WORDS or text.strip() == "?":
        return Help()
    text = strip_polite(text)
    match = _VERB.match(text)
    verb, rest = (match.group(1), match.group(2).strip()) if match else (text, "")
    verb = verb.lower().rstrip(":,")
    if verb in _HELP_WORDS:
        return Help()
    command = VERBS.get(verb)
    if command == "deprovision":
        if not rest:
            return Invalid("empty", "deprovision")
        parts = _REASON_SPLIT.split(rest, maxsplit=1)
        target = _unquote(parts[0])
        if not target:
            return Invalid("empty", "deprovision")
        if len(parts) == 2:
            reason = match_reason(parts[1])
            return Deprovision(target, reason, None if reason else parts[1].strip())
        return Deprovision(target)
    if command == "status":
        target = _unquote(rest)
        return Status(target) if target else Invalid("empty", "status")
    if command == "history":
        return History(_unquote(rest) or None)
    if command == "pending":
        return Pending()
    return Unknown(text, suggest_verb(verb))
