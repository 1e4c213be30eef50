"""The processes of one bench run and their control: the simulator, the capture connector, the load generator, the
bots and echo floors started along the way — and :meth:`Rig.cell`, one measured load-generator run against one."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bench.cells import Counters, figures, line
from bench.procs import Child, Http, Loadgen, cpu_ticks, free_port, rss_kb, wait_http
from simulator.demo import demo_environment

if TYPE_CHECKING:
    from bench.run import Plan


class _SimShim:
    """What :func:`simulator.demo.demo_environment` needs from a simulator: its ``env()``."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def env(self) -> dict[str, str]:
        return dict(self._env)


class Rig:
    """One run's processes, the HTTP client that drives them, and ``results`` (the measured cells join it)."""

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
        """Send ``bodies`` to ``url`` at ``concurrency``; the cell's figures join ``results["cells"]``."""
        path = self.write_bodies(bodies)
        pids = {"bot": bot.pid, "loadgen": self.loadgen.process.pid if self.loadgen.process else 0}
        for child in self.children:
            if child.name in ("simulator", "connector"):
                pids[child.name] = child.pid
        bot_before: dict[str, Any] = await self.h.get(bot_url + "/bench/stats?reset=1") if bot_url else {}
        sim_before = await self.sim_stats()
        before = Counters(bot_before, sim_before, {name: cpu_ticks(pid) for name, pid in pids.items()})
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
        cell = figures(label, concurrency, result, before, Counters(stats, sim_after, cpu_after))
        self.results["cells"].append(cell)
        print(line(cell), flush=True)
        return cell
