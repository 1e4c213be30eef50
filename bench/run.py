"""The benchmark run: every process on loopback, figures into ``bench/results.json`` and the tables of
``bench/RESULTS.md`` (``bench/REPORT.md``, the reading of them, is written by hand).

Processes (each its own OS process): the simulator (``bench.sim_server``), the capture connector (``bench.connector``),
the bot (``bench.launcher`` = ``bot.runtime.build_app`` + probes, or ``python app.py`` for start-up), the echo floor
(``bench.echo``) and the load generator (``bench.loadgen``). Nothing here asserts on timing.

The rooms: :mod:`bench.rig` starts and controls the processes and measures one cell (:mod:`bench.cells` its figures),
:mod:`bench.rounds` the bot's, echo floors' and A/B rounds and single flows, :mod:`bench.footprint` start-up and
memory, :mod:`bench.profile` py-spy; :func:`run` here is the order of the phases, and writes the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.footprint import memory, startup
from bench.machine import machine
from bench.procs import ROOT, Child
from bench.rig import Rig
from bench.rounds import Rounds

BENCH = Path(__file__).resolve().parent
LATENCIES = (0.0, 0.050)
CONCURRENCY = (1, 10, 50)


@dataclass
class Plan:
    repeats: int = 3
    #: requests per message cell (the confirm cell that follows uses the actions it created): (latency s, concurrency)
    n: dict[tuple[float, int], int] = field(
        default_factory=lambda: {
            (0.0, 1): 40,
            (0.0, 10): 200,
            (0.0, 50): 200,
            (0.05, 1): 20,
            (0.05, 10): 150,
            (0.05, 50): 150,
        }
    )
    echo_n: dict[int, int] = field(default_factory=lambda: {1: 100, 10: 300, 50: 300})
    #: messages (then confirms) per turn type in the py-spy round
    profile_n: int = 120
    #: same-window A/B against the baseline commit's bot (0 ms Graph, c=10): repeats and messages per round
    ab_repeats: int = 5
    ab_n: int = 150
    #: issue 18: both bots at 50 ms Graph, c=50 and c=200 (repeats, messages per cell)
    overload_repeats: int = 3
    overload_n: dict[int, int] = field(default_factory=lambda: {50: 150, 200: 400})
    #: ``python app.py`` start-ups (each alternating with one of the baseline commit's)
    startups: int = 5
    #: rows per INSERT-cost measurement (bench.sqlcost)
    sql_rows: int = 1000
    pending: int = 10_000
    timeout: float = 15.0
    profile: bool = True
    #: issue 15's bulk cells (bench.bulk): 100 and 1,000 devices, or (quick) 100 and 300 under a 5 s window
    bulk_quick: bool = False

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            repeats=1,
            n={k: max(10, v // 5) for k, v in cls().n.items()},
            echo_n={k: max(20, v // 5) for k, v in cls().echo_n.items()},
            profile_n=40,
            ab_repeats=1,
            ab_n=30,
            overload_repeats=1,
            overload_n={50: 60, 200: 220},
            startups=3,
            sql_rows=200,
            pending=1000,
            profile=False,
            bulk_quick=True,
        )


async def run(plan: Plan, out_dir: Path) -> dict[str, Any]:
    began = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="bench-"))
    rig = Rig(plan, logs)
    results = rig.results
    results["meta"] = _meta(plan, logs)
    print(f"bench: logs in {logs}", flush=True)
    try:
        await rig.start_infrastructure()
        _choose_baseline(rig)
        results["meta"]["simulator_chromeos_devices"] = len(rig.devices)
        results["meta"]["simulator_has_main"] = (ROOT / "simulator" / "__main__.py").exists()

        print(f"start-up (python app.py → /readyz 200) ×{plan.startups}, alternating with the baseline's", flush=True)
        results["startup"] = await startup(rig, plan.startups)
        print(f"  {results['startup']['runs_s']} s", flush=True)

        await _the_bot(rig)
        await _memory(rig)
        await _side_by_side(rig)
    finally:
        await rig.close()
    results["meta"]["duration_s"] = round(time.perf_counter() - began, 1)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    _write(results, out_dir)
    return results


def _meta(plan: Plan, logs: Path) -> dict[str, Any]:
    return {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "plan": {
            "repeats": plan.repeats,
            "requests_per_cell": {f"{int(k[0] * 1000)}ms/c{k[1]}": v for k, v in plan.n.items()},
            "echo_requests_per_cell": {f"c{k}": v for k, v in plan.echo_n.items()},
            "profile_requests": plan.profile_n,
            "ab_repeats": plan.ab_repeats,
            "ab_requests_per_cell": plan.ab_n,
            "request_timeout_s": plan.timeout,
        },
        "logs": str(logs),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _choose_baseline(rig: Rig) -> None:
    """Same-run comparisons (A/B, start-up, memory) run the bot of BENCH_BASELINE, else of the commit before issue
    18's changes (bench.issue18.PREVIOUS), else of the first benchmarked commit."""
    from bench.baseline import extract_tree, find_commit
    from bench.issue18 import PREVIOUS

    rig.baseline_commit = os.environ.get("BENCH_BASELINE") or PREVIOUS or find_commit()
    if rig.baseline_commit:
        rig.baseline_tree = extract_tree(rig.baseline_commit, rig.logs / "baseline-tree")


