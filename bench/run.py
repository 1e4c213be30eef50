"""The benchmark run: every process on loopback, figures into ``bench/results.json`` and the tables of
``bench/RESULTS.md`` (``bench/REPORT.md``, the reading of them, is written by hand).

Processes (each its own OS process): the simulator (``bench.sim_server``), the capture connector (``bench.connector``),
the bot (``bench.launcher`` = ``bot.runtime.build_app`` + probes, or ``python app.py`` for start-up), the echo floor
(``bench.echo``) and the load generator (``bench.loadgen``). Nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from bench import teams
from bench.procs import ROOT, Child, Http, Loadgen, free_port, rss_kb, wait_http
from simulator.demo import demo_environment

BENCH = Path(__file__).resolve().parent
LATENCIES = (0.0, 0.050)
CONCURRENCY = (1, 10, 50)
TICK = os.sysconf("SC_CLK_TCK")
PACKAGES = (
    "microsoft-agents-hosting-core",
    "microsoft-agents-hosting-aiohttp",
    "microsoft-agents-activity",
    "microsoft-agents-authentication-msal",
    "aiohttp",
    "httpx",
    "msal",
    "SQLAlchemy",
    "aiosqlite",
    "pydantic",
    "opentelemetry-api",
    "anyio",
    "httpcore",
    "sniffio",
)


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


class _SimShim:
    """What :func:`simulator.demo.demo_environment` needs from a simulator: its ``env()``."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def env(self) -> dict[str, str]:
        return dict(self._env)


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the whole line)
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    git: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "bot", "app.py", "cards"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split("\n")
        git["uncommitted_bot_files"] = sorted(line[3:] for line in dirty if line.strip())
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": versions,
        "git": git,
    }


IMPORT_WATCH = (
    "microsoft_agents.activity",
    "microsoft_agents.hosting.aiohttp",
    "microsoft_agents.authentication.msal",
    "aiohttp",
    "sqlalchemy",
    "httpx",
    "alembic.command",
)


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


