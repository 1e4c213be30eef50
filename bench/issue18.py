"""Issue 18's rows: this commit beside the previous one, measured in the same run (``make bench``).

Every figure pairs cells seconds apart on the same machine — the A/B rounds (0 ms Graph, c=10, each repeat followed
by the echo floors' rounds), the overload rounds (50 ms Graph, c=50 and c=200), the alternating start-ups and a
memory run per bot — so only ratios and same-run pairs are compared, never absolute times across runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

#: main before issue 18's changes: the "previous commit" of the same-run comparisons (``BENCH_BASELINE`` overrides)
PREVIOUS = "854b692"

Cell = dict[str, Any]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _cells(results: dict[str, Any], bot: str, turn: str, concurrency: int) -> dict[int, Cell]:
    return {
        c["repeat"]: c
        for c in results.get("cells", [])
        if c["bot"] == bot and c["turn"] == turn and c["concurrency"] == concurrency
    }


def _paired(
    results: dict[str, Any], who: str, turn: str, floor: str, value: Callable[[Cell], float | None]
) -> float | None:
    """Median over repeats of ``value(bot cell) / value(floor cell)`` (A/B rounds, c=10, 0 ms Graph)."""
    mine, floors = _cells(results, f"ab:{who}", turn, 10), _cells(results, f"ab:{floor}", turn, 10)
    ratios = []
    for repeat, cell in mine.items():
        a, b = value(cell), value(floors[repeat]) if repeat in floors else None
        if a is not None and b:
            ratios.append(a / b)
    return _median(ratios)


def _over(
    results: dict[str, Any], who: str, turn: str, concurrency: int, value: Callable[[Cell], float | None]
) -> float | None:
    values = [v for c in _cells(results, who, turn, concurrency).values() if (v := value(c)) is not None]
    return _median(values)


def _cpu(cell: Cell) -> float | None:
    return (cell.get("cpu_ms_per_turn") or {}).get("bot")


def _field(key: str) -> Callable[[Cell], float | None]:
    def value(cell: Cell) -> float | None:
        found = cell.get(key)
        return float(found) if found is not None else None

    return value


def _throughput(cell: Cell) -> float | None:
    value = cell.get("ok_throughput")
    return float(value) if value is not None else None


def _lag(cell: Cell) -> float | None:
    return (cell.get("lag") or {}).get("p99_ms")


def _busy(cell: Cell) -> float | None:
    busy = cell.get("busy_answers")
    return None if busy is None or not cell.get("n") else busy / cell["n"]


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """(measure, previous, now, goal, met) rows; ``None`` where a figure is missing."""
    out: list[dict[str, Any]] = []

    def row(measure: str, old: Any, new: Any, goal: str = "", met: bool | None = None) -> None:
        out.append({"measure": measure, "previous": old, "now": new, "goal": goal, "met": met})

    for turn, cpu_goal in (("message", 2.5), ("confirm", 3.0)):
        old, new = (_paired(results, w, turn, "echo", _cpu) for w in ("baseline", "now"))
        row(f"{turn}: bot CPU per turn ÷ stock echo's (c=10, 0 ms)", old, new, f"≤ {cpu_goal}×", _le(new, cpu_goal))
        old, new = (_paired(results, w, turn, "echo+pooled", _cpu) for w in ("baseline", "now"))
        row(f"{turn}: bot CPU per turn ÷ pooled echo's", old, new)
        old, new = (_paired(results, w, turn, "echo", _throughput) for w in ("baseline", "now"))
        row(
            f"{turn}: throughput ÷ stock echo's (c=10, 0 ms)", old, new, "≥ 0.35×", None if new is None else new >= 0.35
        )
        old, new = (_paired(results, w, turn, "echo+pooled", _throughput) for w in ("baseline", "now"))
        row(f"{turn}: throughput ÷ pooled echo's", old, new)
        for key, label in (
            ("graph_round_trips_per_turn", "Graph round trips"),
            ("store_writes_per_turn", "write transactions"),
        ):
            old, new = (_over(results, f"ab:{w}", turn, 10, _field(key)) for w in ("baseline", "now"))
            row(f"{turn}: {label} per turn", old, new)
    old, new = (_over(results, f"ovl:{w}", "message", 50, _lag) for w in ("baseline", "now"))
    row("event-loop lag p99, message turns at c=50, 50 ms Graph (ms)", old, new, "≤ 20 ms", _le(new, 20))
    for concurrency in (50, 200):
        for turn in ("message", "confirm"):
            old, new = (_over(results, f"ovl:{w}", turn, concurrency, _field("p99_ms")) for w in ("baseline", "now"))
            row(f"{turn} p99 at c={concurrency}, 50 ms Graph (ms)", old, new)
            if concurrency == 200:
                old, new = (_over(results, f"ovl:{w}", turn, 200, _busy) for w in ("baseline", "now"))
                row(f"{turn}: share answered busy at c=200", old, new)
    memory = {k: results.get(k) or {} for k in ("memory_baseline", "memory")}
    old, new = (_mib(memory[k].get("rss_after_pending_and_200_turns_kb")) for k in ("memory_baseline", "memory"))
    pending = memory["memory"].get("pending_created") or 0
    row(f"RSS after {pending:,} pending actions + 200 turns (MiB)", old, new, "≤ 150 MiB", _le(new, 150))
    startup = results.get("startup") or {}
    new = startup.get("median_s")
    row(
        f"start-up to /readyz, median of {len(startup.get('runs_s') or [])} alternating runs (s)",
        startup.get("baseline_median_s"),
        new,
        "≤ 2 s",
        _le(new, 2.0),
    )
    return out


def _le(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def _mib(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb else None


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """The section ``bench.report`` appends: the rows above as one table."""
    ab = results.get("ab") or {}
    commit = ab.get("commit") or PREVIOUS
    lines = [
        f"## Issue 18: this commit beside `{commit}`, same run\n",
        f"| Measure | `{commit}` | now | goal | |",
        "|---|---|---|---|---|",
    ]
    for r in rows(results):
        mark = {True: "✅", False: "❌", None: ""}[r["met"]]
        lines.append(f"| {r['measure']} | {_fmt(r['previous'])} | {_fmt(r['now'])} | {r['goal']} | {mark} |")
    return "\n".join(lines) + "\n"
