"""Start-up time and memory of the bot, over a :class:`~bench.rig.Rig`: ``python app.py`` from exec to ``/readyz``
(alternating with the baseline commit's), the import cost alone, and the RSS after many pending actions and turns."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import teams
from bench.procs import ROOT, Child, free_port, rss_kb, wait_http
from bench.rig import Rig

IMPORT_WATCH = (
    "microsoft_agents.activity",
    "microsoft_agents.hosting.aiohttp",
    "microsoft_agents.authentication.msal",
    "aiohttp",
    "sqlalchemy",
    "httpx",
    "alembic.command",
)


async def startup(rig: Rig, runs: int = 3) -> dict[str, Any]:
    """``python app.py`` from exec to ``/readyz`` 200 (fresh SQLite each time: migrations + first Graph token).

    ``/healthz`` answers once the server listens (after imports and migrations); ``/readyz`` also needs the first
    Graph token, fetched by that first ``/readyz`` call. The import time alone is measured separately.
    """
    times: list[float] = []
    listening: list[float] = []
    rss: list[int] = []
    baseline: list[float] = []
    for i in range(runs):
        # The baseline commit's app.py alternates with this one, so a slow machine shows in both.
        if rig.baseline_tree is not None and i % 2 == 1:
            baseline.append((await _start_once(rig, f"baseline-startup-{i}", rig.baseline_tree))[1])
        up, ready, resident = await _start_once(rig, f"app-startup-{i}", None)
        listening.append(up)
        times.append(ready)
        rss.append(resident)
        if rig.baseline_tree is not None and i % 2 == 0:
            baseline.append((await _start_once(rig, f"baseline-startup-{i}", rig.baseline_tree))[1])
    return {
        "runs_s": [round(t, 3) for t in times],
        "median_s": round(statistics.median(times), 3),
        "listening_s": [round(t, 3) for t in listening],
        **await _imports(rig.env),
        "rss_after_start_kb": rss,
        "baseline_commit": rig.baseline_commit if baseline else None,
        "baseline_runs_s": [round(t, 3) for t in baseline],
        "baseline_median_s": round(statistics.median(baseline), 3) if baseline else None,
    }


async def _start_once(rig: Rig, name: str, cwd: Path | None) -> tuple[float, float, int]:
    """One ``python app.py`` (this checkout's, or another tree's): seconds to listening, to ready; RSS then."""
    port = free_port()
    db = Path(tempfile.mkdtemp(prefix="startup-", dir=rig.logs)) / "bot.db"
    child = Child(name, [sys.executable, "app.py"], rig.bot_env(port, db), rig.logs, cwd=cwd)
    await child.start()
    try:
        up_at = await wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, interval=0.005)
        ready_at = await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, interval=0.005)
        await asyncio.sleep(0.3)
        return up_at - child.started_at, ready_at - child.started_at, rss_kb(child.pid)
    finally:
        await child.stop()


async def _imports(env: dict[str, str]) -> dict[str, Any]:
    """The interpreter and the bot's imports alone, the heavy packages' share, and one full ``gc.collect()`` after."""
    began = time.perf_counter()
    probe = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import app, bot.runtime", cwd=str(ROOT), env=env
    )
    await probe.wait()
    imports = time.perf_counter() - began
    breakdown = await import_breakdown(env)
    gc_probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import gc, time, app, bot.runtime\n"
        "began = time.perf_counter(); gc.collect(); print((time.perf_counter() - began) * 1000)",
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    gc_out, _ = await gc_probe.communicate()
    try:
        gc_collect_ms: float | None = round(float(gc_out.decode().strip()), 1)
    except ValueError:
        gc_collect_ms = None
    return {
        "interpreter_and_imports_s": round(imports, 3),
        "import_cumulative_s": breakdown,
        "gc_collect_after_imports_ms": gc_collect_ms,
    }


async def import_breakdown(env: dict[str, str]) -> dict[str, float]:
    """Cumulative import time of the heavy packages (``python -X importtime``), incl. Alembic used by migrations."""
    probe = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-c",
        "import app, bot.runtime, alembic.command",
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await probe.communicate()
    found: dict[str, float] = {}
    for line in err.decode(errors="replace").splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name in IMPORT_WATCH:
            found[name] = max(found.get(name, 0.0), int(parts[1]) / 1e6)
    return {name: round(found[name], 3) for name in IMPORT_WATCH if name in found}


async def memory(rig: Rig, name: str, cwd: Path | None) -> dict[str, Any]:
    """RSS of a fresh bot (this checkout's, or another tree's), after ``pending`` actions, then 200 turns."""
    plan = rig.plan
    bot, bot_url, _ = await rig.start_bot(name, [], cwd=cwd)
    try:
        await asyncio.sleep(0.5)
        start_rss = (await rig.h.get(bot_url + "/bench/stats"))["rss_kb"]
        began_pending = time.perf_counter()
        await rig.h.post(bot_url + f"/bench/pending?n={plan.pending}")
        pending_s = time.perf_counter() - began_pending
        after_pending = await rig.h.get(bot_url + "/bench/stats")
        await rig.h.post(rig.sim_url + "/_sim/control", {"reset": True, "reset_state": True, "latency": 0})
        await rig.h.post(rig.connector_url + "_reset")
        turns = [
            teams.message(rig.connector_url, i, f"deprovision {d['serial']}") for i, d in enumerate(rig.devices[:200])
        ]
        label = {"bot": name, "turn": "message", "latency_ms": 0.0, "repeat": 0}
        await rig.cell(label, bot_url, turns, 10, invoke=False, bot=bot, bot_url=bot_url)
        after_turns = await rig.h.get(bot_url + "/bench/stats")
    finally:
        await rig.stop(bot)
    return {
        "rss_after_start_kb": start_rss,
        "pending_created": plan.pending,
        "pending_created_in_s": round(pending_s, 2),
        "rss_after_pending_kb": after_pending["rss_kb"],
        "rss_after_pending_and_200_turns_kb": after_turns["rss_kb"],
        "turns_after_pending": len(turns),
        "actions_by_state": after_turns["actions_by_state"],
    }