async def _the_bot(rig: Rig) -> None:
    """The bot (bench.launcher): single flows, then the load rounds with the echo floors, the A/B, the profile."""
    results, plan, rounds = rig.results, rig.plan, Rounds(rig)
    print("the bot (bench.launcher) — Graph calls per flow, cold then warm", flush=True)
    bot, bot_url, ready_s = await rig.start_bot("bot", [])
    first = await rig.h.get(bot_url + "/bench/stats")
    results["bot_process"] = {
        "ready_s": round(ready_s, 3),
        "rss_after_start_kb": first["rss_kb"],
        "gc_frozen_objects": first.get("gc_frozen_objects"),
        "token_refresh_interval_s": round(first["token_refresh_in_s"] + first["uptime_s"] - ready_s, 1),
    }
    await rig.reset_round(0.0, bot_url)
    spare = rig.devices[-6:]
    flows = [await rounds.flow(bot_url, d, 90_000 + i) for i, d in enumerate(spare[:4])]
    results["flows"] = {"cold": flows[0], "warm": flows[1:]}
    print(f"  cold {flows[0]['round_trips']} round trips, warm {[f['round_trips'] for f in flows[1:]]}", flush=True)

    await _load_rounds(rounds, bot, bot_url)
    if plan.profile:
        from bench.profile import record

        print("profile of the bot at c=10, 0 ms (py-spy, if installed)", flush=True)
        results["profile"] = await record(rig, bot, bot_url, plan.profile_n)
    await _after_load(rig, bot, bot_url, len(flows))


async def _load_rounds(rounds: Rounds, bot: Child, bot_url: str) -> None:
    """The repeats at 0 ms Graph (each cell followed by the echo floor's) and at 50 ms, then the A/B."""
    rig, plan = rounds.rig, rounds.rig.plan
    print("echo floors (kept running so repeats interleave in time)", flush=True)
    echo, echo_url = await rig.start_echo("echo", [])
    echo_pooled, echo_pooled_url = await rig.start_echo("echo+pooled", ["--pooled"])
    for repeat in range(plan.repeats):
        # Each 0 ms bot round is followed at once by the echo floor's round at the same concurrency, so the
        # ratios pair cells seconds apart (the machine is shared and its speed drifts); the 50 ms rounds follow.
        print(f"repeat {repeat + 1}/{plan.repeats}: the bot at 0 ms Graph, each followed by the echo floor", flush=True)
        for concurrency in CONCURRENCY:
            await rounds.bot_round(bot, bot_url, "bot", 0.0, concurrency, plan.n[(0.0, concurrency)], repeat)
            await rounds.echo_round(echo, echo_url, "echo", concurrency, plan.echo_n[concurrency], repeat)
            if concurrency == 10:
                await rounds.echo_round(echo_pooled, echo_pooled_url, "echo+pooled", 10, plan.echo_n[10], repeat)
        print(f"repeat {repeat + 1}/{plan.repeats}: the bot at 50 ms Graph", flush=True)
        for latency in (x for x in LATENCIES if x):
            for concurrency in CONCURRENCY:
                n = plan.n[(latency, concurrency)]
                await rounds.bot_round(bot, bot_url, "bot", latency, concurrency, n, repeat)
    if plan.ab_repeats:
        echoes = [("echo", echo, echo_url), ("echo+pooled", echo_pooled, echo_pooled_url)]
        rig.results["ab"] = await rounds.ab_against_baseline(bot, bot_url, echoes)
    await rig.stop(echo)
    await rig.stop(echo_pooled)


