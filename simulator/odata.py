"""OData query helpers: the small `$filter` grammar Graph accepts here, `$select`, paging."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')     # OData string literal, '' escapes a quote
      | (?P<open>'[^\n]*)              # unterminated string
      | (?P<name>[A-Za-z_][A-Za-z0-9_./]*)
      | (?P<punct>[(),])
      | (?P<other>[^\s(),']+)
    )""",
    re.VERBOSE,
)


class FilterError(ValueError):
    """A `$filter` this service does not accept; ``prop`` names the offending property if known."""

    def __init__(self, detail: str, prop: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.prop = prop


class Prefix(str):
    """A clause value from ``startswith(prop, 'value')`` (a plain ``str`` value means ``eq``)."""

    __slots__ = ()


class QueryError(ValueError):
    """Invalid `$select`, `$top`, `$skiptoken`, ..."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:  # pragma: no cover - regex always advances
            raise FilterError(f"unexpected character at position {pos}")
        kind = m.lastgroup or "other"
        if kind == "open":
            raise FilterError("unterminated string literal")
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse_filter(text: str, allowed: Iterable[str], *, startswith: bool = False) -> list[tuple[str, str]]:
    """Parse ``prop eq 'value' [and prop eq 'value' ...]`` into ``[(prop, value)]``.

    Property names are matched case-insensitively against ``allowed`` and returned in their
    canonical spelling. With ``startswith``, a clause may also be ``startswith(prop, 'value')`` (its value is
    a :class:`Prefix`), as Intune's managedDevices accepts. Everything else (``or``, ``ne``, other functions,
    numbers, ...) is rejected.
    """
    canonical = {p.casefold(): p for p in allowed}
    toks = _tokens(text)
    if not toks:
        raise FilterError("empty filter")
    clauses: list[tuple[str, str]] = []
    i = 0
    while True:
        if len(toks) - i < 3:
            raise FilterError("incomplete clause")
        (k1, prop), (k2, op), (k3, lit) = toks[i], toks[i + 1], toks[i + 2]
        if startswith and k1 == "name" and prop.casefold() == "startswith" and (k2, op) == ("punct", "("):
            clause = toks[i + 2 : i + 6]
            kinds = [k for k, _ in clause]
            if kinds != ["name", "punct", "string", "punct"] or clause[1][1] != "," or clause[3][1] != ")":
                raise FilterError("startswith takes (property, 'value')")
            name, value = clause[0][1], clause[2][1]
            if name.casefold() not in canonical:
                raise FilterError(f"property '{name}' is not filterable", name)
            clauses.append((canonical[name.casefold()], Prefix(value[1:-1].replace("''", "'"))))
            i += 6
        else:
            if k1 != "name" or (k2 == "punct" and op == "("):
                raise FilterError(f"'{prop}' is not supported here", prop if k1 == "name" else None)
            if k2 != "name" or op.casefold() != "eq":
                raise FilterError(f"operator '{op}' is not supported (only 'eq')", prop)
            if prop.casefold() not in canonical:
                raise FilterError(f"property '{prop}' is not filterable", prop)
            if k3 != "string":
                raise FilterError(f"value for '{prop}' must be a quoted string literal", prop)
            clauses.append((canonical[prop.casefold()], lit[1:-1].replace("''", "'")))
            i += 3
        if i == len(toks):
            return clauses
        kind, word = toks[i]
        if kind != "name" or word.casefold() != "and":
            raise FilterError(f"'{word}' is not supported (combine clauses with 'and')")
        i += 1


def matches(item: Mapping[str, Any], clauses: Sequence[tuple[str, str]]) -> bool:
    """Case-insensitive equality (or prefix, for a :class:`Prefix`) on every clause, as Graph compares strings."""
    for prop, value in clauses:
        actual = item.get(prop)
        if actual is None:
            return False
        if isinstance(value, Prefix):
            if not str(actual).casefold().startswith(value.casefold()):
                return False
        elif str(actual).casefold() != value.casefold():
            return False
    return True


def parse_select(text: str | None, allowed: Iterable[str], type_name: str) -> list[str] | None:
    if text is None:
        return None
    canonical = {p.casefold(): p for p in allowed}
    fields: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            raise QueryError("Syntax error: empty property in $select.")
        if name.casefold() not in canonical:
            raise QueryError(f"Could not find a property named '{name}' on type '{type_name}'.")
        fields.append(canonical[name.casefold()])
    return fields


def project(item: Mapping[str, Any], fields: Sequence[str] | None) -> dict[str, Any]:
    """Apply `$select` (``id`` is always kept); without select drop simulator-private keys."""
    if fields is None:
        return {k: v for k, v in item.items() if not k.startswith("_")}
    keep = set(fields) | {"id"}
    return {k: v for k, v in item.items() if k in keep}


def parse_top(text: str | None, maximum: int) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit():
        raise QueryError(f"Invalid value '{text}' for $top query option found.")
    top = int(text)
    if top < 1:
        raise QueryError(f"Invalid value '{text}' for $top query option found.")
    return min(top, maximum)


def encode_skiptoken(offset: int, key: str) -> str:
    raw = json.dumps({"o": offset, "k": key}, separators=(",", ":")).encode()
    return "RFNwdAIA" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(token: str, key: str) -> int:
    try:
        if not token.startswith("RFNwdAIA"):
            raise ValueError(token)
        body = token[8:]
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if data["k"] != key or not isinstance(data["o"], int) or data["o"] < 0:
            raise ValueError(token)
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise QueryError("The $skiptoken is invalid or has expired.") from exc
