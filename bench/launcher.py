"""Run the real bot (``bot.runtime.build_app``, configured exactly as ``python app.py`` does) plus bench-only probes.

``python -m bench.launcher`` — environment as for ``app.py`` (see :func:`simulator.demo.demo_environment`). The bot is
measured as it ships: since commit 7d33b84 that includes the pooled connector clients (``bot.connector_pool``,
installed by ``bot.teams.build_agent``), the in-process SQLite write queue (``bot.store.Store.write``) and
``gc.freeze()`` after start-up, so the launcher has no switches of its own any more.

Added to the same aiohttp application, in the same process and event loop as the bot:

* an event-loop lag sampler: a task that asks for a 10 ms sleep and records how late it wakes up, and a
  ``gc.callbacks`` hook timing every garbage collection (to tell GC pauses from busy turns);
* ``GET /bench/stats[?reset=1]`` — lag percentiles since the last reset, RSS, Graph calls (``GraphClient.stats``),
  token requests (``MsalTokenSource.stats``) and when the cached token will be renewed, actions by state;
* ``POST /bench/reset`` — empty the bot's tables (actions, selections, audit events): the equivalent of a fresh
  database between benchmark rounds, without a restart (the schema and the warm caches stay);
* counters of the store's write transactions and of aiosqlite worker-thread calls (:class:`StoreCounters`);
* ``POST /bench/pending?n=10000`` — insert ``n`` actions in state *requested* through :meth:`bot.store.Store.create`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from bot.logs import configure_logging
from bot.runtime import SERVICES, build_app
from bot.selections import selections
from bot.settings import load_settings
from bot.store import REQUESTED, Action, actions, audit_events

LAG_INTERVAL = 0.010
STARTED = time.monotonic()


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size from ``/proc/<pid>/status`` (Linux), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class LagSampler:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self.samples.append(max(0.0, loop.time() - before - LAG_INTERVAL))
            if len(self.samples) > 200_000:
                del self.samples[:100_000]

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {
            "n": len(s),
            "p50_ms": percentile(s, 50) * 1000,
            "p99_ms": percentile(s, 99) * 1000,
            "max_ms": (max(s) if s else 0.0) * 1000,
        }


LAG = web.AppKey("bench_lag", LagSampler)


class GcPauses:
    """Stop-the-world time of each garbage collection (``gc.callbacks``), per generation."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: list[tuple[int, float]] = []

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses.append((int(info.get("generation", -1)), (time.perf_counter() - self.started) * 1000))

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for generation in (0, 1, 2):
            values = [ms for g, ms in self.pauses if g == generation]
            out[f"gen{generation}"] = {
                "n": len(values),
                "max_ms": round(max(values), 2) if values else 0.0,
                "total_ms": round(sum(values), 1),
            }
        return out


GC = GcPauses()