async def _after_load(rig: Rig, bot: Child, bot_url: str, flows: int) -> None:
    """The bot's token requests per flow and its process figures after all the load; then it stops."""
    results = rig.results
    last = await rig.h.get(bot_url + "/bench/stats")
    confirmed = sum(c["deprovision_accepted"] for c in results["cells"] if c["bot"] in ("bot", "ab:now")) + flows
    results["tokens"] = {
        "token_requests": last["token_requests"],
        "flows_completed": confirmed,
        "per_1000_flows": round(1000 * last["token_requests"] / confirmed, 3) if confirmed else None,
        "process_uptime_s": round(last["uptime_s"], 1),
        "refresh_interval_s": results["bot_process"]["token_refresh_interval_s"],
    }
    results["bot_process"]["rss_after_load_kb"] = last["rss_kb"]
    results["bot_process"]["graph_calls"] = last["graph_calls"]
    results["bot_process"]["graph_by_path_keys"] = last["graph_by_path_keys"]
    await rig.stop(bot)
    with contextlib.suppress(OSError):
        text = bot.log_path.read_text(encoding="utf-8", errors="replace")
        results["sdk_warnings_logged"] = text.count("App ID is not provided")


async def _memory(rig: Rig) -> None:
    print(f"memory: a fresh bot, {rig.plan.pending} pending actions, then up to 200 message turns", flush=True)
    rig.results["memory"] = await memory(rig, "bot-memory", None)
    if rig.baseline_tree is not None:
        print(f"memory: the same for the bot of {rig.baseline_commit}", flush=True)
        rig.results["memory_baseline"] = await memory(rig, "baseline-memory", rig.baseline_tree)


async def _side_by_side(rig: Rig) -> None:
    """The micro-comparisons (HTTPS clients, SQL INSERTs) and issue 15's bulk cells."""
    results = rig.results
    print("HTTPS client CPU per request: httpx vs aiohttp (against the simulator)", flush=True)
    from bench.clients import compare

    results["http_clients"] = await compare(rig.sim_url + "/_sim/control", str(rig.sim_info["env"]["SSL_CERT_FILE"]))
    print("SQL INSERT CPU: values baked into the statement vs execution parameters", flush=True)
    from bench.sqlcost import compare as compare_inserts

    results["sql_inserts"] = compare_inserts(rig.plan.sql_rows)
    from bench.bulk import run as run_bulk

    results["bulk"] = await run_bulk(rig.logs, quick=rig.plan.bulk_quick)


def _write(results: dict[str, Any], out_dir: Path) -> None:
    """``results.json`` (summaries), ``RESULTS.md`` (its tables) and ``raw/results-full.json`` into ``out_dir``."""
    from bench.baseline import load as load_baseline
    from bench.report import render, summarise_results

    results["baseline"] = load_baseline()
    summarise_results(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Every request's latency goes to bench/raw/ (git-ignored); the committed results.json keeps the summaries.
    (out_dir / "raw").mkdir(exist_ok=True)
    (out_dir / "raw" / "results-full.json").write_text(json.dumps(results) + "\n", encoding="utf-8")
    summary = {**results, "cells": [{k: v for k, v in c.items() if k != "latencies_ms"} for c in results["cells"]]}
    committed = json.dumps(summary, indent=1) + "\n"
    (out_dir / "results.json").write_text(committed, encoding="utf-8")
    # Tables only, from exactly what results.json holds; the reading of them (bench/REPORT.md) is written by hand.
    (out_dir / "RESULTS.md").write_text(render(json.loads(committed)), encoding="utf-8")
    print(f"bench: wrote {out_dir / 'RESULTS.md'} and {out_dir / 'results.json'} in {results['meta']['duration_s']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="benchmarks against the simulator")
    parser.add_argument("--quick", action="store_true", help="tiny request counts, one repeat (smoke test)")
    parser.add_argument("--out", type=Path, default=BENCH, help="where RESULTS.md and results.json go")
    parser.add_argument(
        "--only", choices=("bulk",), help="run one section; its figures replace that section's in results.json"
    )
    args = parser.parse_args(argv)
    if args.only == "bulk":
        from bench.bulk import merge
        from bench.bulk import run as run_bulk

        merge(asyncio.run(run_bulk(quick=args.quick)), args.out)
        return 0
    plan = Plan.quick() if args.quick else Plan()
    asyncio.run(run(plan, args.out))
    return 0
