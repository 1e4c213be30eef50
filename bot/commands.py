"""Turn chat text into a typed command. Grammar lives here, not in SDK route selectors."""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass

MAX_MESSAGE_LENGTH = 1000
#: A ``deprovision`` with a pasted list may be longer (a Teams message holds about 28 KB); anything longer gets a
#: clear answer before it is even normalised.
MAX_BULK_MESSAGE_LENGTH = 30_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_TAGS = re.compile(r"</?(?:p|div|span|br|b|i|strong|em)\b[^>]*>", re.IGNORECASE)
#: Tags that end a line in Teams' HTML (a pasted column arrives as paragraphs or ``<br>``-separated lines).
_LINE_TAGS = re.compile(r"<br\s*/?>|</(?:p|div)>", re.IGNORECASE)
#: What separates the devices of a list: new lines, commas, semicolons and tabs (spreadsheet columns).
_LIST_SEPARATORS = re.compile(r"[\n,;\t]+")
#: A header line pasted with a spreadsheet column ("serial", "Serial number", "Device name", …) is not a device.
_HEADERS = frozenset(
    (
        "serial",
        "serials",
        "serialnumber",
        "serialno",
        "name",
        "names",
        "device",
        "devices",
        "devicename",
        "intuneid",
        "deviceid",
        "id",
        "ids",
    )
)
_MENTION = re.compile(r"<at>[^<]{0,100}</at>", re.IGNORECASE)
_REASON_SPLIT = re.compile(r"\s+(?:reason|because)\s*[:=]\s*", re.IGNORECASE)
# Politeness around the whole command (never inside it): "can you …?", "please …", "… pls!", "@Bot …".
_POLITE_LEAD = re.compile(
    r"^(?:@\S+\s+|(?:hey|ok|okay)\b[\s,]*|(?:can|could|would|will)\s+(?:you|u)\b(?:\s+please\b)?[\s,]*"
    r"|(?:please|pls|plz|kindly)\b[\s,:]*|show(?:\s+me)?\s+(?=\S))",
    re.IGNORECASE,
)
_POLITE_TAIL = re.compile(
    r"(?:[\s,]+(?:please|pls|plz|thanks|thank\s+you|thx|ty)|[\s?!.,;]*[?!.,;])$",
    re.IGNORECASE,
)
#: Politeness is looked for only this near the ends of a message, and peeled at most this many times: the work per
#: message stays linear in its length however it is built (a 30 KB list of `" ,"` once took hours of regex backtracking).
_POLITE_WINDOW = 200
_POLITE_PASSES = 8
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
class BulkDeprovision:
    """``deprovision`` with several devices: one entry each, as typed, duplicates (any case) removed."""

    targets: tuple[str, ...]
    reason: str | None = None
    reason_text: str | None = None


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
    problem: str  # empty | message_too_long | list_too_long | control
    command: str = "deprovision"  # the command typed, so the usage answer names it


Command = Help | Deprovision | BulkDeprovision | Status | History | Pending | Unknown | Invalid


def match_reason(text: str) -> str | None:
    key = re.sub(r"[^a-z]", "", text.lower())
    return _REASON_ALIASES.get(key)


