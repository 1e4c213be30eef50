"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) into the shares the report shows."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

#: (label, regex on any frame of a sample): the share of sampled CPU whose stack passes through it.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("SQLAlchemy + aiosqlite (event-loop side)", r"sqlalchemy/|aiosqlite/"),
    ("Graph client (httpx/httpcore, TLS)", r"httpx/|httpcore/"),
    (
        "… of which httpcore's failed `import sniffio` (current_async_library)",
        r"current_async_library \(httpcore/[^)]*\);_find_and_load",
    ),
    ("audit append (AuditLog.record)", r"AuditLog\.record "),
    ("SDK: new connector client per turn (create_connector_client)", r"create_connector_client "),
    ("SDK: new user-token client per turn (create_user_token_client)", r"create_user_token_client "),
    ("SDK: get_product_info() (importlib.metadata scan per client)", r"get_product_info \(core/"),
    ("aiohttp: new TCP connection per connector call", r"TCPConnector\._create_connection "),
    ("SDK telemetry spans (no-op tracer)", r"core/telemetry/"),
    ("logging (incl. redaction filter)", r"logging/__init__\.py|bot/logs\.py"),
    ("pydantic (activity validate/dump)", r"pydantic/|pydantic_core"),
    ("card rendering (cards/)", r" \(cards/"),
    ("RBAC check (bot/rbac.py)", r"RbacChecker\._check "),
)

_LINE = re.compile(r" \((.*?):\d+\)")


IDLE_LEAVES = ("EpollSelector.select ", "select (selectors.py")


def summarise(raw: str, top: int = 12) -> dict[str, Any]:
    """Shares of the event-loop thread's *busy* samples (py-spy's idle detection does not see blocked waits in C, so
    samples parked in ``epoll`` or in a worker thread's queue wait are dropped here), plus SQLite worker-thread work
    relative to it."""
    loop_busy = 0
    loop_idle = 0
    sqlite_busy = 0
    buckets: Counter[str] = Counter()
    own: Counter[str] = Counter()
    compiled = [(label, re.compile(pattern)) for label, pattern in BUCKETS]
    for line in raw.splitlines():
        line = line.strip()
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = stack.split(";")
        if "_connection_worker_thread" in stack:
            if not frames[-1].startswith("_connection_worker_thread"):
                sqlite_busy += count
            continue
        if not frames[0].startswith("_run_module_as_main"):
            continue  # other threads (thread pool: msal, DNS): rare
        if any(frames[-1].startswith(idle) for idle in IDLE_LEAVES):
            loop_idle += count
            continue
        loop_busy += count
        for label, pattern in compiled:
            if pattern.search(stack):
                buckets[label] += count
        own[_LINE.sub(r" (\1)", frames[-1])] += count
    if not loop_busy:
        return {"loop_busy_samples": 0, "buckets": {}, "top_self": []}
    return {
        "loop_busy_samples": loop_busy,
        "loop_idle_samples": loop_idle,
        "loop_busy_share": round(100 * loop_busy / max(1, loop_busy + loop_idle), 1),
        "sqlite_thread_busy_vs_loop_busy": round(100 * sqlite_busy / loop_busy, 1),
        "buckets": {label: round(100 * buckets[label] / loop_busy, 1) for label, _ in BUCKETS},
        "top_self": [(frame[:140], round(100 * n / loop_busy, 1)) for frame, n in own.most_common(top)],
    }
