"""Issue 15's bulk rows: one pasted column of serials → summary card → one confirm → every device POSTed once.

``python -m bench.bulk [--quick] [--no-merge]`` runs this section alone (``make bench`` runs it last) and merges its
figures into ``bench/results.json`` under ``bulk``, then regenerates ``bench/RESULTS.md`` from that file — the other
sections' figures are kept as they are. Each cell gets a fresh simulator tenant and a fresh bot (``bench.launcher``)
with its own SQLite file; the simulator process is its own (``bench.sim_server`` with enough cloned Chromebooks).

Per cell (N devices, Graph latency L, the simulator's write limit B writes per T seconds):

* **lookup round trips** — top-level Graph requests (a ``$batch`` counts once) from the message to the summary card,
  against ⌈N/20⌉ + 2;
* **confirm → last accepted POST** — the click's send time to the simulator's log time of the last deprovision POST
  it accepted (same machine, same ``time.time()`` clock);
* **throttle floor** — ⌈W/B − 1⌉·T for the W accepted writes: the simulator counts writes in a sliding window, so
  write k·B + 1 cannot be accepted before k·T after the first; the first B are free (the window starts empty). The
  ratio is the wall time ÷ that floor (target ≤ 1.05), where the floor is above zero;
* **429s** the simulator answered during the run, accepted POSTs per device (exactly once), the bot's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench import teams
from bench.machine import machine
from bench.procs import TICK, Child, Http, cpu_ticks, free_port, wait_http
from bot.settings import BY_NAME
from simulator.demo import demo_environment

BENCH = Path(__file__).resolve().parent
BATCH = 20  # Graph's $batch limit: sub-requests per round trip
TARGET_RATIO = 1.05
BULK_CONFIRM = "bulk.confirm"  # cards.verbs.BULK_CONFIRM
_DEPROVISION = re.compile(r"/deviceManagement/managedDevices/(?P<id>[^/]+)/deprovision$")


@dataclass(frozen=True)
class Cell:
    n: int
    latency: float
    #: the simulator's write limit (writes, seconds); the bot's BULK_WRITE_BUDGET stays at its default unless ``budget``
    write_limit: tuple[int, float] = (200, 20.0)
    budget: str | None = None


CELLS = (Cell(100, 0.05), Cell(1000, 0.05))
#: ``--quick``: the same shape in seconds (300 devices under 100 writes per 5 s, the bot's budget to match)
QUICK = (Cell(100, 0.05), Cell(300, 0.05, (100, 5.0), "100/5s"))


def throttle_floor(writes: int, limit: int, window: float) -> float:
    """⌈W/B − 1⌉·T: the earliest the last of ``writes`` can be accepted under ``limit`` per sliding ``window``."""
    return max(0, math.ceil(writes / limit - 1)) * window


class _SimShim:
    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def env(self) -> dict[str, str]:
        return dict(self._env)


def bulk_confirm(service_url: str, conversation_id: str, batch_id: str, reply_to: str) -> dict[str, Any]:
    return teams.execute(
        service_url, conversation_id, BULK_CONFIRM, {"batchId": batch_id, "reason": teams.REASON}, reply_to
    )


class BulkBench:
    def __init__(self, logs: Path, concurrency: int | None = None) -> None:
        self.logs = logs
        #: BULK_CONCURRENCY for the bots (``None``: the setting's default)
        self.concurrency = concurrency
        self.children: list[Child] = []
        self.sim_env: dict[str, str] = {}
        self.sim_url = ""
        self.connector_url = ""
        self.devices: list[dict[str, str]] = []
        self.http: Http | None = None

    @property
    def h(self) -> Http:
        assert self.http is not None
        return self.http

    async def start(self, devices_needed: int) -> None:
        clones = str(devices_needed // 60 + 1)  # the demo seed has 65 active ChromeOS devices to clone
        env = {"LOG_LEVEL": "WARNING", **{k: v for k, v in os.environ.items() if not k.startswith("CONNECTIONS__")}}
        sim = Child("bulk-simulator", [sys.executable, "-m", "bench.sim_server", "--clones", clones], env, self.logs)
        self.children.append(sim)
        info = cast(dict[str, Any], await sim.start(announce=True))
        self.sim_env, self.sim_url, self.devices = dict(info["env"]), str(info["base_url"]), list(info["devices"])
        if len(self.devices) < devices_needed:
            raise RuntimeError(f"the simulator has {len(self.devices)} ChromeOS devices, {devices_needed} needed")
        port = free_port()
        connector = Child(
            "bulk-connector", [sys.executable, "-m", "bench.connector", "--port", str(port)], env, self.logs
        )
        self.children.append(connector)
        self.connector_url = str(cast(dict[str, Any], await connector.start(announce=True))["url"])
        self.http = await Http(self.sim_env["SSL_CERT_FILE"]).__aenter__()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.__aexit__(None, None, None)
        for child in reversed(self.children):
            await child.stop()

    async def start_bot(self, cell: Cell) -> tuple[Child, str]:
        port = free_port()
        db = Path(tempfile.mkdtemp(prefix=f"bulk-{cell.n}-", dir=self.logs)) / "bot.db"
        # The bot as it ships, but for BULK_MAX: the demo's 10 s completion check and 5 s sweep go back to their
        # defaults, so the run is measured with the tracking load a real one has.
        extra = {
            "LOG_LEVEL": "WARNING",
            "BULK_MAX": str(max(100, cell.n)),
            **{name: str(BY_NAME[name].default) for name in ("COMPLETION_FIRST_CHECK", "SWEEP_INTERVAL")},
        }
        if cell.budget:
            extra["BULK_WRITE_BUDGET"] = cell.budget
        if self.concurrency:
            extra["BULK_CONCURRENCY"] = str(self.concurrency)
        env = demo_environment(cast(Any, _SimShim(self.sim_env)), port, f"sqlite:///{db}", **extra)
        env.pop("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID", None)
        bot = Child(f"bulk-bot-{cell.n}", [sys.executable, "-m", "bench.launcher"], env, self.logs)
        await bot.start()
        await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        return bot, f"http://127.0.0.1:{port}"

    async def stats(self) -> dict[str, Any]:
        return dict(await self.h.get(self.sim_url + "/_sim/stats"))

    async def wait_card(self, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await self.h.get(self.connector_url + "_actions")
            if found.get("batches"):
                return dict(found["batches"][-1])
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no bulk summary card within {timeout:.0f} s")

    async def wait_settled(self, bot_url: str, rows: int, timeout: float) -> dict[str, int]:
        """Until every row of the batch has left *queued* / *submitting* (its POST answered, or given up)."""
        deadline = time.monotonic() + timeout
        while True:
            states = dict((await self.h.get(bot_url + "/bench/stats"))["actions_by_state"])
            if sum(states.values()) >= rows and not states.get("queued") and not states.get("submitting"):
                return {str(k): int(v) for k, v in states.items()}
            if time.monotonic() > deadline:
                raise RuntimeError(f"the bulk run did not settle within {timeout:.0f} s: {states}")
            await asyncio.sleep(0.25)

    async def cell(self, cell: Cell, devices: list[dict[str, str]], index: int) -> dict[str, Any]:
        """Message → summary card → confirm → every row settled, on a fresh bot; the figures of one cell."""
        limit, window = cell.write_limit
        await self.h.post(
            self.sim_url + "/_sim/control",
            {"reset": True, "reset_state": True, "latency": cell.latency, "write_limit": [limit, window]},
        )
        await self.h.post(self.connector_url + "_reset")
        bot, bot_url = await self.start_bot(cell)
        o = Observed()
        try:
            o.rss_after_start_kb = (await self.h.get(bot_url + "/bench/stats"))["rss_kb"]
            text = "deprovision\nserial\n" + "\n".join(d["serial"] for d in devices)  # a pasted column, header too
            o.before = await self.stats()
            o.sent_at = time.time()
            await self.h.post(bot_url + "/api/messages", teams.message(self.connector_url, 80_000 + index, text))
            card = await self.wait_card(60)
            o.card_at = time.time()
            o.after_lookup = await self.stats()
            await self.h.get(bot_url + "/bench/stats?reset=1")  # the loop-lag samples from here on
            pids = {"bot": bot.pid, "simulator": self.children[0].pid}
            ticks = {name: cpu_ticks(pid) for name, pid in pids.items()}
            confirm = bulk_confirm(self.connector_url, card["conversation_id"], card["batch_id"], card["activity_id"])
            o.confirm_at = time.time()
            await self.h.post(bot_url + "/api/messages", confirm)
            o.answered_at = time.time()
            o.rows = sum((await self.h.get(bot_url + "/bench/stats"))["actions_by_state"].values())
            timeout = throttle_floor(o.rows, limit, window) * 2 + 120
            o.states = await self.wait_settled(bot_url, o.rows, timeout)
            o.end = await self.h.get(bot_url + "/bench/stats")
            o.ticks = {name: cpu_ticks(pid) - ticks[name] for name, pid in pids.items()}
        finally:
            await bot.stop()
        o.calls = await self.h.get(self.sim_url + f"/_sim/calls?since={o.after_lookup['calls']}")
        result = summarise(cell, self.concurrency, o)
        print(
            f"  bulk N={cell.n}: lookup {result['lookup_round_trips']} RT (target ≤ {result['lookup_target']}), "
            f"confirm→last POST {result['confirm_to_last_post_s']} s, floor {result['throttle_floor_s']:g} s, "
            f"ratio {result['ratio']}, 429s {result['throttled_429']}, RSS {o.end['rss_kb'] // 1024} MiB",
            flush=True,
        )
        return result


@dataclass
class Observed:
    """What one cell saw: the simulator's stats and call log, the bot's stats, the client's clock (``time.time``)."""

    before: dict[str, Any] = field(default_factory=dict)
    after_lookup: dict[str, Any] = field(default_factory=dict)
    end: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    ticks: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    rss_after_start_kb: int = 0
    sent_at: float = 0.0
    card_at: float = 0.0
    confirm_at: float = 0.0
    answered_at: float = 0.0