class StoreCounters:
    """Write transactions (:meth:`bot.store.Store.write`) and aiosqlite worker-thread calls, process-wide.

    Every aiosqlite call (cursor, execute, fetch, close, commit, rollback) is one hand-off to the connection's worker
    thread and back (a queue put, a thread wake-up and ``call_soon_threadsafe``); counting them shows what a turn's
    database work costs in round trips, not just in statements. The wrappers add about a microsecond per call.
    """

    def __init__(self) -> None:
        self.writes = 0
        self.aiosqlite_calls = 0
        #: ``rollback()`` calls on a connection with no open transaction (SQLAlchemy's pool resetting a connection it
        #: gets back after a commit): hand-offs that do nothing
        self.idle_rollbacks = 0

    def install(self) -> None:
        import aiosqlite.core

        from bot.store import Store

        counters = self
        write = Store.write
        execute = aiosqlite.core.Connection._execute

        def counted_write(store: Store) -> Any:
            counters.writes += 1
            return write(store)

        async def counted_execute(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            counters.aiosqlite_calls += 1
            if getattr(fn, "__name__", "") == "rollback" and not conn.in_transaction:
                counters.idle_rollbacks += 1
            return await execute(conn, fn, *args, **kwargs)

        Store.write = counted_write  # type: ignore[method-assign,assignment]
        aiosqlite.core.Connection._execute = counted_execute  # type: ignore[method-assign,assignment]


COUNTERS = StoreCounters()


async def stats(request: web.Request) -> web.Response:
    services = request.app[SERVICES].get()
    sampler = request.app[LAG]
    counted = dict(vars(COUNTERS))  # before this handler's own query
    async with services.store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(actions.c.state, sa.func.count()).group_by(actions.c.state))).all()
    tokens: Any = services.tokens
    body = {
        "pid": os.getpid(),
        "uptime_s": time.monotonic() - STARTED,
        "rss_kb": rss_kb(),
        "lag": sampler.summary(),
        "gc": GC.summary(),
        "gc_frozen_objects": gc.get_freeze_count(),
        "graph_calls": services.graph.stats.calls,
        "graph_by_path": dict(services.graph.stats.by_path),
        "graph_by_path_keys": len(services.graph.stats.by_path),
        "token_requests": services.tokens.stats.requests,
        "token_refresh_in_s": max(0.0, float(getattr(tokens, "_refresh_at", 0.0)) - time.monotonic()),
        "actions_by_state": {str(state): int(count) for state, count in rows},
        "background_tasks": len(services.workflow.deps.tasks),
        "store_writes": counted["writes"],
        "aiosqlite_calls": counted["aiosqlite_calls"],
        "aiosqlite_idle_rollbacks": counted["idle_rollbacks"],
        # turns answered "busy" beyond MAX_CONCURRENT_TURNS (bot.overload; absent before issue 18)
        "turns_refused": getattr(getattr(services, "turns", None), "refused", None),
    }
    if request.query.get("reset"):
        sampler.samples.clear()
        GC.pauses.clear()
    return web.json_response(body)


async def reset(request: web.Request) -> web.Response:
    services = request.app[SERVICES].get()
    await services.workflow.drain()
    async with services.store.write() as conn:
        for table in (actions, selections, audit_events):
            await conn.execute(table.delete())
    request.app[LAG].samples.clear()
    GC.pauses.clear()
    return web.json_response({"ok": True})


async def pending(request: web.Request) -> web.Response:
    """Insert ``n`` requested actions through the store API, one at a time (one per fake device, Alex as requester)."""
    services = request.app[SERVICES].get()
    n = int(request.query.get("n", "10000"))
    now = time.time()
    device = {"id": "", "name": "", "serial": "", "operating_system": "ChromeOS", "scope_tag_ids": ["1"]}
    for i in range(n):
        device_id = f"bench-device-{i:06d}"
        await services.store.create(
            Action(
                id=secrets.token_urlsafe(18),
                tenant_id=services.settings.tenant_id,
                state=REQUESTED,
                requester_id="00000000-0000-0000-0000-0000000000020",
                requester_name="Alex Wilber",
                requester_mri="29:00000000-0000-0000-0000-0000000000020",
                device_id=device_id,
                device_name=f"BENCH-{i:06d}",
                device_serial=f"BENCH{i:06d}",
                device_json=json.dumps({**device, "id": device_id, "name": f"BENCH-{i:06d}"}),
                conversation_id=f"a:1personal-bench-{i}",
                conversation_ref=json.dumps({"conversation": {"id": f"a:1personal-bench-{i}"}}),
                created_at=now,
                updated_at=now,
                expires_at=now + services.settings.action_ttl,
            )
        )
    created = n
    return web.json_response({"created": created})


def build() -> web.Application:
    COUNTERS.install()
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, settings.secrets())
    app = build_app(settings)
    app[LAG] = LagSampler()

    async def probes(app: web.Application) -> AsyncIterator[None]:
        # Registered after build_app's own lifecycle, so the services exist by now (and gc.freeze() has run).
        sampler = app[LAG]
        sampler.task = asyncio.create_task(sampler.run())
        gc.callbacks.append(GC.callback)
        yield
        sampler.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler.task

    app.cleanup_ctx.append(probes)
    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/reset", reset)
    app.router.add_post("/bench/pending", pending)
    return app


def main() -> None:
    argparse.ArgumentParser(prog="python -m bench.launcher", description=__doc__.split("\n", 1)[0]).parse_args()
    app = build()
    settings = load_settings()
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=10,
        print=lambda _msg: None,
        access_log=None,
        handle_signals=True,
    )


if __name__ == "__main__":
    main()
