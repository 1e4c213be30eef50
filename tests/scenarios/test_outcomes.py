"""Outcomes that cannot lie: ambiguous writes stay unknown (and locked) until Intune's own record settles them, and
every accepted write is followed until Intune reports it done or failed — over HTTP, against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot import messages as m
from bot.store import CONFIRMED, FAILED, SUBMITTED, UNKNOWN, Action
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, PATTI, BotUnderTest, action_id_of, card_of, card_text, env_for

ROOT = Path(__file__).resolve().parents[2]
#: Fast polling: first look at Intune's record after 100 ms (an unknown write with no record settles after 200 ms).
FAST = {"COMPLETION_FIRST_CHECK": "100ms", "COMPLETION_MAX_INTERVAL": "200ms"}
REASON = {"reason": "retiring_device"}


def device(sim: Simulator, name: str) -> dict[str, Any]:
    rows = [d for d in sim.state.devices.values() if d.get("deviceName") == name]
    assert len(rows) == 1
    return rows[0]


async def confirm(bot: BotUnderTest, serial: str) -> tuple[str, str, dict[str, Any]]:
    replies = await bot.say(ALEX, f"deprovision {serial}")
    action_id, message_id = action_id_of(replies[-1].cards[0]), str(replies[-1].activity_id)
    card = card_of(await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id, **REASON}, reply_to=message_id))
    return action_id, message_id, card


async def until_state(bots: list[BotUnderTest], action_id: str, states: tuple[str, ...], timeout: float = 10) -> Action:
    """Run the sweep (as the background task would) until the action reaches one of ``states``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await asyncio.gather(*(b.running.workflow.sweep() for b in bots))
        action = await bots[0].action(action_id)
        if action.state in states:
            return action
        assert asyncio.get_running_loop().time() < deadline, (action.state, action.intune_state)
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["500", "502", "504", "drop"])
async def test_lost_answer_after_intune_applied_is_unknown_then_confirmed(
    make_bot: BotFactory, sim: Simulator, fault: str
) -> None:
    bot = await make_bot(**FAST)
    target = device(sim, "NHS-CART3-02")
    sim.control.add_fault(
        "POST",
        rf"/managedDevices/{target['id']}/deprovision$",
        None if fault == "drop" else int(fault),
        after_apply=True,
        drop=fault == "drop",
    )
    action_id, message_id, card = await confirm(bot, target["serialNumber"])
    shown = card_text(card)
    assert m.CARD_TITLE_UNKNOWN in shown and "failed" not in shown.lower(), shown
    action = await bot.action(action_id)
    assert action is not None and action.state == UNKNOWN

    # The device stays locked: nobody's request reaches the POST while Intune's record is unread.
    replies = await bot.say(PATTI, f"deprovision {target['serialNumber']}")
    assert not replies[-1].cards and "may already have been carried out" in replies[-1].text
    assert len(sim.deprovision_posts(target["id"])) == 1

    settled = await until_state([bot], action_id, (CONFIRMED, FAILED))
    assert settled.state == CONFIRMED and settled.intune_state == "done"
    assert len(sim.deprovision_posts(target["id"])) == 1
    update = bot.connector.updates(message_id)[-1]
    assert m.CARD_TITLE_UNKNOWN not in card_text(update.cards[0])
    events = [row["event"] async for row in bot.running.audit.rows()]
    assert events.count("unknown") == 1 and events[-1] == "completed", events


async def test_lost_answer_when_intune_did_not_apply_it_settles_failed_and_unlocks(
    make_bot: BotFactory, sim: Simulator
) -> None:
    bot = await make_bot(**FAST)
    target = device(sim, "NHS-CART3-03")
    sim.control.add_fault("POST", rf"/managedDevices/{target['id']}/deprovision$", 502)  # before applying
    action_id, _, card = await confirm(bot, target["serialNumber"])
    assert m.CARD_TITLE_UNKNOWN in card_text(card)
    assert not sim.deprovision_posts(target["id"])  # the faulted POST never reached Intune
    settled = await until_state([bot], action_id, (CONFIRMED, FAILED))
    assert settled.state == FAILED and settled.error_code == "not_applied"
    assert settled.inflight_device is None
    # Unlocked: a new request goes through to exactly one more POST.
    _, _, again = await confirm(bot, target["serialNumber"])
    assert m.CARD_TITLE_UNKNOWN not in card_text(again)
    assert len(sim.deprovision_posts(target["id"])) == 1