def summarise(cell: Cell, concurrency: int | None, o: Observed) -> dict[str, Any]:
    limit, window = cell.write_limit
    before, after = o.before, o.after_lookup
    accepted = sorted(
        (c for c in o.calls if _is_post(c) and _ok(c["handled_status"])),
        key=lambda c: c["time"],
    )
    per_device = collections.Counter(c["path"].casefold() for c in accepted)
    wall = accepted[-1]["time"] - o.confirm_at if accepted else None
    floor = throttle_floor(len(accepted), limit, window)
    return {
        "devices": cell.n,
        "latency_ms": round(cell.latency * 1000),
        "simulator_write_limit": [limit, window],
        "bot_write_budget": cell.budget or f"{BY_NAME['BULK_WRITE_BUDGET'].default} (default)",
        "bulk_concurrency": concurrency or int(str(BY_NAME["BULK_CONCURRENCY"].default)),
        "lookup_round_trips": after["round_trips"] - before["round_trips"],
        "lookup_batch_subrequests": (after["calls"] - after["round_trips"]) - (before["calls"] - before["round_trips"]),
        "lookup_target": math.ceil(cell.n / BATCH) + 2,
        "lookup_requests_by_path": {
            k: v - before["by_path"].get(k, 0)
            for k, v in sorted(after["by_path"].items())
            if v - before["by_path"].get(k, 0)
        },
        "message_to_card_s": round(o.card_at - o.sent_at, 3),
        "confirm_answer_s": round(o.answered_at - o.confirm_at, 3),
        "confirm_turn_round_trips": sum(
            1 for c in o.calls if c["batch_id"] is None and c["time"] <= o.answered_at and not _is_post(c)
        ),
        "rows": o.rows,
        "accepted_posts": len(accepted),
        "max_posts_per_device": max(per_device.values(), default=0),
        "confirm_to_first_post_s": round(accepted[0]["time"] - o.confirm_at, 3) if accepted else None,
        "confirm_to_last_post_s": round(wall, 3) if wall is not None else None,
        "throttle_floor_s": floor,
        "ratio": round(wall / floor, 3) if wall is not None and floor else None,
        "throttled_429": sum(1 for c in o.calls if c["status"] == 429),
        "windows_s": _windows(accepted, limit, o.confirm_at),
        "rows_by_state": o.states,
        "cpu_ms_per_device": {k: round(v / TICK * 1000 / max(1, o.rows), 2) for k, v in o.ticks.items()},
        "loop_lag_p99_ms": round(o.end["lag"]["p99_ms"], 1),
        "loop_lag_max_ms": round(o.end["lag"]["max_ms"], 1),
        "rss_after_start_kb": o.rss_after_start_kb,
        "rss_after_run_kb": o.end["rss_kb"],
    }


