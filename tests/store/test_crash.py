"""The bot process is SIGKILLed before, during and after the Graph call; a restarted process recovers.

After the restart no action is lost, none is sent twice, and the requester learns the outcome (a proactive
message and the card updated in place). One database per backend, shared by the three crashing processes and
the restarted one.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import messages as m
from bot.audit import AuditLog, load_audit_key
from bot.store import FINAL_STATES, SUBMITTED, SUBMITTING, UNKNOWN, Action, Store
from simulator import Simulator
from tests.harness import ALEX, Connector, card_text, env_for
from tests.store.processes import BotProcess, bot_processes, confirm_click, new_process

#: Small timeouts so the submit lease (2 * GRAPH_TIMEOUT + GRAPH_MAX_RETRY_WAIT + SUBMIT_LEASE_GRACE = 5 s) passes quickly.
#: The crashing processes must use them too: the lease is written by the process that crashes.
FAST = {
    "GRAPH_TIMEOUT": "1",
    "GRAPH_MAX_RETRY_WAIT": "1",
    "SUBMIT_LEASE_GRACE": "2",
    "SWEEP_INTERVAL": "1",
    "LOG_FORMAT": "json",
}
LEASE = 2 * 1 + 1 + 2
#: How long the simulator sits on the accepted POST before answering (the process is killed meanwhile).
IN_FLIGHT_DELAY = 3.0

#: ChromeOS devices in simulator/seeds/demo.yaml that Alex (Help Desk Operator, all devices) may deprovision.
SERIALS = {
    "sqlite": {"before": "5CD0832TGL", "after": "5CD6259KKH", "during": "5CD1954KJN"},
    "postgres": {"before": "5CD7850KXP", "after": "5CD2597QCE", "during": "5CD3206NXN"},
}


@dataclass
class Crash:
    point: str
    serial: str
    device_id: str
    process: BotProcess
    action_id: str = ""
    card_activity_id: str = ""


def _device_id(sim: Simulator, serial: str) -> str:
    matches = [d["id"] for d in sim.state.devices.values() if d.get("serialNumber") == serial]
    assert len(matches) == 1, serial
    return str(matches[0])


def _graph_has_deprovision(sim: Simulator, device_id: str) -> bool:
    results = sim.state.devices[device_id].get("deviceActionResults") or []
    return any(str(r.get("actionName")).lower() == "deprovision" for r in results)


async def _click_expecting_death(process: BotProcess, body: dict[str, Any]) -> None:
    """The process dies while handling the invoke, so no HTTP answer comes back."""
    try:
        status, answer = await process.post(body)
    except (aiohttp.ClientError, TimeoutError):
        return
    raise AssertionError(f"{process.name} answered {status} {answer} instead of dying\n{process.log_tail()}")


async def _click_until_killed(process: BotProcess, body: dict[str, Any]) -> None:
    """The click may be answered with the "working…" card (the invoke budget ends while Graph still sits on the
    POST, e.g. on a loaded machine) before the process is killed; it must never be answered with an outcome."""
    try:
        status, answer = await process.post(body)
    except (aiohttp.ClientError, TimeoutError):
        return
    shown = json.dumps(answer, ensure_ascii=False)
    if status == 200 and m.CARD_TITLE_WORKING in shown:
        return
    raise AssertionError(f"{process.name} answered {status} {answer} while Graph held the POST\n{process.log_tail()}")


async def _crash_during(sim: Simulator, crash: Crash, body: dict[str, Any]) -> None:
    """Kill the process once Graph has accepted the POST but before the (delayed) answer reaches the bot."""
    click = asyncio.create_task(_click_until_killed(crash.process, body))
    deadline = asyncio.get_running_loop().time() + 20
    try:
        while not _graph_has_deprovision(sim, crash.device_id):
            if click.done() or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.005)
        assert _graph_has_deprovision(sim, crash.device_id), crash.process.log_tail()
        crash.process.kill()
    finally:
        await click


async def _wait_final(store: Store, action_ids: list[str], timeout: float) -> list[Action]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        actions = [await store.get(action_id) for action_id in action_ids]
        if all(a is not None and a.state in FINAL_STATES for a in actions):
            return [a for a in actions if a is not None]
        if asyncio.get_running_loop().time() > deadline:
            return [a for a in actions if a is not None]
        await asyncio.sleep(0.2)


async def test_killed_before_during_and_after_the_graph_call(
    sim: Simulator, connector: Connector, sqlite_url: str, pg_url_or_none: str | None, tmp_path: Path
) -> None:
    """Both backends at once (the 5 s lease dominates the run time, so they share it)."""
    urls = {"sqlite": sqlite_url}
    if pg_url_or_none is not None:
        urls["postgres"] = pg_url_or_none
    async with bot_processes() as started, asyncio.TaskGroup() as group:
        for backend, url in urls.items():
            group.create_task(_crash_and_recover(sim, connector, backend, url, tmp_path, started))
    if pg_url_or_none is None:
        pytest.skip("PostgreSQL unavailable: only the SQLite half ran (and passed)")


async def _crash_and_recover(
    sim: Simulator, connector: Connector, backend: str, database_url: str, tmp_path: Path, started: list[BotProcess]
) -> None:
    env = env_for(sim, database_url, **FAST)
    crashes = await _crash_three(sim, connector, backend, env, tmp_path, started)
    during = crashes["during"]
    store = await Store.open(database_url)
    try:
        # Write-ahead: every crashed action was committed as *submitting* with a lease before Graph was called.
        for crash in crashes.values():
            action = await store.get(crash.action_id)
            assert action is not None and action.state == SUBMITTING, (crash.point, action)
            assert action.lease_until is not None and abs(action.lease_until - action.updated_at - LEASE) < 0.01
        assert not _graph_has_deprovision(sim, crashes["before"].device_id)
        assert len(sim.deprovision_posts(crashes["after"].device_id)) == 1
        assert _graph_has_deprovision(sim, during.device_id)
        before_restart = len(connector.calls)

        restarted = new_process(started, f"{backend}-restarted", env, tmp_path, connector)
        await restarted.start()
        ids = [c.action_id for c in crashes.values()]
        await _wait_final(store, ids, timeout=LEASE + 15)
        await asyncio.sleep(2.2)  # two more sweeps: nothing is sent again
        final = {a.id: a for a in [await store.get(action_id) for action_id in ids] if a is not None}
        logs = "\n".join(p.log_tail() for p in started)

        expected = {"before": UNKNOWN, "after": SUBMITTED, "during": SUBMITTED}
        states = {p: final[c.action_id].state for p, c in crashes.items()}
        assert states == expected, (states, logs)
        assert final[crashes["before"].action_id].error_code == "interrupted"
        assert final[crashes["before"].action_id].notified

        # Never a second POST; the "before" device was never deprovisioned at all.
        posts = {p: len(sim.deprovision_posts(c.device_id)) for p, c in crashes.items()}
        assert posts == {"before": 0, "after": 1, "during": 1}, posts

        await _assert_told_and_audited(store, database_url, connector.calls[before_restart:], crashes, final)
    finally:
        await store.close()


async def _crash_three(
    sim: Simulator, connector: Connector, backend: str, env: dict[str, str], tmp_path: Path, started: list[BotProcess]
) -> dict[str, Crash]:
    """One bot process per crash point, each with its request; kill each before, during and after its Graph call."""
    crashes = {
        point: Crash(
            point,
            serial,
            _device_id(sim, serial),
            new_process(
                started,
                f"{backend}-crash-{point}",
                {**env, "BOT_TEST_CRASH_POINT": f"{point}_graph"} if point != "during" else env,
                tmp_path,
                connector,
            ),
        )
        for point, serial in SERIALS[backend].items()
    }
    await asyncio.gather(*(c.process.start() for c in crashes.values()))
    for crash in crashes.values():
        crash.action_id, crash.card_activity_id = await crash.process.request(ALEX, crash.serial)
    during = crashes["during"]
    sim.control.add_fault(
        "POST", rf"/managedDevices/{during.device_id}/deprovision$", 504, delay=IN_FLIGHT_DELAY, after_apply=True
    )

    bodies = {p: confirm_click(ALEX, connector, c.action_id, c.card_activity_id) for p, c in crashes.items()}
    await asyncio.gather(
        _click_expecting_death(crashes["before"].process, bodies["before"]),
        _click_expecting_death(crashes["after"].process, bodies["after"]),
        _crash_during(sim, during, bodies["during"]),
    )
    codes = {p: await c.process.wait_exit() for p, c in crashes.items()}
    assert codes == {"before": 137, "after": 137, "during": -9}, codes
    return crashes


async def _assert_told_and_audited(
    store: Store, database_url: str, after_restart: list[Any], crashes: dict[str, Crash], final: dict[str, Action]
) -> None:
    # The requester is told, once each, in the conversation the request came from. (The connector is
    # shared with the other backend's run: only messages about this run's devices count.)
    names = {crash.point: final[crash.action_id].device_name for crash in crashes.values()}
    told = [
        c
        for c in after_restart
        if c.method == "send" and c.text and any(f"**{name}**" in c.text for name in names.values())
    ]
    texts = [c.text for c in told]
    for point, name in names.items():
        wanted = m.proactive_unknown(name) if point == "before" else m.proactive_done(name)
        assert texts.count(wanted) == 1, (point, texts)
    assert len(told) == 3, texts
    conversation = final[crashes["before"].action_id].conversation_id
    assert {c.conversation_id for c in told} == {conversation}

    # ... and the confirmation card is updated in place to the outcome.
    for crash in crashes.values():
        updates = [c for c in after_restart if c.method == "update" and c.activity_id == crash.card_activity_id]
        assert updates and updates[-1].cards, (crash.point, [c.method for c in after_restart])
        shown = card_text(updates[-1].cards[0])
        title = m.CARD_TITLE_UNKNOWN if crash.point == "before" else m.CARD_TITLE_SENT
        assert title in shown, (crash.point, shown)

    # The audit trail tells the same story and still verifies.
    audit = AuditLog(store, load_audit_key(None, database_url))
    assert await audit.verify() == (True, [])
    for crash in crashes.values():
        rows = await audit.for_action(crash.action_id)
        events = [r["event"] for r in rows]
        outcome = "unknown" if crash.point == "before" else "succeeded"
        assert events == ["requested", "confirmed", "submitted", outcome], (crash.point, events)
        assert json.loads(rows[-1]["details"]).get("reconciled") is True
