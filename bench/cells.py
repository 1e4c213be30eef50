"""The figures of one measured cell: a load-generator run against one bot (or echo floor), with the counters read
just before and just after it — the simulator's Graph calls, each process's CPU time, the bot's own bench counters."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

from bench.procs import TICK


@dataclass
class Counters:
    """What is read around a cell: the bot's ``/bench/stats`` (or just its RSS), the simulator's, CPU ticks by pid."""

    bot: dict[str, Any]
    sim: dict[str, Any]
    cpu: dict[str, int]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def figures(
    label: dict[str, Any], concurrency: int, result: dict[str, Any], before: Counters, after: Counters
) -> dict[str, Any]:
    """One cell of ``results.json`` from the load generator's ``result`` and the counters around it."""
    lat_ms = [x * 1000 for x in result["latencies"]]
    n = int(result["n"])
    latency_ms = float(label.get("latency_ms") or 0.0)
    return {
        **label,
        "concurrency": concurrency,
        **_load(result, n, lat_ms),
        **_graph(latency_ms, before.sim, after.sim, n, lat_ms),
        "cpu_ms_per_turn": {
            name: round((after.cpu[name] - before.cpu[name]) / TICK * 1000 / n, 2) if n else 0.0 for name in before.cpu
        },
        **_bot(before.bot, after.bot, n),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "latencies_ms": [round(x, 2) for x in lat_ms],
    }


def _load(result: dict[str, Any], n: int, lat_ms: list[float]) -> dict[str, Any]:
    """What the load generator saw: answers, throughput, latency percentiles."""
    wall_s = result["wall_s"]
    return {
        "n": n,
        "ok": n - int(result["wrong"]),
        "wrong": int(result["wrong"]),
        "statuses": result["statuses"],
        "wrong_samples": result.get("wrong_samples", []),
        "wall_s": round(float(wall_s), 3),
        "throughput": round(n / float(wall_s), 2) if wall_s else 0.0,
        "ok_throughput": round((n - int(result["wrong"])) / float(wall_s), 2) if wall_s else 0.0,
        "p50_ms": round(pct(lat_ms, 50), 2),
        "p99_ms": round(pct(lat_ms, 99), 2),
        "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else 0.0,
        "max_ms": round(max(lat_ms), 2) if lat_ms else 0.0,
    }


def _graph(
    latency_ms: float, before: dict[str, Any], after: dict[str, Any], n: int, lat_ms: list[float]
) -> dict[str, Any]:
    """Graph calls the simulator counted, and the latency the bot adds on top of the simulated Graph time."""
    rt = int(after["round_trips"]) - int(before["round_trips"])
    subs = int(after["calls"]) - int(after["round_trips"]) - (int(before["calls"]) - int(before["round_trips"]))
    rt_per_turn = rt / n if n else 0.0
    graph_ms = latency_ms * rt_per_turn
    return {
        "graph_round_trips": rt,
        "graph_batch_subrequests": subs,
        "graph_round_trips_per_turn": round(rt_per_turn, 3),
        "simulated_graph_ms_per_turn": round(graph_ms, 2),
        "bot_added_p50_ms": round(pct(lat_ms, 50) - graph_ms, 2),
        "bot_added_p99_ms": round(pct(lat_ms, 99) - graph_ms, 2),
        "deprovision_accepted": int(after["deprovision_accepted"]) - int(before["deprovision_accepted"]),
    }


def _bot(before: dict[str, Any], stats: dict[str, Any], n: int) -> dict[str, Any]:
    """The bot's own bench counters per request (``None`` where a launcher of an older commit has none)."""

    def per_turn(key: str, digits: int) -> float | None:
        if not n or key not in stats or key not in before:
            return None
        return round((stats[key] - before[key]) / n, digits)

    refused = stats.get("turns_refused"), before.get("turns_refused")
    return {
        "store_writes_per_turn": per_turn("store_writes", 2),
        "aiosqlite_calls_per_turn": per_turn("aiosqlite_calls", 1),
        "aiosqlite_idle_rollbacks_per_turn": per_turn("aiosqlite_idle_rollbacks", 2),
        "busy_answers": refused[0] - refused[1] if refused[0] is not None and refused[1] is not None else None,
        "rss_kb": stats.get("rss_kb"),
        "lag": stats.get("lag"),
        "gc": stats.get("gc"),
    }


def line(cell: dict[str, Any]) -> str:
    """The cell as one line of the run's console output."""
    return (
        f"  {cell.get('bot')} {cell.get('turn'):8} L={float(cell.get('latency_ms') or 0.0):>3.0f}ms "
        f"c={cell['concurrency']:<3} n={cell['n']:<4} "
        f"{cell['throughput']:7.1f}/s p50={cell['p50_ms']:7.1f} p99={cell['p99_ms']:7.1f} ms "
        f"wrong={cell['wrong']} rt/turn={cell['graph_round_trips_per_turn']:.2f}"
        + (f" lag99={cell['lag']['p99_ms']:.1f}ms" if cell.get("lag") else "")
    )