async def test_throttled_post_is_retried_and_not_unknown(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(**FAST)
    target = device(sim, "NHS-CART3-04")
    for status in (429, 503):
        sim.control.add_fault("POST", rf"/managedDevices/{target['id']}/deprovision$", status, retry_after=0.05)
    action_id, _, _ = await confirm(bot, target["serialNumber"])
    action = await bot.action(action_id)
    assert action is not None and action.state in (SUBMITTED, CONFIRMED), action.state


@pytest.mark.parametrize("outcome", ["done", "failed", "never"])
async def test_completion_is_followed_until_intune_reports(make_bot: BotFactory, sim: Simulator, outcome: str) -> None:
    bot = await make_bot(**FAST, COMPLETION_TIMEOUT="1500ms")
    target = device(sim, "NHS-CART3-05")
    sim.control.set_device_outcome(target["id"], outcome, delay=0.1, error="Chrome Enterprise connector refused")
    action_id, message_id, _ = await confirm(bot, target["serialNumber"])
    assert (await bot.action(action_id)).state == SUBMITTED
    if outcome == "never":
        deadline = asyncio.get_running_loop().time() + 10
        while (await bot.action(action_id)).intune_state != "not_confirmed":
            assert asyncio.get_running_loop().time() < deadline
            await bot.running.workflow.sweep()
            await asyncio.sleep(0.05)
        told = bot.connector.sent()[-1].text
        assert told == m.proactive_not_confirmed(target["deviceName"])
        return
    settled = await until_state([bot], action_id, (CONFIRMED, FAILED))
    if outcome == "done":
        assert settled.state == CONFIRMED and settled.settled_at is not None
    else:
        assert settled.state == FAILED and settled.error_code == "intune_failed"
        assert "Chrome Enterprise connector refused" in (settled.error_message or "")
        assert bot.connector.sent()[-1].text.startswith("Intune reports that deprovisioning")
    assert bot.connector.updates(message_id)
    assert len(sim.deprovision_posts(target["id"])) == 1


async def test_completion_survives_a_restart(make_bot: BotFactory, sim: Simulator, sqlite_url: str) -> None:
    first = await make_bot(**FAST)
    target = device(sim, "NHS-CART3-06")
    action_id, _, _ = await confirm(first, target["serialNumber"])
    await first.stop()
    second = await make_bot(**FAST)
    settled = await until_state([second], action_id, (CONFIRMED, FAILED))
    assert settled.state == CONFIRMED


async def test_two_instances_settle_each_action_once(make_bot: BotFactory, sim: Simulator, pg_url: str) -> None:
    bots = [await make_bot(pg_url, **FAST), await make_bot(pg_url, **FAST)]
    ids = []
    for name in ("NHS-CART4-01", "NHS-CART4-02", "NHS-CART4-03"):
        action_id, _, _ = await confirm(bots[0], device(sim, name)["serialNumber"])
        ids.append(action_id)
    for action_id in ids:
        await until_state(bots, action_id, (CONFIRMED,))
    events = [row async for row in bots[0].running.audit.rows()]
    completed = [e["action_id"] for e in events if e["event"] == "completed"]
    assert sorted(completed) == sorted(ids)


async def test_operator_resolves_an_unknown_action(make_bot: BotFactory, sim: Simulator, sqlite_url: str) -> None:
    bot = await make_bot(COMPLETION_FIRST_CHECK="1h")
    target = device(sim, "NHS-CART4-04")
    sim.control.add_fault("POST", rf"/managedDevices/{target['id']}/deprovision$", 500, after_apply=True)
    action_id, _, _ = await confirm(bot, target["serialNumber"])
    await bot.stop()
    env = {**os.environ, **env_for(sim, sqlite_url)}
    done = subprocess.run(
        [
            sys.executable,
            "app.py",
            "actions",
            "resolve",
            action_id,
            "--done",
            "--note",
            "admin center: Deprovisioned",
            "--by",
            "Ops Oscar",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    again = subprocess.run(
        [sys.executable, "app.py", "actions", "resolve", action_id, "--failed", "--note", "x"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "confirmed" in again.stderr
    export = subprocess.run(
        [sys.executable, "app.py", "audit", "export", "--format", "jsonl"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [json.loads(line) for line in export.stdout.splitlines()]
    resolved = [r for r in rows if r["event"] == "resolved"]
    assert len(resolved) == 1 and resolved[0]["actor_name"] == "Ops Oscar"
    assert "admin center" in resolved[0]["details"]


async def test_status_shows_intunes_own_record_beside_the_bots(make_bot: BotFactory, sim: Simulator) -> None:
    bot = await make_bot(**FAST)
    # The demo seed: a deprovision Patti did in the admin center (done) and one this app sent that failed.
    done = card_text((await bot.say(ALEX, "status Chrome- PFSXKG0X"))[-1].cards[0])
    assert "Intune's record" in done and "deprovision done — initiated by" in done
    failed = card_text((await bot.say(ALEX, "status Chrome- 0LEPYMD"))[-1].cards[0])
    assert "deprovision failed" in failed
    # A device the bot just sent: Intune's record and the bot's own line side by side.
    target = device(sim, "NHS-CART7-05")
    await confirm(bot, target["serialNumber"])
    shown = card_text((await bot.say(ALEX, f"status {target['serialNumber']}"))[-1].cards[0])
    assert "deprovision pending" in shown or "deprovision done" in shown
    assert "sent to Intune, waiting for Google — Alex Wilber" in shown
