"""cProfile of the bot's own event-loop thread over bench-like turns (issue 18): what per-turn work costs.

``python -m bench.cprofile [N] [--log-level INFO --log-format json]`` — the real app (``tests.harness.BotUnderTest``)
and the capture connector on this thread, the simulator (demo seed + clones, as in the bench) in its own thread so
its work stays out of the profile; ``N`` message turns at c=10 on distinct devices, then their confirm clicks (0 ms
Graph). Writes ``bench/raw/cprofile-{message,confirm}.prof`` and prints the shares of own time by package and the
counts that matter (log lines, SDK telemetry spans, COMMITs and no-op ROLLBACKs per turn). Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import pstats
import re
import tempfile
from pathlib import Path
from typing import Any

from bench.sim_server import enlarged_seed
from bot.logs import configure_logging
from simulator.testing import running_simulator
from tests.harness import ALEX, BotUnderTest, Connector, action_id_of, settings_for

RAW = Path(__file__).resolve().parent / "raw"
C = 10


def shares(path: Path, turns: int) -> None:
    stats: dict[Any, Any] = pstats.Stats(str(path)).__dict__["stats"]
    total = sum(v[2] for v in stats.values())
    groups: collections.Counter[str] = collections.Counter()
    for (file, _line, _fn), (_cc, _nc, own, _cum, _callers) in stats.items():
        match = re.search(r"site-packages/([^/]+)/", file) or re.search(r"/(bot|cards)/", file)
        groups[match.group(1) if match else ("builtins" if file == "~" else "stdlib/other")] += own
    print(f"== {path.stem}: {total:.2f} s own time in the profile")
    for name, own in groups.most_common(14):
        print(f"  {name:28s} {100 * own / total:5.1f} %")

    def calls(pattern: str, name: str) -> float:
        return sum(v[1] for k, v in stats.items() if re.search(pattern, k[0]) and k[2] == name) / turns

    print(
        f"  per turn: log lines {calls('logging/__init__', '_log'):.1f}, SDK spans "
        f"{calls('telemetry/core/_agents_telemetry', 'start_as_current_span'):.1f}, COMMITs "
        f"{calls('dialects/sqlite/aiosqlite', 'commit'):.1f}, ROLLBACKs {calls('dialects/sqlite/aiosqlite', 'rollback'):.1f}"
    )


async def run(turns: int, level: str, fmt: str) -> None:
    configure_logging(fmt, level, [])
    RAW.mkdir(exist_ok=True)
    async with running_simulator(in_thread=True, seed=enlarged_seed(12)) as sim:
        serials = [
            d["serialNumber"]
            for d in sim.state.devices.values()
            if d["operatingSystem"] == "ChromeOS" and d["serialNumber"].isalnum()
        ]
        connector = Connector()
        await connector.start()
        settings = settings_for(
            sim, f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bot.db", LOG_LEVEL=level, INVOKE_BUDGET="4"
        )
        bot = BotUnderTest(settings, connector)
        await bot.start()
        assert bot.services is not None
        await bot.services.rbac.catalog()
        slots = asyncio.Semaphore(C)

        async def message(serial: str, conv: str) -> tuple[str, str | None, str] | None:
            async with slots:
                sent = await bot.say(ALEX, f"deprovision {serial}", conversation_id=conv)
            cards = [r for r in sent if r.cards and r.conversation_id == conv]
            return (action_id_of(cards[-1].cards[0]), cards[-1].activity_id, conv) if cards else None

        async def confirm(made: tuple[str, str | None, str]) -> None:
            data = {"actionId": made[0], "reason": "retiring_device"}
            async with slots:
                await bot.click(ALEX, "deprovision.confirm", data, reply_to=made[1], conversation_id=made[2])

        warm = await asyncio.gather(*(message(s, f"a:warm-{i}") for i, s in enumerate(serials[:10])))
        await asyncio.gather(*(confirm(t) for t in warm if t))
        use = serials[10 : 10 + turns]
        for name in ("message", "confirm"):
            profile = cProfile.Profile()
            profile.enable()
            if name == "message":
                made = await asyncio.gather(*(message(s, f"a:p-{i}") for i, s in enumerate(use)))
            else:
                await asyncio.gather(*(confirm(t) for t in made if t))
                await bot.services.workflow.drain()
            profile.disable()
            profile.dump_stats(RAW / f"cprofile-{name}.prof")
            shares(RAW / f"cprofile-{name}.prof", len(use))
        await bot.stop()
        await connector.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cprofile")
    parser.add_argument("turns", type=int, nargs="?", default=150)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-format", default="text")
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.log_level, args.log_format))


if __name__ == "__main__":
    main()
