"""The measured rounds of a bench run, over a :class:`~bench.rig.Rig`: the bot's message + confirm round, the echo
floor's, the same-window A/B against the baseline commit's bot, and single flows (Graph calls, cold and warm)."""

from __future__ import annotations

import asyncio
from typing import Any

from bench import teams
from bench.procs import Child
from bench.rig import Rig


class Rounds:
    """Rounds of load against the bots and echo floors of a :class:`Rig`; each cell joins ``rig.results``."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig

    # -- the bot's message + confirm round ---------------------------------------------------------------

    async def bot_round(
        self, bot: Child, bot_url: str, name: str, latency: float, concurrency: int, n: int, repeat: int
    ) -> None:
        rig = self.rig
        await rig.reset_round(latency, bot_url)
        devices = rig.devices[:n]
        label = {"bot": name, "latency_ms": latency * 1000, "repeat": repeat}
        messages = [teams.message(rig.connector_url, i, f"deprovision {d['serial']}") for i, d in enumerate(devices)]
        await rig.cell(
            {**label, "turn": "message"}, bot_url, messages, concurrency, invoke=False, bot=bot, bot_url=bot_url
        )
        found = await rig.h.get(rig.connector_url + "_actions")
        actions = found["actions"]
        if len(actions) < n:
            print(f"    only {len(actions)}/{n} confirmation cards; other replies: {found['other_texts']}", flush=True)
        if not actions:
            return
        confirms = [
            teams.confirm(rig.connector_url, a["conversation_id"], a["action_id"], a["activity_id"]) for a in actions
        ]
        await rig.cell(
            {**label, "turn": "confirm", "cards_created": len(actions)},
            bot_url,
            confirms,
            concurrency,
            invoke=True,
            bot=bot,
            bot_url=bot_url,
        )

    async def echo_round(self, echo: Child, url: str, name: str, concurrency: int, n: int, repeat: int) -> None:
        rig = self.rig
        await rig.h.post(rig.connector_url + "_reset")
        label = {"bot": name, "latency_ms": None, "repeat": repeat}
        messages = [
            teams.message(rig.connector_url, i, f"deprovision {rig.devices[i % len(rig.devices)]['serial']}")
            for i in range(n)
        ]
        await rig.cell({**label, "turn": "message"}, url, messages, concurrency, invoke=False, bot=echo, bot_url=None)
        invokes = [
            teams.confirm(rig.connector_url, teams.conversation_for(i), f"bench-action-{i:012d}", f"msg-{i + 1}")
            for i in range(n)
        ]
        await rig.cell({**label, "turn": "confirm"}, url, invokes, concurrency, invoke=True, bot=echo, bot_url=None)

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
        rig, plan = self.rig, self.rig.plan
        commit, tree = rig.baseline_commit, rig.baseline_tree
        if commit is None or tree is None:
            return None
        print(f"A/B: the bot of {commit} against this bot, alternating (0 ms Graph, c=10)", flush=True)
        old, old_url, _ = await rig.start_bot("baseline-bot", [], cwd=tree)
        try:
            n = plan.ab_n
            for name, child, url in (("ab:warm", old, old_url), ("ab:warm", bot, bot_url)):
                await self.bot_round(child, url, name, 0.0, 10, min(n, 20), 0)
            rig.results["cells"] = [c for c in rig.results["cells"] if c["bot"] != "ab:warm"]
            pair = [("ab:baseline", old, old_url), ("ab:now", bot, bot_url)]
            for repeat in range(plan.ab_repeats):
                for name, child, url in pair if repeat % 2 == 0 else pair[::-1]:
                    await self.bot_round(child, url, name, 0.0, 10, n, repeat)
                for name, echo, echo_url in echoes or []:
                    await self.echo_round(echo, echo_url, f"ab:{name}", 10, plan.echo_n[10], repeat)
            overload = [("ovl:baseline", old, old_url), ("ovl:now", bot, bot_url)]
            for repeat in range(plan.overload_repeats):
                for name, child, url in overload if repeat % 2 == 0 else overload[::-1]:
                    for concurrency, count in plan.overload_n.items():
                        await self.bot_round(child, url, name, 0.05, concurrency, count, repeat)
        finally:
            await rig.stop(old)
        return {"commit": commit, "repeats": plan.ab_repeats, "requests_per_cell": n}

    # -- single flows: Graph calls, cold and warm ----------------------------------------------------------

    async def flow(self, bot_url: str, device: dict[str, str], index: int) -> dict[str, Any]:
        """One ``deprovision`` and its confirm: the Graph calls, token requests and store work of each turn."""
        rig = self.rig
        await rig.h.post(rig.connector_url + "_reset")
        before = await rig.sim_stats()
        bot_before = await rig.h.get(bot_url + "/bench/stats")
        await rig.h.post(
            bot_url + "/api/messages", teams.message(rig.connector_url, index, f"deprovision {device['serial']}")
        )
        middle = await rig.sim_stats()
        bot_middle = await rig.h.get(bot_url + "/bench/stats")
        actions = (await rig.h.get(rig.connector_url + "_actions"))["actions"]
        if not actions:
            raise RuntimeError(f"no confirmation card for {device['serial']}")
        a = actions[0]
        answer = await rig.h.post(
            bot_url + "/api/messages",
            teams.confirm(rig.connector_url, a["conversation_id"], a["action_id"], a["activity_id"]),
        )
        bot_after = await self._settled_stats(bot_url)
        after = await rig.sim_stats()
        return {
            "device": device["serial"],
            "message": _graph_delta(before, middle),
            "confirm": _graph_delta(middle, after),
            "round_trips": after["round_trips"] - before["round_trips"],
            "bot_graph_calls": bot_after["graph_calls"] - bot_before["graph_calls"],
            "token_requests": bot_after["token_requests"] - bot_before["token_requests"],
            "message_bot_graph_calls": bot_middle["graph_calls"] - bot_before["graph_calls"],
            **{key: _turn_delta(key, bot_before, bot_middle, bot_after) for key in _PER_TURN},
            "accepted": after["deprovision_accepted"] - before["deprovision_accepted"] == 1,
            "confirm_status": (answer or {}).get("statusCode"),
        }

    async def _settled_stats(self, bot_url: str) -> dict[str, Any]:
        """The bot's bench counters once its background tasks are done (or after 5 s)."""
        stats: dict[str, Any] = await self.rig.h.get(bot_url + "/bench/stats")
        for _ in range(250):  # the submission runs as a task that can outlive the invoke answer: let it finish
            if not stats["background_tasks"]:
                break
            await asyncio.sleep(0.02)
            stats = await self.rig.h.get(bot_url + "/bench/stats")
        return stats


#: The bot's counters a flow reports per turn (message, confirm).
_PER_TURN = ("store_writes", "aiosqlite_calls", "aiosqlite_idle_rollbacks")


def _graph_delta(x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    """The simulator's Graph calls between two readings of its stats."""
    paths = {k: v - x["by_path"].get(k, 0) for k, v in y["by_path"].items() if v - x["by_path"].get(k, 0)}
    return {
        "round_trips": y["round_trips"] - x["round_trips"],
        "batch_subrequests": (y["calls"] - y["round_trips"]) - (x["calls"] - x["round_trips"]),
        "requests_by_path": paths,
    }


def _turn_delta(key: str, before: dict[str, Any], middle: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {"message": middle[key] - before[key], "confirm": after[key] - middle[key]}
