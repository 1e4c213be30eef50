"""Aggregate the raw cells (medians over repeats), check the targets, and render the tables of ``bench/RESULTS.md``."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench.bulk import render as bulk_rows
from bench.issue18 import render as issue18_rows

MIB = 1024  # KiB per MiB

TARGET_RATIO = 0.5
TARGET_WARM_CALLS = 4
TARGET_TOKENS_PER_HOUR = 1.0
TARGET_LAG_MS = 20.0
TARGET_RSS_MIB = 150.0
TARGET_READY_S = 2.0


def _median(values: list[Any]) -> float | None:
    clean = [v for v in values if v is not None]
    return round(statistics.median(clean), 2) if clean else None


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))], 2)


def summarise_results(results: dict[str, Any]) -> None:
    """Adds ``summary`` (one row per bot/turn/latency/concurrency) and ``targets`` to ``results``."""
    groups: dict[tuple[str, str, float | None, int], list[dict[str, Any]]] = defaultdict(list)
    for cell in results.get("cells", []):
        groups[(cell["bot"], cell["turn"], cell.get("latency_ms"), cell["concurrency"])].append(cell)
    summary: list[dict[str, Any]] = []
    for (bot, turn, latency, concurrency), cells in groups.items():
        pooled = [x for c in cells for x in c["latencies_ms"]]
        lag = [c["lag"]["p99_ms"] for c in cells if c.get("lag")]
        cpu: dict[str, float | None] = {}
        for name in cells[0]["cpu_ms_per_turn"]:
            cpu[name] = _median([c["cpu_ms_per_turn"].get(name) for c in cells])
        summary.append(
            {
                "bot": bot,
                "turn": turn,
                "latency_ms": latency,
                "concurrency": concurrency,
                "runs": len(cells),
                "requests": sum(c["n"] for c in cells),
                "wrong": sum(c["wrong"] for c in cells),
                "throughput": _median([c["throughput"] for c in cells]),
                "throughput_min": round(min(c["throughput"] for c in cells), 1),
                "throughput_max": round(max(c["throughput"] for c in cells), 1),
                "ok_throughput": _median([c["ok_throughput"] for c in cells]),
                "p50_ms": _median([c["p50_ms"] for c in cells]),
                "p99_ms": _median([c["p99_ms"] for c in cells]),
                "pooled_p50_ms": _pct(pooled, 50),
                "pooled_p99_ms": _pct(pooled, 99),
                "graph_round_trips_per_turn": _median([c["graph_round_trips_per_turn"] for c in cells]),
                "simulated_graph_ms_per_turn": _median([c["simulated_graph_ms_per_turn"] for c in cells]),
                "bot_added_p50_ms": _median([c["bot_added_p50_ms"] for c in cells]),
                "bot_added_p99_ms": _median([c["bot_added_p99_ms"] for c in cells]),
                "lag_p99_ms": _median(lag) if lag else None,
                "lag_max_ms": round(max(c["lag"]["max_ms"] for c in cells if c.get("lag")), 1) if lag else None,
                "gc_gen2_max_ms": max((c["gc"]["gen2"]["max_ms"] for c in cells if c.get("gc")), default=None),
                "gc_gen2_per_turn": (
                    round(sum(c["gc"]["gen2"]["n"] for c in cells if c.get("gc")) / sum(c["n"] for c in cells), 3)
                    if any(c.get("gc") for c in cells)
                    else None
                ),
                "gc_max_ms": max(
                    (max(c["gc"][g]["max_ms"] for g in ("gen0", "gen1", "gen2")) for c in cells if c.get("gc")),
                    default=None,
                ),
                "cpu_ms_per_turn": cpu,
                "store_writes_per_turn": _median([c.get("store_writes_per_turn") for c in cells]),
                "aiosqlite_calls_per_turn": _median([c.get("aiosqlite_calls_per_turn") for c in cells]),
                "aiosqlite_idle_rollbacks_per_turn": _median(
                    [c.get("aiosqlite_idle_rollbacks_per_turn") for c in cells]
                ),
            }
        )
    results["summary"] = summary
    results["targets"] = _targets(results)


def row(results: dict[str, Any], bot: str, turn: str, latency: float | None, concurrency: int) -> dict[str, Any] | None:
    for r in results.get("summary", []):
        if r["bot"] == bot and r["turn"] == turn and r["latency_ms"] == latency and r["concurrency"] == concurrency:
            return dict(r)
    return None


def _ratio(results: dict[str, Any], bot: str, turn: str, floor: str = "echo") -> float | None:
    """Median over repeats of (our successful turns/s ÷ the floor's turns/s) in the same repeat (close in time)."""
    ours = {
        c["repeat"]: c
        for c in results.get("cells", [])
        if c["bot"] == bot and c["turn"] == turn and c.get("latency_ms") == 0.0 and c["concurrency"] == 10
    }
    echo = {
        c["repeat"]: c
        for c in results.get("cells", [])
        if c["bot"] == floor and c["turn"] == turn and c["concurrency"] == 10
    }
    ratios = [ours[r]["ok_throughput"] / echo[r]["throughput"] for r in ours if r in echo and echo[r]["throughput"]]
    return round(statistics.median(ratios), 2) if ratios else None


_Target = dict[str, Any]


def _target(name: str, value: Any, goal: str, ok: bool | None, note: str = "") -> _Target:
    return {"target": name, "value": value, "goal": goal, "pass": ok, "note": note}


def _targets(results: dict[str, Any]) -> list[_Target]:
    """The targets table's rows; a measurement missing from ``results`` leaves its row out (or its value empty)."""
    rows = [
        *_throughput_targets(results),
        _warm_calls_target(results),
        _token_target(results),
        _lag_target(results),
        _memory_target(results),
        _startup_target(results),
    ]
    return [row for row in rows if row is not None]


def _throughput_targets(results: dict[str, Any]) -> list[_Target]:
    rows = []
    for turn in ("message", "confirm"):
        ratio = _ratio(results, "bot", turn)
        rows.append(
            _target(
                f"{turn}-turn throughput vs echo floor (c=10, 0 ms Graph)",
                ratio,
                f"≥ {TARGET_RATIO}×",
                None if ratio is None else ratio >= TARGET_RATIO,
                "successful turns/s ÷ the stock echo bot's turns/s in the cell right after it, per repeat; "
                "median over repeats",
            )
        )
    return rows


def _warm_calls_target(results: dict[str, Any]) -> _Target:
    warm = [f["round_trips"] for f in (results.get("flows") or {}).get("warm", [])]
    warm_calls = max(warm) if warm else None
    return _target(
        "Graph calls per warm flow (lookup → card → confirm → deprovision)",
        warm_calls,
        f"≤ {TARGET_WARM_CALLS}",
        None if warm_calls is None else warm_calls <= TARGET_WARM_CALLS,
        "top-level HTTP round trips to Graph ($batch counts once)",
    )


def _token_target(results: dict[str, Any]) -> _Target:
    tokens = results.get("tokens") or {}
    interval = tokens.get("refresh_interval_s")
    per_hour = round(3600 / interval, 2) if interval else None
    return _target(
        "token requests per process-hour (steady state)",
        per_hour,
        f"≤ {TARGET_TOKENS_PER_HOUR:g}",
        None if per_hour is None else per_hour <= TARGET_TOKENS_PER_HOUR,
        f"3600 s ÷ the measured renewal interval ({interval} s for the simulator's 3599 s tokens); "
        f"measured: {tokens.get('token_requests')} request(s) for {tokens.get('flows_completed')} flows",
    )


def _lag_target(results: dict[str, Any]) -> _Target | None:
    lags = [
        (r["lag_p99_ms"], r) for r in results.get("summary", []) if r["bot"] == "bot" and r["lag_p99_ms"] is not None
    ]
    if not lags:
        return None
    worst, worst_row = max(lags, key=lambda x: x[0])
    return _target(
        "event-loop lag p99 under load (worst condition)",
        worst,
        f"≤ {TARGET_LAG_MS:g} ms",
        worst <= TARGET_LAG_MS,
        f"{worst_row['turn']} turns, {worst_row['latency_ms']:g} ms Graph, c={worst_row['concurrency']} "
        "(median over repeats of each run's p99)",
    )


def _memory_target(results: dict[str, Any]) -> _Target | None:
    rss = _peak_rss_mib(results.get("memory") or {})
    if rss is None:
        return None
    return _target(
        "RSS after 10,000 pending actions",
        round(rss, 1),
        f"≤ {TARGET_RSS_MIB:g} MiB",
        rss <= TARGET_RSS_MIB,
        "pending actions inserted through Store.create, then 200 message turns",
    )


def _peak_rss_mib(memory: dict[str, Any]) -> float | None:
    """The higher RSS of the memory measurement (after 10,000 pending actions, then after 200 turns more)."""
    if not memory:
        return None
    return max(memory["rss_after_pending_kb"], memory["rss_after_pending_and_200_turns_kb"]) / MIB


def _startup_target(results: dict[str, Any]) -> _Target | None:
    startup = results.get("startup") or {}
    if not startup:
        return None
    baseline = (
        f"; the baseline commit's `app.py`, alternating with it in the same minutes: {startup['baseline_median_s']:.2f} s"
        if startup.get("baseline_median_s")
        else ""
    )
    return _target(
        "start-up until /readyz is 200 (python app.py)",
        startup["median_s"],
        f"≤ {TARGET_READY_S:g} s",
        startup["median_s"] <= TARGET_READY_S,
        f"median of {len(startup['runs_s'])}; fresh SQLite (migrations) and the first Graph token" + baseline,
    )


# -- the baseline (before the fixes) ---------------------------------------------------------------------


def _base(results: dict[str, Any]) -> dict[str, Any]:
    return dict(results.get("baseline") or {})


def brow(
    results: dict[str, Any], bot: str, turn: str, latency: float | None, concurrency: int
) -> dict[str, Any] | None:
    """A summary row of the baseline run (``results["baseline"]``), or ``None``."""
    return row({"summary": _base(results).get("summary", [])}, bot, turn, latency, concurrency)


def _btarget(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    for t in _base(results).get("targets", []):
        if t["target"] == name:
            return dict(t)
    return None


def _worst_gc(summary: list[dict[str, Any]], bot: str = "bot") -> float | None:
    values = [r["gc_max_ms"] for r in summary if r["bot"] == bot and r.get("gc_max_ms") is not None]
    return max(values) if values else None


def _gen2_per_1000(summary: list[dict[str, Any]], bot: str = "bot") -> float | None:
    rows = [r for r in summary if r["bot"] == bot and r.get("gc_gen2_per_turn") is not None]
    turns = sum(r["requests"] for r in rows)
    return round(1000 * sum(r["gc_gen2_per_turn"] * r["requests"] for r in rows) / turns, 2) if turns else None


def _worst_lag(summary: list[dict[str, Any]], bot: str = "bot") -> float | None:
    values = [r["lag_p99_ms"] for r in summary if r["bot"] == bot and r.get("lag_p99_ms") is not None]
    return max(values) if values else None


def _errors(summary: list[dict[str, Any]], bot: str = "bot") -> tuple[int, int]:
    rows = [r for r in summary if r["bot"] == bot]
    return sum(r["wrong"] for r in rows), sum(r["requests"] for r in rows)


def ab_pairs(results: dict[str, Any], turn: str) -> dict[str, Any]:
    """Same-window A/B (``ab:now`` vs ``ab:baseline``): per repeat, this bot ÷ the baseline bot; median of those."""
    cells = [c for c in results.get("cells", []) if c["turn"] == turn]
    now = {c["repeat"]: c for c in cells if c["bot"] == "ab:now"}
    old = {c["repeat"]: c for c in cells if c["bot"] == "ab:baseline"}
    repeats = sorted(set(now) & set(old))

    def ratios(pick: Any) -> list[float]:
        return [round(pick(now[r]) / pick(old[r]), 2) for r in repeats if pick(old[r])]

    out: dict[str, Any] = {}
    for key, pick in (
        ("throughput", lambda c: c["ok_throughput"]),
        ("cpu", lambda c: c["cpu_ms_per_turn"].get("bot") or 0.0),
        ("p99", lambda c: c["p99_ms"]),
    ):
        values = ratios(pick)
        out[key] = round(statistics.median(values), 2) if values else None
        out[f"{key}_each"] = values
    return out


def _change(before: Any, after: Any, *, lower_is_better: bool) -> str:
    if not isinstance(before, int | float) or not isinstance(after, int | float) or not before:
        return ""
    factor = after / before
    better = factor < 1 if lower_is_better else factor > 1
    if abs(factor - 1) < 0.05:
        return "≈ same"
    text = f"{factor:.2f}×" if factor >= 0.1 else f"{factor:.3f}×"
    return f"{text} ({'better' if better else 'worse'})"


# -- rendering -------------------------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "✅" if ok else ("❌" if ok is False else "—")


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _kib_mib(kb: Any) -> str:
    return "—" if kb is None else f"{kb / MIB:.1f} MiB"


def _g(r: dict[str, Any] | None, key: str) -> Any:
    return None if r is None else r.get(key)


def _cpu(r: dict[str, Any] | None, who: str = "bot") -> Any:
    return None if r is None else (r.get("cpu_ms_per_turn") or {}).get(who)


# -- RESULTS.md: tables only (the reading of them is bench/REPORT.md, written by hand) ----------------------------

Write = Callable[[str], None]


def table(w: Write, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A Markdown table, then a blank line."""
    w("| " + " | ".join(header) + " |")
    w("|" + "---|" * len(header))
    for cells in rows:
        w("| " + " | ".join(str(c) for c in cells) + " |")
    w("")


def render(results: dict[str, Any]) -> str:
    """``bench/RESULTS.md``: every table of one run, no prose."""
    out: list[str] = []
    w = out.append
    w("# Benchmark results\n")
    w(
        "Generated by `make bench` (`python -m bench`) from [`results.json`](results.json); what the figures mean and "
        "what to do about them: [`REPORT.md`](REPORT.md), written by hand.\n"
    )
    for section in (
        _render_run,
        _render_targets,
        _render_before_after,
        _render_ab,
        _render_turn_tables,
        _render_cpu,
        _render_flows,
        _render_tokens,
        _render_memory,
        _render_lag,
        _render_clients,
        _render_sql,
        _render_profile,
    ):
        section(results, w)
    w(issue18_rows(results))
    w(bulk_rows(results))
    return "\n".join(out).rstrip("\n") + "\n"


def _render_run(results: dict[str, Any], w: Write) -> None:
    meta = results["meta"]
    m, plan = meta["machine"], meta["plan"]
    git = m.get("git") or {}
    base = _base(results)
    w("## Run\n")
    rows: list[tuple[str, Any]] = [
        ("started", meta["started"]),
        ("duration", f"{meta.get('duration_s', '?')} s"),
        ("commit", f"`{git.get('commit', '?')}`"),
        (
            "uncommitted changes in bot/, cards/, app.py",
            ", ".join(f"`{d}`" for d in git.get("uncommitted_bot_files") or []) or "none",
        ),
        ("baseline (*before* columns)", f"`{base['commit']}` ({base.get('started')})" if base else "—"),
        ("CPU", f"{m['cpu_model']}, {m['cores']} cores"),
        ("memory", f"{m['memory_gib']} GiB"),
        ("Linux", m["kernel"]),
        ("Python", m["python"]),
        *((name, version) for name, version in m["packages"].items()),
        ("load average at start / end", f"{meta.get('load_average_at_start')} / {meta.get('load_average_at_end')}"),
        ("simulated ChromeOS devices", meta.get("simulator_chromeos_devices")),
        ("requests per cell", ", ".join(f"{k}: {v}" for k, v in plan["requests_per_cell"].items())),
        ("echo requests per cell", ", ".join(f"{k}: {v}" for k, v in plan["echo_requests_per_cell"].items())),
        ("repeats", plan["repeats"]),
        ("request time-out", f"{plan['request_timeout_s']:g} s"),
    ]
    table(w, ("Measure", "Value"), rows)


def _render_targets(results: dict[str, Any], w: Write) -> None:
    base = _base(results)
    w("## Targets\n")
    if base:
        w(f"| | Target | Before (`{base['commit']}`) | Now | Goal | Note |")
        w("|---|---|---|---|---|---|")
    else:
        w("| | Target | Now | Goal | Note |")
        w("|---|---|---|---|---|")
    for t in results.get("targets", []):
        before = _btarget(results, t["target"])
        cells = [_mark(t["pass"]), t["target"]]
        if base:
            cells.append(f"{_f(before['value'], 2)} {_mark(before['pass'])}" if before else "—")
        cells += [_f(t["value"], 2), t["goal"], t["note"]]
        w("| " + " | ".join(str(c) for c in cells) + " |")
    w("")


def _render_before_after(results: dict[str, Any], w: Write) -> None:
    base = _base(results)
    if not base:
        return
    w(f"## Before (`{base['commit']}`) → now\n")
    w("| Measure | Before | Now | Change |")
    w("|---|---|---|---|")
    for turn in ("message", "confirm"):
        _before_after_turn(results, turn, w)
    _before_after_graph(results, base, w)
    _before_after_health(results, base, w)
    w("")


def _ba_line(w: Write, label: str, before: Any, now: Any, *, lower: bool, digits: int = 1, unit: str = "") -> None:
    """One row of the before → now table; ``lower``: a smaller number is better."""
    w(
        f"| {label} | {_f(before, digits)}{unit if before is not None else ''} | {_f(now, digits)}"
        f"{unit if now is not None else ''} | {_change(before, now, lower_is_better=lower)} |"
    )


def _before_after_turn(results: dict[str, Any], turn: str, w: Write) -> None:
    now, before = row(results, "bot", turn, 0.0, 10), brow(results, "bot", turn, 0.0, 10)
    _ba_line(
        w, f"{turn} turns/s (c=10, 0 ms Graph)", _g(before, "ok_throughput"), _g(now, "ok_throughput"), lower=False
    )
    _ba_line(w, f"{turn} p50 ms (c=10, 0 ms)", _g(before, "p50_ms"), _g(now, "p50_ms"), lower=True)
    _ba_line(w, f"{turn} p99 ms (c=10, 0 ms)", _g(before, "p99_ms"), _g(now, "p99_ms"), lower=True)
    now50, before50 = row(results, "bot", turn, 0.0, 50), brow(results, "bot", turn, 0.0, 50)
    _ba_line(w, f"{turn} p99 ms (c=50, 0 ms)", _g(before50, "p99_ms"), _g(now50, "p99_ms"), lower=True)
    _ba_line(w, f"bot CPU ms per {turn} turn (c=10, 0 ms)", _cpu(before), _cpu(now), lower=True)
    target = f"{turn}-turn throughput vs echo floor (c=10, 0 ms Graph)"
    bt, nt = _btarget(results, target), next((t for t in results.get("targets", []) if t["target"] == target), None)
    _ba_line(w, f"{turn} ÷ stock echo floor (paired)", _g(bt, "value"), _g(nt, "value"), lower=False, digits=2)


def _before_after_graph(results: dict[str, Any], base: dict[str, Any], w: Write) -> None:
    """The machine's own floor, then latency and round trips at a realistic Graph."""
    echo_now, echo_before = row(results, "echo", "message", None, 10), brow(results, "echo", "message", None, 10)
    _ba_line(
        w,
        "stock echo floor, message turns/s (c=10) — how the machine itself moved",
        _g(echo_before, "throughput"),
        _g(echo_now, "throughput"),
        lower=False,
    )
    c1_now, c1_before = row(results, "bot", "confirm", 50.0, 1), brow(results, "bot", "confirm", 50.0, 1)
    _ba_line(w, "confirm p50 ms at 50 ms Graph, c=1", _g(c1_before, "p50_ms"), _g(c1_now, "p50_ms"), lower=True)
    flows, bflows = results.get("flows") or {}, base.get("flows") or {}
    warm_now = max((f["round_trips"] for f in flows.get("warm", [])), default=None)
    warm_before = max(bflows.get("warm") or [0]) or None
    _ba_line(w, "Graph round trips per warm flow", warm_before, warm_now, lower=True, digits=0)
    conf_rt = (row(results, "bot", "confirm", 0.0, 10) or {}).get("graph_round_trips_per_turn")
    bconf_rt = (brow(results, "bot", "confirm", 0.0, 10) or {}).get("graph_round_trips_per_turn")
    _ba_line(w, "Graph round trips per confirm turn", bconf_rt, conf_rt, lower=True, digits=2)


def _before_after_health(results: dict[str, Any], base: dict[str, Any], w: Write) -> None:
    """Event-loop lag, GC, errors, warnings, memory and start-up."""
    summary, bsummary = results.get("summary", []), base.get("summary", [])
    _ba_line(w, "event-loop lag p99, worst cell (ms)", _worst_lag(bsummary), _worst_lag(summary), lower=True)
    _ba_line(w, "longest GC pause, any cell (ms)", _worst_gc(bsummary), _worst_gc(summary), lower=True)
    gen2_before, gen2_now = _gen2_per_1000(bsummary), _gen2_per_1000(summary)
    _ba_line(w, "gen-2 collections per 1,000 turns", gen2_before, gen2_now, lower=True, digits=2)
    be, bn = _errors(bsummary)
    ne, nn = _errors(summary)
    w(f"| failed turns in the bot's matrix | {be}/{bn} | {ne}/{nn} | |")
    _ba_line(
        w,
        'SDK "App ID is not provided" warnings in the load-tested bot\'s log',
        base.get("sdk_warnings_logged"),
        results.get("sdk_warnings_logged"),
        lower=True,
        digits=0,
    )
    peak_before, peak_now = _peak_rss_mib(base.get("memory") or {}), _peak_rss_mib(results.get("memory") or {})
    _ba_line(
        w,
        "RSS after 10,000 pending actions + 200 turns (MiB)",
        None if peak_before is None else round(peak_before, 1),
        None if peak_now is None else round(peak_now, 1),
        lower=True,
    )
    _ba_line(
        w,
        "start-up to `/readyz` (s, median)",
        (base.get("startup") or {}).get("median_s"),
        (results.get("startup") or {}).get("median_s"),
        lower=True,
        digits=2,
    )


def _render_ab(results: dict[str, Any], w: Write) -> None:
    ab = results.get("ab")
    if not ab:
        return
    w(f"## Same-window A/B: the bot of `{ab['commit']}` against this bot (0 ms Graph, c=10)\n")
    w("| Bot | Turn | turns/s (min–max) | p50 ms | p99 ms | bot CPU ms per turn | errors |")
    w("|---|---|---|---|---|---|---|")
    for name, label in (("ab:baseline", f"`{ab['commit']}` (before)"), ("ab:now", "this commit (now)")):
        for turn in ("message", "confirm"):
            r = row(results, name, turn, 0.0, 10)
            if r:
                w(
                    f"| {label} | {turn} | {_f(r['ok_throughput'])} ({_f(r['throughput_min'])}–{_f(r['throughput_max'])}) | "
                    f"{_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {_f(_cpu(r))} | {r['wrong']}/{r['requests']} |"
                )
    w("")
    rows = []
    for turn in ("message", "confirm"):
        x = ab_pairs(results, turn)
        each = [", ".join(f"{v:.2f}" for v in x[key]) for key in ("throughput_each", "cpu_each")]
        rows.append(
            (turn, f"{_f(x['throughput'], 2)}× ({each[0]})", f"{_f(x['cpu'], 2)}× ({each[1]})", f"{_f(x['p99'], 2)}×")
        )
    table(w, ("Turn", "throughput now ÷ before (each repeat)", "CPU per turn (each repeat)", "p99"), rows)


def _render_turn_tables(results: dict[str, Any], w: Write) -> None:
    for turn, title in (
        ("message", "Message turn (`deprovision <device>` → card)"),
        ("confirm", "Confirm turn (click → Graph accepted → card updated)"),
    ):
        w(f"## {title}\n")
        w(
            "| Bot | Graph latency | c | p50 ms | p99 ms | turns/s | ÷ echo | errors | Graph RT/turn | bot-added p50 / p99 ms | loop lag p99 ms |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        order = {"bot": 0, "echo": 1, "echo+pooled": 2}
        for r in sorted(
            (x for x in results.get("summary", []) if x["turn"] == turn and x["bot"] in order),
            key=lambda x: (order[x["bot"]], x["latency_ms"] or 0, x["concurrency"]),
        ):
            echo = row(results, "echo", turn, None, r["concurrency"])
            ratio = (
                f"{(r['ok_throughput'] or 0) / echo['throughput']:.2f}×"
                if r["bot"] != "echo" and echo and echo["throughput"] and r["latency_ms"] in (0.0, None)
                else ""
            )
            spread = f"{_f(r['throughput'])} ({_f(r['throughput_min'])}–{_f(r['throughput_max'])})"
            lat = "—" if r["latency_ms"] is None else f"{r['latency_ms']:g} ms"
            name = {"bot": "bot", "echo": "echo floor (stock SDK)", "echo+pooled": "echo + pooled clients"}[r["bot"]]
            w(
                f"| {name} | {lat} | {r['concurrency']} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} | {spread} | "
                f"{ratio} | {r['wrong']}/{r['requests']} | {_f(r['graph_round_trips_per_turn'], 2)} | "
                f"{_f(r['bot_added_p50_ms'])} / {_f(r['bot_added_p99_ms'])} | {_f(r['lag_p99_ms'])} |"
            )
        w("")


def _render_cpu(results: dict[str, Any], w: Write) -> None:
    base = _base(results)
    w("## CPU and database work per turn (c=10, 0 ms Graph; median over repeats)\n")
    w(
        "| Bot | Turn | bot process CPU ms | before | simulator | connector | load generator | write transactions | "
        "aiosqlite thread hand-offs | … of which idle rollbacks |"
    )
    w("|---|---|---|---|---|---|---|---|---|---|")
    for bot in ("bot", "echo", "echo+pooled"):
        for turn in ("message", "confirm"):
            latency = 0.0 if bot == "bot" else None
            r = row(results, bot, turn, latency, 10)
            if not r:
                continue
            c = r["cpu_ms_per_turn"]
            before = _cpu(brow(results, bot, turn, latency, 10)) if base else None
            store = (
                f"{_f(r.get('store_writes_per_turn'), 2)} | {_f(r.get('aiosqlite_calls_per_turn'))} | "
                f"{_f(r.get('aiosqlite_idle_rollbacks_per_turn'), 2)}"
                if bot == "bot"
                else "— | — | —"
            )
            w(
                f"| {bot} | {turn} | {_f(c.get('bot'))} | {_f(before)} | {_f(c.get('simulator'))} | "
                f"{_f(c.get('connector'))} | {_f(c.get('loadgen'))} | {store} |"
            )
    w("")


def _render_flows(results: dict[str, Any], w: Write) -> None:
    flows = results.get("flows") or {}
    if not flows:
        return
    w("## Graph calls per complete flow\n")
    w(
        "| Flow | Message turn RT | Confirm turn RT | Total round trips | $batch sub-requests | Token requests | "
        "Write transactions (msg / confirm) | aiosqlite hand-offs (msg / confirm) | Deprovision accepted |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for label, f in [("cold (first after start)", flows["cold"])] + [
        (f"warm #{i + 1}", x) for i, x in enumerate(flows.get("warm", []))
    ]:
        subs = f["message"]["batch_subrequests"] + f["confirm"]["batch_subrequests"]
        writes = f.get("store_writes") or {}
        calls = f.get("aiosqlite_calls") or {}
        w(
            f"| {label} | {f['message']['round_trips']} | {f['confirm']['round_trips']} | {f['round_trips']} | {subs} | "
            f"{f['token_requests']} | {writes.get('message', '—')} / {writes.get('confirm', '—')} | "
            f"{calls.get('message', '—')} / {calls.get('confirm', '—')} | {'yes' if f['accepted'] else 'no'} |"
        )
    w("")
    bflows = _base(results).get("flows") or {}
    if bflows:
        warm = ", ".join(str(x) for x in bflows.get("warm") or [])
        table(
            w,
            ("Baseline", "cold flow round trips", "warm flows round trips"),
            [(f"`{_base(results)['commit']}`", bflows.get("cold"), warm)],
        )
    rows = []
    for label, f in (("cold", flows["cold"]), ("warm", (flows.get("warm") or [flows["cold"]])[0])):
        for turn in ("message", "confirm"):
            rows.append((label, turn, ", ".join(f"`{p}` ×{n}" for p, n in sorted(f[turn]["requests_by_path"].items()))))
    table(w, ("Flow", "Turn", "Requests by path (the simulator lists $batch sub-requests too)"), rows)


def _render_tokens(results: dict[str, Any], w: Write) -> None:
    tokens = results.get("tokens") or {}
    if not tokens:
        return
    interval = tokens.get("refresh_interval_s")
    w("## Token requests\n")
    rows = [
        ("token requests", tokens["token_requests"]),
        ("bot process uptime", f"{tokens['process_uptime_s']} s"),
        ("flows completed", tokens["flows_completed"]),
        ("token requests per 1,000 flows", _f(tokens["per_1000_flows"], 3)),
        ("renewal interval of the cached token", f"{interval} s"),
        ("token requests per process-hour (steady state)", _f(3600 / interval, 2) if interval else "—"),
    ]
    table(w, ("Measure", "Value"), rows)


def _render_memory(results: dict[str, Any], w: Write) -> None:
    w("## Memory and start-up\n")
    startup = results.get("startup") or {}
    memory = results.get("memory") or {}
    bp = results.get("bot_process") or {}
    w("| Measure | Value |")
    w("|---|---|")
    if startup:
        w(
            f"| `python app.py` → `/readyz` 200 ({len(startup['runs_s'])} runs) | {', '.join(f'{x:.2f}' for x in startup['runs_s'])} s "
            f"(median {startup['median_s']:.2f} s) |"
        )
        w(f"| … until the server listens (`/healthz`) | {', '.join(f'{x:.2f}' for x in startup['listening_s'])} s |")
        if startup.get("baseline_runs_s"):
            w(
                f"| the baseline commit's `app.py` (`{startup['baseline_commit']}`), alternating with these | "
                f"{', '.join(f'{x:.2f}' for x in startup['baseline_runs_s'])} s (median {startup['baseline_median_s']:.2f} s) |"
            )
        w(f"| RSS of `python app.py` once ready | {', '.join(_kib_mib(x) for x in startup['rss_after_start_kb'])} |")
    if memory:
        w(f"| RSS of a fresh launcher bot once ready | {_kib_mib(memory['rss_after_start_kb'])} |")
        w(
            f"| … after {memory['pending_created']:,} pending actions (Store.create, one by one, "
            f"{memory['pending_created_in_s']} s) | {_kib_mib(memory['rss_after_pending_kb'])} |"
        )
        w(
            f"| … and {memory.get('turns_after_pending', 200)} more message turns | "
            f"{_kib_mib(memory['rss_after_pending_and_200_turns_kb'])} |"
        )
        w(f"| actions in the database at the end | {memory['actions_by_state']} |")
    if bp:
        w(
            f"| RSS of the load-tested bot: after start → after all its cells | {_kib_mib(bp.get('rss_after_start_kb'))} "
            f"→ {_kib_mib(bp.get('rss_after_load_kb'))} |"
        )
        if bp.get("gc_frozen_objects") is not None:
            w(
                f"| objects moved to the permanent generation by `gc.freeze()` at start-up | {bp['gc_frozen_objects']:,} |"
            )
        if bp.get("graph_by_path_keys") is not None:
            w(
                f"| `GraphStats.by_path` keys after all cells ({bp.get('graph_calls', '?'):,} Graph calls) | "
                f"{bp['graph_by_path_keys']} |"
            )
    w("")


def _render_lag(results: dict[str, Any], w: Write) -> None:
    lag_rows = [r for r in results.get("summary", []) if r["bot"] == "bot" and r["lag_p99_ms"] is not None]
    if not lag_rows:
        return
    base = _base(results)
    w("## Event-loop lag inside the bot process\n")
    w(
        "| Turn | Graph latency | c | lag p99 ms | before | lag max ms | longest GC pause ms | before | "
        "gen-2 GC max ms / per turn |"
    )
    w("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(lag_rows, key=lambda x: (x["turn"], x["latency_ms"], x["concurrency"])):
        b = brow(results, "bot", r["turn"], r["latency_ms"], r["concurrency"]) if base else None
        w(
            f"| {r['turn']} | {r['latency_ms']:g} ms | {r['concurrency']} | {_f(r['lag_p99_ms'])} | "
            f"{_f(_g(b, 'lag_p99_ms'))} | {_f(r['lag_max_ms'])} | {_f(r.get('gc_max_ms'))} | {_f(_g(b, 'gc_max_ms'))} | "
            f"{_f(r.get('gc_gen2_max_ms'))} / {_f(r.get('gc_gen2_per_turn'), 3)} |"
        )
    w("")


def _render_clients(results: dict[str, Any], w: Write) -> None:
    clients = results.get("http_clients")
    if not clients:
        return
    if "httpx_aiohttp_c10" in clients:  # since the bot's Graph client runs httpx over aiohttp (bot.graph_transport)
        w(
            f"## HTTPS client cost: httpx on httpcore, httpx over aiohttp (the bot's Graph client), aiohttp ({clients['requests']} requests per row, median of {clients.get('repeats', 1)} repeats)\n"
        )
    else:
        w(f"## HTTPS client cost: httpx (the bot's Graph client) vs aiohttp ({clients['requests']} requests per row)\n")
    w("| Client | concurrency | CPU ms / request | wall ms / request |")
    w("|---|---|---|---|")
    for name in ("httpx", "httpx_aiohttp", "aiohttp"):
        for c in (1, 10):
            x = clients.get(f"{name}_c{c}")
            if x:
                w(f"| {name} | {c} | {x['cpu_ms_per_request']:.2f} | {x['wall_ms_per_request']:.2f} |")
    w("")


def _render_sql(results: dict[str, Any], w: Write) -> None:
    sql = results.get("sql_inserts")
    if not sql:
        return
    w(
        f"## SQL INSERT cost: values baked into the statement vs execution parameters ({sql['rows']} rows, median of {sql['rounds']} rounds)\n"
    )
    w("| Row | columns | `.values(**row)` µs | `execute(insert(), row)` µs |")
    w("|---|---|---|---|")
    for name, label in (
        ("action_insert", "action (`Store.create`)"),
        ("audit_insert", "audit event (`AuditLog.record`)"),
    ):
        x = sql.get(name)
        if x:
            w(f"| {label} | {x['columns']} | {x['values_us_per_row']:.0f} | {x['params_us_per_row']:.0f} |")
    w("")


def _render_profile(results: dict[str, Any], w: Write) -> None:
    profile = results.get("profile")
    if not profile:
        return
    bprofile = _base(results).get("profile") or {}
    turns = [t for t in ("message", "confirm") if t in profile]
    w("## Where the bot's time goes (py-spy, c=10, 0 ms Graph; % of the event loop's busy samples)\n")
    busy = [
        (
            t,
            profile[t].get("loop_busy_samples", 0),
            profile[t].get("loop_busy_share", "?"),
            (bprofile.get(t) or {}).get("loop_busy_share", "—"),
            profile[t].get("sqlite_thread_busy_vs_loop_busy", "?"),
        )
        for t in turns
    ]
    table(w, ("Turn", "busy samples", "loop busy %", "before", "SQLite threads busy, % of loop busy"), busy)
    rows = []
    for label in list(profile[turns[0]]["buckets"]) if turns else []:
        cells: list[str] = [label]
        for t in turns:
            before = ((bprofile.get(t) or {}).get("buckets") or {}).get(label)
            cells += [
                f"{profile[t]['buckets'].get(label, 0):.1f} %",
                f"{_f(before)}{' %' if before is not None else ''}",
            ]
        rows.append(cells)
    table(w, ("Item", *(h for t in turns for h in (f"{t} turn", "before"))), rows)
    top = [(t, f"`{frame}`", f"{share} %") for t in turns for frame, share in profile[t]["top_self"][:8]]
    table(w, ("Turn", "Top own-time frame", "share"), top)
