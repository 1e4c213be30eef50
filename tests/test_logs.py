"""Log forging: whatever a record carries — from our code or a library's — it stays one line per record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORGED = "device\r\n12:00:00 INFO    bot.audit: audit  [event=succeeded]\x1b[2K\u2028\x85end"

# Logs like the bot's own code and like the Agents SDK (a third-party logger reached through the root handler).
SCRIPT = r"""
import logging, sys
from bot.logs import configure_logging

configure_logging(sys.argv[1], "INFO", [])
forged = sys.argv[2]
logging.getLogger("microsoft_agents.hosting.core.app").warning("turn for %s failed", forged)
logging.getLogger("bot.http").info("request", extra={"path": forged, "status": 200})
logging.getLogger("bot.audit").info(forged)
try:
    raise ValueError(forged)
except ValueError:
    logging.getLogger("aiohttp.server").exception("Error handling request from %s", forged)
"""


def _run(fmt: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, FORGED],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == ""
    # split on "\n" only, as a log shipper does; every other separator must have been escaped
    return result.stderr.removesuffix("\n").split("\n")


def test_text_lines_cannot_be_forged() -> None:
    lines = _run("text")
    record = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING|ERROR)\s+\S+: ")
    records = [line for line in lines if record.match(line)]
    assert [line.split()[2] for line in records] == [
        "microsoft_agents.hosting.core.app:",
        "bot.http:",
        "bot.audit:",
        "aiohttp.server:",
    ], lines
    continuation = [line for line in lines if not record.match(line)]
    assert continuation and all(line.startswith("  | ") for line in continuation), lines  # the traceback
    escaped = r"device\r\n12:00:00 INFO    bot.audit: audit  [event=succeeded]\x1b[2K\u2028\x85end"
    assert escaped in records[0] and escaped in records[1] and escaped in records[2], records
    assert f"path={escaped}" in records[1]
    # the exception message's own line break continues the traceback, under the same prefix
    assert lines[-2:] == [r"  | ValueError: device\r", "  | " + escaped.split(r"\n", 1)[1]], lines
    assert not any(ch in "\r\x1b\u2028\x85" for line in lines for ch in line)


def test_json_lines_cannot_be_forged() -> None:
    lines = _run("json")
    payloads = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert [p["logger"] for p in payloads] == [
        "microsoft_agents.hosting.core.app",
        "bot.http",
        "bot.audit",
        "aiohttp.server",
    ]
    assert payloads[0]["msg"] == f"turn for {FORGED} failed"  # the value survives, escaped by JSON itself
    assert payloads[1]["path"] == FORGED and payloads[2]["msg"] == FORGED
    assert FORGED in payloads[3]["exc"]
    assert all(line.isascii() for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\nb", r"a\nb"), ("a\rb", r"a\rb"), ("\t", r"\t"), ("\x00\x7f\x9b", r"\x00\x7f\x9b"), ("\u2029", r"\u2029")],
)
def test_escape_controls(text: str, expected: str) -> None:
    from bot.logs import escape_controls

    assert escape_controls(text) == expected
    assert escape_controls("plain text — ünïcode") == "plain text — ünïcode"