def _is_post(call: dict[str, Any]) -> bool:
    return call["method"] == "POST" and _DEPROVISION.search(call["path"]) is not None


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def _windows(accepted: list[dict[str, Any]], limit: int, since: float) -> list[list[float]]:
    """Per group of ``limit`` accepted POSTs (the window each fills): seconds from the click to its first and last."""
    groups = [accepted[i : i + limit] for i in range(0, len(accepted), limit)]
    return [[round(g[0]["time"] - since, 2), round(g[-1]["time"] - since, 2)] for g in groups]


async def run(
    logs: Path | None = None, *, quick: bool = False, concurrency: int | None = None, only: list[int] | None = None
) -> dict[str, Any]:
    """Every cell of this section (or those of ``only`` devices); ``{"cells": [...]}`` for ``results["bulk"]``."""
    logs = logs or Path(tempfile.mkdtemp(prefix="bench-bulk-"))
    cells = [c for c in (QUICK if quick else CELLS) if not only or c.n in only]
    bench = BulkBench(logs, concurrency)
    print(f"bulk deprovision: {', '.join(str(c.n) for c in cells)} devices (logs in {logs})", flush=True)
    began = time.perf_counter()
    try:
        await bench.start(sum(c.n for c in cells))
        out, offset = [], 0
        for index, cell in enumerate(cells):
            out.append(await bench.cell(cell, bench.devices[offset : offset + cell.n], index))
            offset += cell.n
    finally:
        await bench.close()
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": machine()["git"],
        "duration_s": round(time.perf_counter() - began, 1),
        "quick": quick,
        "cells": out,
    }


