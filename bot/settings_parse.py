"""Parsers for environment values: ``str`` in, typed value out, or ``ValueError`` saying what was expected.

Each message is the part after ``NAME: `` in the start-up report (one line per problem, a message with several
lines is several problems). Pure functions; :mod:`bot.settings` declares which variable uses which.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Parse = Callable[[str], Any]

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_HOST_NAME_RE = re.compile(r"^(\*\.)?[a-z0-9.:-]+$")


def text(value: str) -> str:
    return value


def boolean(value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"expected one of true/false/1/0/yes/no/on/off, got {value!r}")


def parse_duration(text: str) -> float:
    """``"900"`` / ``"900s"`` / ``"15m"`` / ``"24h"`` / ``"1d"`` / ``"500ms"`` → seconds."""
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise ValueError(text)
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def duration(*, at_most: float | None = None, why: str = "") -> Parse:
    """A positive duration in seconds, optionally bounded above (``why`` says why)."""

    def parse(value: str) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(f"expected a duration such as 900, 15m, 24h, got {value!r}") from None
        if seconds <= 0:
            raise ValueError("must be greater than zero")
        if at_most is not None and seconds > at_most:
            raise ValueError(f"must be at most {at_most:g}s ({why})")
        return seconds

    return parse


def choice(*options: str) -> Parse:
    def parse(value: str) -> str:
        value = value.lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value

    return parse


def matching(pattern: str, expected: str, normalise: Callable[[str], str] = text) -> Parse:
    """The normalised value if it matches ``pattern``; else "expected <expected>, got <value>"."""
    regex = re.compile(pattern)

    def parse(value: str) -> str:
        value = normalise(value)
        if not regex.match(value):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    return parse


def port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"expected a TCP port 1-65535, got {value!r}")
    return int(value)


def log_level(value: str) -> str:
    value = value.upper()
    if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
    return value


def normalise_database_url(url: str) -> str:
    """Accept plain ``postgresql://`` and ``sqlite:///`` URLs and pick the async drivers."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://") and not url.startswith("sqlite+"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def database_url(value: str) -> str:
    url = normalise_database_url(value)
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        # Only what follows the last "@": a password never reaches the report.
        raise ValueError(f"expected sqlite:///path or postgresql://..., got {url.split('@')[-1]!r}")
    return url


def names(value: str) -> tuple[str, ...]:
    """A comma list; blanks dropped."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def names_or(default: tuple[str, ...]) -> Parse:
    """A comma list that falls back to ``default`` when it names nothing."""
    return lambda value: names(value) or default


def non_empty_names(what: str, example: str) -> Parse:
    def parse(value: str) -> tuple[str, ...]:
        found = names(value)
        if not found:
            raise ValueError(f"the {what} is empty; expected a comma list such as {example}")
        return found

    return parse


def host_names(value: str) -> tuple[str, ...]:
    hosts = tuple(h.lower() for h in names(value))
    if not hosts or any(not _HOST_NAME_RE.match(h) for h in hosts):
        raise ValueError(f"expected a comma list of host names (a leading *. matches any subdomain), got {value!r}")
    return hosts


def pairs_over(defaults: Mapping[str, str]) -> Parse:
    """``key=value,…`` with keys from ``defaults``, over ``defaults``; one problem per bad pair."""

    def parse(value: str) -> dict[str, str]:
        result, bad = dict(defaults), []
        for item in value.split(","):
            key, sep, wire = (part.strip() for part in item.partition("="))
            if sep and key in defaults and wire:
                result[key] = wire
            else:
                bad.append(f"expected key=value pairs with keys {', '.join(defaults)}, got {item.strip()!r}")
        if bad:
            raise ValueError("\n".join(bad))
        return result

    return parse


def secret_of_at_least(size: int) -> Parse:
    def parse(value: str) -> str:
        if len(value.encode()) < size:
            raise ValueError(f"must be at least {size} bytes long (a random secret)")
        return value

    return parse


def whole(low: int, high: int) -> Parse:
    """A whole number from ``low`` to ``high``."""

    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return int(value)

    return parse


def rate(value: str) -> tuple[int, float]:
    """``writes/window`` such as ``200/20s`` → ``(200, 20.0)``."""
    writes, _, window = value.partition("/")
    try:
        budget = (int(writes), parse_duration(window))
    except ValueError:
        budget = (0, 0.0)
    if budget[0] < 1 or budget[1] <= 0:
        raise ValueError(f"expected writes/duration such as 200/20s, got {value!r}")
    return budget