class Bench:
    def __init__(self, plan: Plan, logs: Path) -> None:
        self.plan = plan
        self.logs = logs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTIONS__")}
        self.env["LOG_LEVEL"] = "WARNING"
        self.children: list[Child] = []
        self.loadgen = Loadgen(self.env, logs)
        self.sim_info: dict[str, Any] = {}
        self.sim_url = ""
        self.connector_url = ""
        self.devices: list[dict[str, str]] = []
        self.http: Http | None = None
        self.results: dict[str, Any] = {"cells": []}
        #: the baseline commit and its source tree (``git archive``), for same-window comparisons
        self.baseline_commit: str | None = None
        self.baseline_tree: Path | None = None
        self._bodies = 0

    # -- processes --------------------------------------------------------------------------------------

    async def start_infrastructure(self) -> None:
        needed = max([*self.plan.n.values(), *self.plan.overload_n.values()]) + 8
        clones = needed // 30 + 1
        sim = Child(
            "simulator", [sys.executable, "-m", "bench.sim_server", "--clones", str(clones)], self.env, self.logs
        )
        self.children.append(sim)
        info = await sim.start(announce=True)
        assert info is not None
        self.sim_info = info
        self.sim_url = str(info["base_url"])
        self.devices = list(info["devices"])
        if len(self.devices) < needed:
            raise RuntimeError(f"the simulator has {len(self.devices)} ChromeOS devices, {needed} needed")
        port = free_port()
        connector = Child(
            "connector", [sys.executable, "-m", "bench.connector", "--port", str(port)], self.env, self.logs
        )
        self.children.append(connector)
        cinfo = await connector.start(announce=True)
        assert cinfo is not None
        self.connector_url = str(cinfo["url"])
        await self.loadgen.start()
        self.http = await Http(str(info["env"]["SSL_CERT_FILE"])).__aenter__()

    def bot_env(self, port: int, db: Path) -> dict[str, str]:
        env = demo_environment(cast(Any, _SimShim(self.sim_info["env"])), port, f"sqlite:///{db}", LOG_LEVEL="WARNING")
        env.pop("CONNECTIONS__SERVICE_CONNECTION__SETTINGS__CLIENTID", None)
        return env

    async def start_bot(self, name: str, flags: list[str], cwd: Path | None = None) -> tuple[Child, str, float]:
        """``python -m bench.launcher`` — from this checkout, or from another source tree (``cwd``)."""
        port = free_port()
        db = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.logs)) / "bot.db"
        argv = [sys.executable, "-m", "bench.launcher", *flags]
        child = Child(name, argv, self.bot_env(port, db), self.logs, cwd=cwd)
        self.children.append(child)
        await child.start()
        ready_at = await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        return child, f"http://127.0.0.1:{port}", ready_at - child.started_at

    async def start_echo(self, name: str, flags: list[str]) -> tuple[Child, str]:
        port = free_port()
        child = Child(name, [sys.executable, "-m", "bench.echo", "--port", str(port), *flags], self.env, self.logs)
        self.children.append(child)
        await child.start()
        await wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        return child, f"http://127.0.0.1:{port}"

    async def stop(self, child: Child) -> None:
        await child.stop()
        if child in self.children:
            self.children.remove(child)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.__aexit__(None, None, None)
        await self.loadgen.stop()
        for child in reversed(self.children):
            await child.stop()

    # -- control --------------------------------------------------------------------------------------

    @property
    def h(self) -> Http:
        assert self.http is not None
        return self.http

    async def sim_stats(self) -> dict[str, Any]:
        return dict(await self.h.get(self.sim_url + "/_sim/stats"))

    async def reset_round(self, latency: float, bot_url: str | None) -> None:
        """Fresh tenant and empty call log in the simulator, empty bot tables, empty connector."""
        await self.h.post(self.sim_url + "/_sim/control", {"reset": True, "reset_state": True, "latency": latency})
        if bot_url:
            await self.h.post(bot_url + "/bench/reset")
        await self.h.post(self.connector_url + "_reset")

    def write_bodies(self, bodies: list[dict[str, Any]]) -> Path:
        self._bodies += 1
        path = self.logs / f"bodies-{self._bodies % 4}.json"
        path.write_text(json.dumps(bodies), encoding="utf-8")
        return path

    # -- one measured cell ------------------------------------------------------------------------------

    async def cell(
        self,
        label: dict[str, Any],
        url: str,
        bodies: list[dict[str, Any]],
        concurrency: int,
        *,
        invoke: bool,
        bot: Child,
        bot_url: str | None,
    ) -> dict[str, Any]:
        path = self.write_bodies(bodies)
        pids = {"bot": bot.pid, "loadgen": self.loadgen.process.pid if self.loadgen.process else 0}
        for child in self.children:
            if child.name in ("simulator", "connector"):
                pids[child.name] = child.pid
        bot_before: dict[str, Any] = {}
        if bot_url:
            bot_before = await self.h.get(bot_url + "/bench/stats?reset=1")
        sim_before = await self.sim_stats()
        cpu_before = {name: cpu_ticks(pid) for name, pid in pids.items()}
        result = await self.loadgen.run(
            {
                "url": url + "/api/messages",
                "bodies": str(path),
                "concurrency": concurrency,
                "expect": 200 if invoke else 202,
                "invoke": invoke,
                "timeout": self.plan.timeout,
            }
        )
        cpu_after = {name: cpu_ticks(pid) for name, pid in pids.items()}
        sim_after = await self.sim_stats()
        stats = await self.h.get(bot_url + "/bench/stats") if bot_url else {"rss_kb": rss_kb(bot.pid)}
        lat_ms = [x * 1000 for x in result["latencies"]]
        n = int(result["n"])
        rt = int(sim_after["round_trips"]) - int(sim_before["round_trips"])
        subs = (
            int(sim_after["calls"])
            - int(sim_after["round_trips"])
            - (int(sim_before["calls"]) - int(sim_before["round_trips"]))
        )
        latency_ms = float(label.get("latency_ms") or 0.0)

        def per_turn(key: str, digits: int) -> float | None:
            """A bench counter's increase per request (absent from launchers of older commits)."""
            if not n or key not in stats or key not in bot_before:
                return None
            return round((stats[key] - bot_before[key]) / n, digits)

        rt_per_turn = rt / n if n else 0.0
        graph_ms = latency_ms * rt_per_turn
        cell: dict[str, Any] = {
            **label,
            "concurrency": concurrency,
            "n": n,
            "ok": n - int(result["wrong"]),
            "wrong": int(result["wrong"]),
            "statuses": result["statuses"],
            "wrong_samples": result.get("wrong_samples", []),
            "wall_s": round(float(result["wall_s"]), 3),
            "throughput": round(n / float(result["wall_s"]), 2) if result["wall_s"] else 0.0,
            "ok_throughput": round((n - int(result["wrong"])) / float(result["wall_s"]), 2)
            if result["wall_s"]
            else 0.0,
            "p50_ms": round(pct(lat_ms, 50), 2),
            "p99_ms": round(pct(lat_ms, 99), 2),
            "mean_ms": round(statistics.fmean(lat_ms), 2) if lat_ms else 0.0,
            "max_ms": round(max(lat_ms), 2) if lat_ms else 0.0,
            "graph_round_trips": rt,
            "graph_batch_subrequests": subs,
            "graph_round_trips_per_turn": round(rt_per_turn, 3),
            "simulated_graph_ms_per_turn": round(graph_ms, 2),
            "bot_added_p50_ms": round(pct(lat_ms, 50) - graph_ms, 2),
            "bot_added_p99_ms": round(pct(lat_ms, 99) - graph_ms, 2),
            "deprovision_accepted": int(sim_after["deprovision_accepted"]) - int(sim_before["deprovision_accepted"]),
            "cpu_ms_per_turn": {
                name: round((cpu_after[name] - cpu_before[name]) / TICK * 1000 / n, 2) if n else 0.0 for name in pids
            },
            "store_writes_per_turn": per_turn("store_writes", 2),
            "aiosqlite_calls_per_turn": per_turn("aiosqlite_calls", 1),
            "aiosqlite_idle_rollbacks_per_turn": per_turn("aiosqlite_idle_rollbacks", 2),
            "busy_answers": (stats["turns_refused"] - bot_before["turns_refused"])
            if stats.get("turns_refused") is not None and bot_before.get("turns_refused") is not None
            else None,
            "rss_kb": stats.get("rss_kb"),
            "lag": stats.get("lag"),
            "gc": stats.get("gc"),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "latencies_ms": [round(x, 2) for x in lat_ms],
        }
        self.results["cells"].append(cell)
        print(
            f"  {label.get('bot')} {label.get('turn'):8} L={latency_ms:>3.0f}ms c={concurrency:<3} n={n:<4} "
            f"{cell['throughput']:7.1f}/s p50={cell['p50_ms']:7.1f} p99={cell['p99_ms']:7.1f} ms "
            f"wrong={cell['wrong']} rt/turn={rt_per_turn:.2f}"
            + (f" lag99={cell['lag']['p99_ms']:.1f}ms" if cell.get("lag") else ""),
            flush=True,
        )
        return cell

    # -- the bot's message + confirm round ---------------------------------------------------------------

    async def bot_round(
        self, bot: Child, bot_url: str, name: str, latency: float, concurrency: int, n: int, repeat: int
    ) -> None:
        await self.reset_round(latency, bot_url)
        devices = self.devices[:n]
        label = {"bot": name, "latency_ms": latency * 1000, "repeat": repeat}
        messages = [teams.message(self.connector_url, i, f"deprovision {d['serial']}") for i, d in enumerate(devices)]
        await self.cell(
            {**label, "turn": "message"}, bot_url, messages, concurrency, invoke=False, bot=bot, bot_url=bot_url
        )
        found = await self.h.get(self.connector_url + "_actions")
        actions = found["actions"]
        if len(actions) < n:
            print(f"    only {len(actions)}/{n} confirmation cards; other replies: {found['other_texts']}", flush=True)
        if not actions:
            return
        confirms = [
            teams.confirm(self.connector_url, a["conversation_id"], a["action_id"], a["activity_id"]) for a in actions
        ]
        await self.cell(
            {**label, "turn": "confirm", "cards_created": len(actions)},
            bot_url,
            confirms,
            concurrency,
            invoke=True,
            bot=bot,
            bot_url=bot_url,
        )

    async def echo_round(self, echo: Child, url: str, name: str, concurrency: int, n: int, repeat: int) -> None:
        await self.h.post(self.connector_url + "_reset")
        label = {"bot": name, "latency_ms": None, "repeat": repeat}
        messages = [
            teams.message(self.connector_url, i, f"deprovision {self.devices[i % len(self.devices)]['serial']}")
            for i in range(n)
        ]
        await self.cell({**label, "turn": "message"}, url, messages, concurrency, invoke=False, bot=echo, bot_url=None)
        invokes = [
            teams.confirm(self.connector_url, teams.conversation_for(i), f"bench-action-{i:012d}", f"msg-{i + 1}")
            for i in range(n)
        ]
        await self.cell({**label, "turn": "confirm"}, url, invokes, concurrency, invoke=True, bot=echo, bot_url=None)

    # -- the baseline commit's bot, side by side ----------------------------------------------------------

    async def ab_against_baseline(
        self, bot: Child, bot_url: str, echoes: list[tuple[str, Child, str]] | None = None
    ) -> dict[str, Any] | None:
        """The baseline commit's bot (its own ``bench.launcher`` from ``git archive``) against this one, alternating.

        Both bots serve c=10 message + confirm rounds at 0 ms Graph in turn, seconds apart, so the comparison does
        not depend on how the shared machine's speed drifted between the baseline run and this one. Cells are
        labelled ``ab:baseline`` and ``ab:now``; the order alternates between repeats. Each repeat ends with the echo
        floors' rounds (``ab:echo``, ``ab:echo+pooled``), so both bots' CPU and throughput pair with a floor measured
        seconds later. Then (issue 18) both bots at 50 ms Graph, c=50 and c=200 (``ovl:baseline``, ``ovl:now``).
        """
        commit, tree = self.baseline_commit, self.baseline_tree
        if commit is None or tree is None:
            return None
        print(f"A/B: the bot of {commit} against this bot, alternating (0 ms Graph, c=10)", flush=True)
        old, old_url, _ = await self.start_bot("baseline-bot", [], cwd=tree)
        try:
            n = self.plan.ab_n
            for name, child, url in (("ab:warm", old, old_url), ("ab:warm", bot, bot_url)):
                await self.bot_round(child, url, name, 0.0, 10, min(n, 20), 0)
            self.results["cells"] = [c for c in self.results["cells"] if c["bot"] != "ab:warm"]
            pair = [("ab:baseline", old, old_url), ("ab:now", bot, bot_url)]
            for repeat in range(self.plan.ab_repeats):
                for name, child, url in pair if repeat % 2 == 0 else pair[::-1]:
                    await self.bot_round(child, url, name, 0.0, 10, n, repeat)
                for name, echo, echo_url in echoes or []:
                    await self.echo_round(echo, echo_url, f"ab:{name}", 10, self.plan.echo_n[10], repeat)
            overload = [("ovl:baseline", old, old_url), ("ovl:now", bot, bot_url)]
            for repeat in range(self.plan.overload_repeats):
                for name, child, url in overload if repeat % 2 == 0 else overload[::-1]:
                    for concurrency, count in self.plan.overload_n.items():
                        await self.bot_round(child, url, name, 0.05, concurrency, count, repeat)
        finally:
            await self.stop(old)
        return {"commit": commit, "repeats": self.plan.ab_repeats, "requests_per_cell": n}

    # -- single flows: Graph calls, cold and warm ----------------------------------------------------------

    async def flow(self, bot_url: str, device: dict[str, str], index: int) -> dict[str, Any]:
        await self.h.post(self.connector_url + "_reset")
        before = await self.sim_stats()
        bot_before = await self.h.get(bot_url + "/bench/stats")
        await self.h.post(
            bot_url + "/api/messages", teams.message(self.connector_url, index, f"deprovision {device['serial']}")
        )
        middle = await self.sim_stats()
        bot_middle = await self.h.get(bot_url + "/bench/stats")
        actions = (await self.h.get(self.connector_url + "_actions"))["actions"]
        if not actions:
            raise RuntimeError(f"no confirmation card for {device['serial']}")
        a = actions[0]
        answer = await self.h.post(
            bot_url + "/api/messages",
            teams.confirm(self.connector_url, a["conversation_id"], a["action_id"], a["activity_id"]),
        )
        bot_after = await self.h.get(bot_url + "/bench/stats")
        for _ in range(250):  # the submission runs as a task that can outlive the invoke answer: let it finish
            if not bot_after["background_tasks"]:
                break
            await asyncio.sleep(0.02)
            bot_after = await self.h.get(bot_url + "/bench/stats")
        after = await self.sim_stats()

        def delta(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
            paths = {k: v - x["by_path"].get(k, 0) for k, v in y["by_path"].items() if v - x["by_path"].get(k, 0)}
            return {
                "round_trips": y["round_trips"] - x["round_trips"],
                "batch_subrequests": (y["calls"] - y["round_trips"]) - (x["calls"] - x["round_trips"]),
                "requests_by_path": paths,
            }

        return {
            "device": device["serial"],
            "message": delta(before, middle),
            "confirm": delta(middle, after),
            "round_trips": after["round_trips"] - before["round_trips"],
            "bot_graph_calls": bot_after["graph_calls"] - bot_before["graph_calls"],
            "token_requests": bot_after["token_requests"] - bot_before["token_requests"],
            "message_bot_graph_calls": bot_middle["graph_calls"] - bot_before["graph_calls"],
            "store_writes": {
                "message": bot_middle["store_writes"] - bot_before["store_writes"],
                "confirm": bot_after["store_writes"] - bot_middle["store_writes"],
            },
            "aiosqlite_calls": {
                "message": bot_middle["aiosqlite_calls"] - bot_before["aiosqlite_calls"],
                "confirm": bot_after["aiosqlite_calls"] - bot_middle["aiosqlite_calls"],
            },
            "aiosqlite_idle_rollbacks": {
                "message": bot_middle["aiosqlite_idle_rollbacks"] - bot_before["aiosqlite_idle_rollbacks"],
                "confirm": bot_after["aiosqlite_idle_rollbacks"] - bot_middle["aiosqlite_idle_rollbacks"],
            },
            "accepted": after["deprovision_accepted"] - before["deprovision_accepted"] == 1,
            "confirm_status": (answer or {}).get("statusCode"),
        }

    # -- start-up --------------------------------------------------------------------------------------

    async def startup(self, runs: int = 3) -> dict[str, Any]:
        """``python app.py`` from exec to ``/readyz`` 200 (fresh SQLite each time: migrations + first Graph token).

        ``/healthz`` answers once the server listens (after imports and migrations); ``/readyz`` also needs the first
        Graph token, fetched by that first ``/readyz`` call. The import time alone is measured separately.
        """
        times: list[float] = []
        listening: list[float] = []
        rss: list[int] = []
        baseline: list[float] = []

        async def once(name: str, cwd: Path | None) -> tuple[float, float, int]:
            port = free_port()
            db = Path(tempfile.mkdtemp(prefix="startup-", dir=self.logs)) / "bot.db"
            child = Child(name, [sys.executable, "app.py"], self.bot_env(port, db), self.logs, cwd=cwd)
            await child.start()
            try:
                up_at = await wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, interval=0.005)
                ready_at = await wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60, interval=0.005)
                await asyncio.sleep(0.3)
                return up_at - child.started_at, ready_at - child.started_at, rss_kb(child.pid)
            finally:
                await child.stop()

        for i in range(runs):
            # The baseline commit's app.py alternates with this one, so a slow machine shows in both.
            if self.baseline_tree is not None and i % 2 == 1:
                baseline.append((await once(f"baseline-startup-{i}", self.baseline_tree))[1])
            up, ready, resident = await once(f"app-startup-{i}", None)
            listening.append(up)
            times.append(ready)
            rss.append(resident)
            if self.baseline_tree is not None and i % 2 == 0:
                baseline.append((await once(f"baseline-startup-{i}", self.baseline_tree))[1])
        began = time.perf_counter()
        probe = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import app, bot.runtime", cwd=str(ROOT), env=self.env
        )
        await probe.wait()
        imports = time.perf_counter() - began
        breakdown = await import_breakdown(self.env)
        gc_probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import gc, time, app, bot.runtime\n"
            "began = time.perf_counter(); gc.collect(); print((time.perf_counter() - began) * 1000)",
            cwd=str(ROOT),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        gc_out, _ = await gc_probe.communicate()
        try:
            gc_collect_ms: float | None = round(float(gc_out.decode().strip()), 1)
        except ValueError:
            gc_collect_ms = None
        return {
            "runs_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3),
            "listening_s": [round(t, 3) for t in listening],
            "interpreter_and_imports_s": round(imports, 3),
            "import_cumulative_s": breakdown,
            "gc_collect_after_imports_ms": gc_collect_ms,
            "rss_after_start_kb": rss,
            "baseline_commit": self.baseline_commit if baseline else None,
            "baseline_runs_s": [round(t, 3) for t in baseline],
            "baseline_median_s": round(statistics.median(baseline), 3) if baseline else None,
        }

    async def memory(self, name: str, cwd: Path | None) -> dict[str, Any]:
        """RSS of a fresh bot (this checkout's, or another tree's), after ``pending`` actions, then 200 turns."""
        plan = self.plan
        bot, bot_url, _ = await self.start_bot(name, [], cwd=cwd)
        try:
            await asyncio.sleep(0.5)
            start_rss = (await self.h.get(bot_url + "/bench/stats"))["rss_kb"]
            began_pending = time.perf_counter()
            await self.h.post(bot_url + f"/bench/pending?n={plan.pending}")
            pending_s = time.perf_counter() - began_pending
            after_pending = await self.h.get(bot_url + "/bench/stats")
            await self.h.post(self.sim_url + "/_sim/control", {"reset": True, "reset_state": True, "latency": 0})
            await self.h.post(self.connector_url + "_reset")
            turns = [
                teams.message(self.connector_url, i, f"deprovision {d['serial']}")
                for i, d in enumerate(self.devices[:200])
            ]
            label = {"bot": name, "turn": "message", "latency_ms": 0.0, "repeat": 0}
            await self.cell(label, bot_url, turns, 10, invoke=False, bot=bot, bot_url=bot_url)
            after_turns = await self.h.get(bot_url + "/bench/stats")
        finally:
            await self.stop(bot)
        return {
            "rss_after_start_kb": start_rss,
            "pending_created": plan.pending,
            "pending_created_in_s": round(pending_s, 2),
            "rss_after_pending_kb": after_pending["rss_kb"],
            "rss_after_pending_and_200_turns_kb": after_turns["rss_kb"],
            "turns_after_pending": len(turns),
            "actions_by_state": after_turns["actions_by_state"],
        }

    # -- profile (optional, py-spy) --------------------------------------------------------------------

    async def profile(self, bot: Child, bot_url: str, n: int) -> dict[str, Any] | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            return None
        out: dict[str, Any] = {}
        await self.reset_round(0.0, bot_url)
        devices = self.devices[:n]
        for turn in ("message", "confirm"):
            if turn == "message":
                bodies = [
                    teams.message(self.connector_url, i, f"deprovision {d['serial']}") for i, d in enumerate(devices)
                ]
            else:
                acts = (await self.h.get(self.connector_url + "_actions"))["actions"]
                bodies = [
                    teams.confirm(self.connector_url, a["conversation_id"], a["action_id"], a["activity_id"])
                    for a in acts
                ]
            raw = self.logs / f"profile-{turn}.txt"
            recorder = await asyncio.create_subprocess_exec(
                spy, "record", "-p", str(bot.pid), "-d", "4", "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.sleep(0.3)
            await self.loadgen.run(
                {
                    "url": bot_url + "/api/messages",
                    "bodies": str(self.write_bodies(bodies)),
                    "concurrency": 10,
                    "expect": 200 if turn == "confirm" else 202,
                    "invoke": turn == "confirm",
                    "timeout": self.plan.timeout,
                }
            )
            await recorder.wait()
            if raw.exists():
                from bench.profile import summarise

                out[turn] = summarise(raw.read_text(encoding="utf-8"))
        return out


async def run(plan: Plan, out_dir: Path) -> dict[str, Any]:
    began = time.perf_counter()
    logs = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(plan, logs)
    results = bench.results
    results["meta"] = {
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
    print(f"bench: logs in {logs}", flush=True)
    try:
        await bench.start_infrastructure()
        from bench.baseline import extract_tree, find_commit

        # Same-run comparisons (A/B, start-up, memory) run the bot of BENCH_BASELINE, else of the commit before
        # issue 18's changes (bench.issue18.PREVIOUS), else of the first benchmarked commit.
        from bench.issue18 import PREVIOUS

        bench.baseline_commit = os.environ.get("BENCH_BASELINE") or PREVIOUS or find_commit()
        if bench.baseline_commit:
            bench.baseline_tree = extract_tree(bench.baseline_commit, logs / "baseline-tree")
        results["meta"]["simulator_chromeos_devices"] = len(bench.devices)
        results["meta"]["simulator_has_main"] = (ROOT / "simulator" / "__main__.py").exists()

        print(f"start-up (python app.py → /readyz 200) ×{plan.startups}, alternating with the baseline's", flush=True)
        results["startup"] = await bench.startup(plan.startups)
        print(f"  {results['startup']['runs_s']} s", flush=True)

        print("the bot (bench.launcher) — Graph calls per flow, cold then warm", flush=True)
        bot, bot_url, ready_s = await bench.start_bot("bot", [])
        first = await bench.h.get(bot_url + "/bench/stats")
        results["bot_process"] = {
            "ready_s": round(ready_s, 3),
            "rss_after_start_kb": first["rss_kb"],
            "gc_frozen_objects": first.get("gc_frozen_objects"),
            "token_refresh_interval_s": round(first["token_refresh_in_s"] + first["uptime_s"] - ready_s, 1),
        }
        await bench.reset_round(0.0, bot_url)
        spare = bench.devices[-6:]
        flows = [await bench.flow(bot_url, d, 90_000 + i) for i, d in enumerate(spare[:4])]
        results["flows"] = {"cold": flows[0], "warm": flows[1:]}
        print(f"  cold {flows[0]['round_trips']} round trips, warm {[f['round_trips'] for f in flows[1:]]}", flush=True)

        print("echo floors (kept running so repeats interleave in time)", flush=True)
        echo, echo_url = await bench.start_echo("echo", [])
        echo_pooled, echo_pooled_url = await bench.start_echo("echo+pooled", ["--pooled"])
        for repeat in range(plan.repeats):
            # Each 0 ms bot round is followed at once by the echo floor's round at the same concurrency, so the
            # ratios pair cells seconds apart (the machine is shared and its speed drifts); the 50 ms rounds follow.
            print(
                f"repeat {repeat + 1}/{plan.repeats}: the bot at 0 ms Graph, each followed by the echo floor",
                flush=True,
            )
            for concurrency in CONCURRENCY:
                await bench.bot_round(bot, bot_url, "bot", 0.0, concurrency, plan.n[(0.0, concurrency)], repeat)
                await bench.echo_round(echo, echo_url, "echo", concurrency, plan.echo_n[concurrency], repeat)
                if concurrency == 10:
                    await bench.echo_round(echo_pooled, echo_pooled_url, "echo+pooled", 10, plan.echo_n[10], repeat)
            print(f"repeat {repeat + 1}/{plan.repeats}: the bot at 50 ms Graph", flush=True)
            for latency in (x for x in LATENCIES if x):
                for concurrency in CONCURRENCY:
                    n = plan.n[(latency, concurrency)]
                    await bench.bot_round(bot, bot_url, "bot", latency, concurrency, n, repeat)
        if plan.ab_repeats:
            echoes = [("echo", echo, echo_url), ("echo+pooled", echo_pooled, echo_pooled_url)]
            results["ab"] = await bench.ab_against_baseline(bot, bot_url, echoes)
        await bench.stop(echo)
        await bench.stop(echo_pooled)
        if plan.profile:
            print("profile of the bot at c=10, 0 ms (py-spy, if installed)", flush=True)
            results["profile"] = await bench.profile(bot, bot_url, plan.profile_n)
        last = await bench.h.get(bot_url + "/bench/stats")
        confirmed = sum(c["deprovision_accepted"] for c in results["cells"] if c["bot"] in ("bot", "ab:now")) + len(
            flows
        )
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
        await bench.stop(bot)
        with contextlib.suppress(OSError):
            text = bot.log_path.read_text(encoding="utf-8", errors="replace")
            results["sdk_warnings_logged"] = text.count("App ID is not provided")

        print(f"memory: a fresh bot, {plan.pending} pending actions, then up to 200 message turns", flush=True)
        results["memory"] = await bench.memory("bot-memory", None)
        if bench.baseline_tree is not None:
            print(f"memory: the same for the bot of {bench.baseline_commit}", flush=True)
            results["memory_baseline"] = await bench.memory("baseline-memory", bench.baseline_tree)

        print("HTTPS client CPU per request: httpx vs aiohttp (against the simulator)", flush=True)
        from bench.clients import compare

        results["http_clients"] = await compare(
            bench.sim_url + "/_sim/control", str(bench.sim_info["env"]["SSL_CERT_FILE"])
        )
        print("SQL INSERT CPU: values baked into the statement vs execution parameters", flush=True)
        from bench.sqlcost import compare as compare_inserts

        results["sql_inserts"] = compare_inserts(plan.sql_rows)
        from bench.bulk import run as run_bulk

        results["bulk"] = await run_bulk(logs, quick=plan.bulk_quick)
    finally:
        await bench.close()
    results["meta"]["duration_s"] = round(time.perf_counter() - began, 1)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
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
    return results


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