# -- RESULTS.md: headings and tables only --------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The section ``bench.report`` appends (empty without ``results["bulk"]``)."""
    bulk = results.get("bulk") or {}
    cells = bulk.get("cells") or []
    if not cells:
        return ""
    commit = (bulk.get("git") or {}).get("commit", "?")
    lines = [
        f"## Bulk deprovision: one pasted column of serials, one confirm (commit `{commit}`, {bulk.get('started')})\n",
        "| Devices | Graph latency | simulator write limit | bot write budget | lookup round trips | target ⌈N/20⌉+2 | "
        "message → card s | confirm → first POST s | confirm → last accepted POST s | throttle floor ⌈W/B−1⌉·T s | "
        "÷ floor (goal ≤ 1.05) | 429s | accepted POSTs / rows | most POSTs for one device | bot RSS after run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        limit, window = c["simulator_write_limit"]
        ratio = c.get("ratio")
        mark = "" if ratio is None else (" ✅" if ratio <= TARGET_RATIO else " ❌")
        lookup_mark = " ✅" if c["lookup_round_trips"] <= c["lookup_target"] else " ❌"
        lines.append(
            f"| {c['devices']:,} | {c['latency_ms']} ms | {limit}/{window:g} s | {c['bot_write_budget']} | "
            f"{c['lookup_round_trips']}{lookup_mark} | {c['lookup_target']} | {_f(c['message_to_card_s'])} | "
            f"{_f(c['confirm_to_first_post_s'])} | {_f(c['confirm_to_last_post_s'])} | {c['throttle_floor_s']:g} | "
            f"{_f(ratio, 3)}{mark} | {c['throttled_429']} | {c['accepted_posts']} / {c['rows']} | "
            f"{c['max_posts_per_device']} | {c['rss_after_run_kb'] / 1024:.1f} MiB |"
        )
    lines.append("")
    lines += [
        "| Devices | concurrency | confirm answer s | confirm turn round trips | "
        "each window's accepted POSTs, s after the click | bot CPU ms per device | simulator CPU ms per device | "
        "loop lag p99 / max ms | rows at the end | bot RSS after start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        states = ", ".join(f"{k} {v}" for k, v in sorted(c["rows_by_state"].items()))
        windows = ", ".join(f"{a:.1f}–{b:.1f}" for a, b in c.get("windows_s") or [])
        cpu = c.get("cpu_ms_per_device") or {}
        lines.append(
            f"| {c['devices']:,} | {c['bulk_concurrency']} | {_f(c['confirm_answer_s'])} | "
            f"{c['confirm_turn_round_trips']} | {windows} | {_f(cpu.get('bot'), 1)} | {_f(cpu.get('simulator'), 1)} | "
            f"{_f(c.get('loop_lag_p99_ms'), 1)} / {_f(c.get('loop_lag_max_ms'), 1)} | {states} | "
            f"{c['rss_after_start_kb'] / 1024:.1f} MiB |"
        )
    lines += [
        "",
        "| Devices | lookup phase: requests by path ($batch sub-requests listed too) | count |",
        "|---|---|---|",
    ]
    for c in cells:
        for path, count in (c.get("lookup_requests_by_path") or {}).items():
            lines.append(f"| {c['devices']:,} | `{path}` | {count} |")
    return "\n".join(lines) + "\n"


def merge(bulk: dict[str, Any], out_dir: Path = BENCH) -> None:
    """``bulk`` into ``results.json`` (the rest kept as it is), then RESULTS.md regenerated from that file."""
    from bench.report import render as render_all

    path = out_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    results["bulk"] = bulk
    committed = json.dumps(results, indent=1) + "\n"
    path.write_text(committed, encoding="utf-8")
    if "meta" in results:
        (out_dir / "RESULTS.md").write_text(render_all(json.loads(committed)), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 devices, then 300 under 100 writes per 5 s")
    parser.add_argument("--concurrency", type=int, help="BULK_CONCURRENCY for the bots (default: the setting's)")
    parser.add_argument("--devices", type=int, action="append", help="only the cell of this many devices (repeatable)")
    parser.add_argument("--no-merge", action="store_true", help="print the figures, leave results.json alone")
    parser.add_argument("--out", type=Path, default=BENCH, help="the directory holding results.json / RESULTS.md")
    args = parser.parse_args(argv)
    bulk = asyncio.run(run(quick=args.quick, concurrency=args.concurrency, only=args.devices))
    if args.no_merge:
        print(json.dumps(bulk, indent=1))
    else:
        merge(bulk, args.out)
        print(f"bench.bulk: merged into {args.out / 'results.json'} and regenerated RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