def normalise(text: str, *, lines: bool = False) -> str:
    """Teams text → plain command text: entities decoded, leftover markup and mentions removed, spaces collapsed.

    With ``lines`` the line breaks (and tabs) of a pasted list survive, one ``\\n`` (``\\t``) each.
    """
    text = _LINE_TAGS.sub("\n", text or "") if lines else text or ""
    text = html.unescape(_TAGS.sub(" ", text))
    text = _MENTION.sub(" ", text).replace("\xa0", " ")
    if not lines:
        return re.sub(r"[ \t\r\n]+", " ", text).strip()
    text = re.sub(r" *\t[ \t]*", "\t", re.sub(r"[ \f\v]+", " ", text.replace("\r\n", "\n").replace("\r", "\n")))
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def split_entries(text: str) -> list[str]:
    """A list of devices → its entries, as typed, each once (case-insensitively), in order.

    The rule (also in the help text and the README): new lines, commas, semicolons and tabs separate devices; spaces
    inside an entry belong to it (device names may contain spaces, ``Chrome- PFSXKG0X``). A first line that is a
    column header (``serial``, ``Serial number``, ``Device name``, …) is dropped. Quotes around an entry go.
    One line with spaces only is not split here: the flow tries it as one device first (see ``bot/flow/bulk.py``).
    """
    pieces = [_unquote(p) for p in _LIST_SEPARATORS.split(text)]
    pieces = [p for p in pieces if p]
    if len(pieces) > 1 and re.sub(r"[^a-z]", "", pieces[0].lower()) in _HEADERS:
        pieces = pieces[1:]
    unique: dict[str, str] = {}
    for piece in pieces:
        unique.setdefault(piece.casefold(), piece)
    return list(unique.values())


def strip_polite(text: str) -> str:
    """Drop polite words, the bot's name and punctuation *around* the command; a quoted device stays intact.

    Bounded: only the first and last :data:`_POLITE_WINDOW` characters are searched, at most :data:`_POLITE_PASSES`
    times, so a hostile message cannot make this quadratic (or worse) in its length.
    """
    for _ in range(_POLITE_PASSES):
        previous = text
        lead = _POLITE_LEAD.match(text[:_POLITE_WINDOW])
        if lead and lead.end() < len(text):
            text = text[lead.end() :].lstrip()
        if not _QUOTED.match(text.partition(" ")[2].strip()):
            start = max(0, len(text) - _POLITE_WINDOW)
            tail = _POLITE_TAIL.search(text, start)
            if tail and tail.start() > 0:
                head = text[: tail.start()].rstrip()
                # A polite *word* goes only if the command keeps its argument: `deprovision please` names a device.
                if not tail.group().strip(" ?!.,;") or " " in head or head.lower() in _NO_ARGUMENT:
                    text = head
        if text == previous:
            break
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


def _is_deprovision(text: str) -> bool:
    match = _VERB.match(strip_polite(text.strip()))
    return match is not None and VERBS.get(match.group(1).lower().rstrip(":,")) == "deprovision"


def parse(raw: str | None) -> Command:
    if raw is None or not raw.strip():
        return Invalid("empty")
    if len(raw) > MAX_BULK_MESSAGE_LENGTH:
        return Invalid("list_too_long", _command_of(normalise(raw[:200])))
    if len(raw) > MAX_MESSAGE_LENGTH and not _is_deprovision(normalise(raw[:200])):
        return Invalid("message_too_long", _command_of(normalise(raw[:200])))
    text = normalise(raw, lines=True)
    if not text:
        return Invalid("empty")
    if _CONTROL.search(text):
        return Invalid("control", _command_of(collapse(text)))
    verb = _VERB.match(strip_polite(text))
    if verb and VERBS.get(verb.group(1).lower().rstrip(":,")) == "deprovision":
        return _deprovision(verb.group(2))
    return _parse_line(collapse(text))


def _deprovision(rest: str) -> Command:
    """``deprovision`` + one device, or a list (see :func:`split_entries`), and an optional ``reason:``."""
    parts = _REASON_SPLIT.split(rest.strip(), maxsplit=1)
    reason_text = collapse(parts[1]) if len(parts) == 2 else ""
    reason = match_reason(reason_text) if reason_text else None
    unknown = reason_text if reason_text and not reason else None
    entries = split_entries(parts[0]) if _LIST_SEPARATORS.search(parts[0]) else [_unquote(collapse(parts[0]))]
    entries = [e for e in entries if e]
    if not entries:
        return Invalid("empty", "deprovision")
    if len(entries) == 1:
        return Deprovision(entries[0], reason, unknown)
    return BulkDeprovision(tuple(entries), reason, unknown)


def _parse_line(text: str) -> Command:
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
