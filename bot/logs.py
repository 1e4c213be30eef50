"""Structured logging with hygiene.

One line per inbound request and per outbound call. JSON in production, readable text in the demo.
Attacker-controlled fields go through :func:`safe` (control characters stripped, length capped), and a
filter on the root handler masks configured secrets, bearer tokens and Authorization headers in anything
that is logged — including third-party libraries' messages.

A log line cannot be forged: the text format escapes control characters (CR, LF, …) in the message and every
field of every record, whichever library logged it, and indents a traceback's lines under ``  | ``; the JSON
format escapes them by construction (``json.dumps``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/=]+")
_AUTH_HEADER = re.compile(r"(?i)(['\"]?authorization['\"]?\s*[:=]\s*['\"]?)[^'\",}\s]+(\s+[^'\",}\s]+)?")
_SECRET_FIELDS = re.compile(
    r"(?i)(['\"]?(?:client_secret|access_token|refresh_token|client_assertion|password)['\"]?\s*[:=]\s*['\"]?)"
    r"[^'\"&,}\s]+"
)
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: Values registered at start-up that must never appear in a log line.
_SECRETS: list[str] = []


def escape_controls(text: str) -> str:
    """Show control characters as escapes (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028``) so text stays on one line."""
    return _CONTROL.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named:
        return named
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def safe(value: object, limit: int = 200) -> str:
    """Make an attacker-controlled value safe to log: no control characters, at most ``limit`` characters."""
    text = _CONTROL.sub("?", str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def redact(text: str) -> str:
    for secret in _SECRETS:
        text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _AUTH_HEADER.sub(r"\1***", text)
    return _SECRET_FIELDS.sub(r"\1***", text)


class RedactingFilter(logging.Filter):
    """Masks secrets in the formatted message and in extra fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload[key] = value
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """One line per record: every control character in the logger name, message and fields is escaped.

    A traceback follows on continuation lines that all start with ``  | ``, so no text inside it (an exception
    message quoting user input, say) can pass for a log line of its own.
    """

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:<7} {record.name}: "
        line += record.getMessage() + (f"  [{extras}]" if extras else "")
        line = escape_controls(line)
        exc_text = record.exc_text
        if not exc_text and record.exc_info:
            exc_text = self.formatException(record.exc_info)
        if record.stack_info:
            exc_text = f"{exc_text}\n{record.stack_info}" if exc_text else record.stack_info
        if exc_text:
            line += "".join("\n  | " + escape_controls(part) for part in exc_text.rstrip("\n").split("\n"))
        return line


def configure_logging(fmt: str, level: str, secrets: list[str]) -> None:
    """Install one stderr handler with the redaction filter; quiet chatty libraries."""
    _SECRETS.clear()
    _SECRETS.extend(sorted(secrets, key=len, reverse=True))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # msal logs token-cache details at DEBUG; httpx's own request line duplicates ours; so do the Agents SDK
    # connector client's two INFO lines per reply ("Replying to activity …"): formatting them cost ~1 % of a turn's
    # CPU at INFO (cProfile, issue 18) and they carry conversation ids our request line already has.
    for noisy in (
        "msal",
        "httpx",
        "httpcore",
        "urllib3",
        "aiohttp.access",
        "sqlalchemy.engine",
        "alembic",
        "microsoft_agents.hosting.core.connector",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_redaction(secrets: list[str]) -> None:
    """Register secrets and add the redaction filter to every existing root handler (used by tests)."""
    for secret in secrets:
        if secret not in _SECRETS:
            _SECRETS.append(secret)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
