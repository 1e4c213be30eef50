"""Record the bot under load with py-spy (if installed), and summarise a ``--format raw`` profile (collapsed stacks)
into the shares the report shows."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import teams

if TYPE_CHECKING:
    from bench.procs import Child
    from bench.rig import Rig

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


async def record(rig: Rig, bot: Child, bot_url: str, n: int) -> dict[str, Any] | None:
    """``n`` messages, then their confirms, at c=10 and 0 ms Graph, each turn type under py-spy for 4 s."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    out: dict[str, Any] = {}
    await rig.reset_round(0.0, bot_url)
    devices = rig.devices[:n]
    for turn in ("message", "confirm"):
        if turn == "message":
            bodies = [teams.message(rig.connector_url, i, f"deprovision {d['serial']}") for i, d in enumerate(devices)]
        else:
            acts = (await rig.h.get(rig.connector_url + "_actions"))["actions"]
            bodies = [
                teams.confirm(rig.connector_url, a["conversation_id"], a["action_id"], a["activity_id"]) for a in acts
            ]
        raw = rig.logs / f"profile-{turn}.txt"
        recorder = await asyncio.create_subprocess_exec(
            spy, "record", "-p", str(bot.pid), "-d", "4", "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(0.3)
        await rig.loadgen.run(
            {
                "url": bot_url + "/api/messages",
                "bodies": str(rig.write_bodies(bodies)),
                "concurrency": 10,
                "expect": 200 if turn == "confirm" else 202,
                "invoke": turn == "confirm",
                "timeout": rig.plan.timeout,
            }
        )
        await recorder.wait()
        if raw.exists():
            out[turn] = summarise(raw.read_text(encoding="utf-8"))
    return out
