"""Bulk runs survive a SIGKILL and a second instance: every ready device is POSTed once, never twice.

The real bot runs as operating-system processes (``python app.py``; the crash launcher injects a named crash point);
Graph is the in-process simulator, so the test can count the POSTs it accepted per device.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any

import aiohttp

from bot import messages as m
from bot.audit import AuditLog, load_audit_key
from bot.batches import RUNNING, Batch, BatchStore
from bot.store import EXPIRED, QUEUED, SUBMITTED, SUBMITTING, UNKNOWN, Action, Store
from cards import verbs
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, CARD, Connector, activity, card_text, env_for
from tests.scenarios.test_bulk import CART, add_cart, bulk_card
from tests.store.processes import BotProcess, bot_processes, new_process
from tests.store.test_crash import FAST, LEASE

REASON = "retiring_device"


def confirm(connector: Connector, batch_id: str) -> dict[str, Any]:
    data = {"batchId": batch_id, verbs.REASON_INPUT: REASON}
    return activity(
        "invoke",
        ALEX,
        service_url=connector.url,
        name="adaptiveCard/action",
        value={"action": {"type": "Action.Execute", "verb": verbs.BULK_CONFIRM, "data": data}, "trigger": "manual"},
    )


async def request(process: BotProcess, names: list[str]) -> str:
    replies = await process.say(ALEX, "deprovision\n" + "\n".join(names))
    cards = [c for r in replies for c in r.cards]
    assert cards, ([r.text for r in replies], process.log_tail())
    ids = [a["data"]["batchId"] for a in cards[-1].get("actions", []) if "batchId" in (a.get("data") or {})]
    assert ids, cards[-1]
    return str(ids[0])


async def rows_when(store: Store, batch_id: str, done: Any, timeout: float, logs: Any) -> list[Action]:
    batches = BatchStore(store)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await batches.rows(batch_id)
        if done(rows):
            return rows
        assert asyncio.get_running_loop().time() < deadline, (collections.Counter(r.state for r in rows), logs())
        await asyncio.sleep(0.2)


async def batch_when(batches: BatchStore, batch_id: str, state: str, timeout: float) -> Batch:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        batch = await batches.get(batch_id)
        assert batch is not None
        if batch.state == state:
            return batch
        assert asyncio.get_running_loop().time() < deadline, batch
        await asyncio.sleep(0.2)


def posts_per_device(sim: Simulator) -> collections.Counter[str]:
    return collections.Counter(call.path.split("/")[-2] for call in sim.deprovision_posts())


async def test_killed_mid_run_resumes_and_sends_every_device_once(
    sim: Simulator, connector: Connector, database_url: str, tmp_path: Path
) -> None:
    names = CART + add_cart(sim, 30)
    env = env_for(sim, database_url, **FAST, BULK_CONCURRENCY="1")
    async with bot_processes() as started:
        crashing = new_process(
            started, "bulk-crash", {**env, "BOT_TEST_CRASH_POINT": "bulk_after_25"}, tmp_path, connector
        )
        await crashing.start()
        batch_id = await request(crashing, names)
        try:
            status, answer = await crashing.post(confirm(connector, batch_id))
            assert status == 200 and answer["type"] == CARD, answer
        except (aiohttp.ClientError, TimeoutError):
            pass  # the run may reach the crash point before the click's answer is written
        assert await crashing.wait_exit(30) == 137, crashing.log_tail()

        store = await Store.open(database_url)
        try:
            rows = await BatchStore(store).rows(batch_id)
            states = collections.Counter(r.state for r in rows)
            # Write-ahead: all 60 rows exist; 25 were sent, one at a time, before the kill; none is half-sent.
            assert states == {SUBMITTED: 25, QUEUED: 35}, states
            assert sum(posts_per_device(sim).values()) == 25

            restarted = new_process(started, "bulk-restarted", env, tmp_path, connector)
            await restarted.start()
            rows = await rows_when(
                store, batch_id, lambda rs: all(r.state == SUBMITTED for r in rs), LEASE + 30, restarted.log_tail
            )
            await asyncio.sleep(2.2)  # two more sweeps: nothing is sent again
            counts = posts_per_device(sim)
            assert len(rows) == 60 and set(counts) == {r.device_id for r in rows}
            assert set(counts.values()) == {1}, counts
            batch = await BatchStore(store).get(batch_id)
            assert batch is not None and batch.state == "finished", batch
            audit = AuditLog(store, load_audit_key(None, database_url))
            assert await audit.verify() == (True, [])
            for row in rows:
                events = [e["event"] for e in await audit.for_action(row.id)]
                assert events == ["confirmed", "submitted", "succeeded"], (row.device_name, events)
        finally:
            await store.close()


async def test_devices_still_queued_past_action_ttl_expire_instead_of_being_sent(
    sim: Simulator, connector: Connector, database_url: str, tmp_path: Path
) -> None:
    """Review finding 7: after an outage longer than ACTION_TTL (counted from the confirm), the devices still queued
    are not sent on the role decision made back then: the resumed run expires them, visibly and on the audit trail."""
    env = env_for(sim, database_url, **FAST, BULK_CONCURRENCY="1", ACTION_TTL="4")
    async with bot_processes() as started:
        crashing = new_process(
            started, "bulk-crash", {**env, "BOT_TEST_CRASH_POINT": "bulk_after_3"}, tmp_path, connector
        )
        await crashing.start()
        batch_id = await request(crashing, CART[:10])
        # The run may reach the crash point before the click's answer is written.
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            await crashing.post(confirm(connector, batch_id))
        assert await crashing.wait_exit(30) == 137, crashing.log_tail()

        store = await Store.open(database_url)
        try:
            batches = BatchStore(store)
            rows = await batches.rows(batch_id)
            assert collections.Counter(r.state for r in rows) == {SUBMITTED: 3, QUEUED: 7}
            await asyncio.sleep(max(0.0, max(r.expires_at for r in rows) - time.time()) + 0.2)  # a long outage

            restarted = new_process(started, "bulk-restarted", env, tmp_path, connector)
            await restarted.start()
            batch = await batch_when(batches, batch_id, "finished", LEASE + 30)
            rows = await batches.rows(batch_id)
            assert collections.Counter(r.state for r in rows) == {SUBMITTED: 3, EXPIRED: 7}, batch
            assert sum(posts_per_device(sim).values()) == 3
            final = await connector.wait_for(lambda c: [a for a in c.updates() if "finished" in card_text(a.cards[0])])
            assert card_text(final[-1].cards[0]).count(m.BULK_RESULTS[EXPIRED]) == 7
            audit = AuditLog(store, load_audit_key(None, database_url))
            for row in rows:
                if row.state == EXPIRED:
                    events = [e["event"] for e in await audit.for_action(row.id)]
                    assert events[-1] == "expired", (row.device_name, events)
        finally:
            await store.close()


async def test_two_instances_on_postgres_send_each_device_once(
    sim: Simulator, connector: Connector, pg_url: str, tmp_path: Path
) -> None:
    """The same confirm reaches both instances at once (Teams retries); mid-run instance A is SIGKILLed. If A was
    running the batch, B's sweep resumes it after the lease. No device is POSTed twice; every device that was not in
    flight on A at the kill is POSTed exactly once."""
    names = CART + add_cart(sim, 30)
    sim.control.latency = 0.05
    env = env_for(sim, pg_url, **FAST, BULK_CONCURRENCY="3")
    async with bot_processes() as started:
        a = new_process(started, "bulk-a", env, tmp_path, connector)
        b = new_process(started, "bulk-b", env, tmp_path, connector)
        await asyncio.gather(a.start(), b.start())
        batch_id = await request(a, names)
        body = confirm(connector, batch_id)
        answers = await asyncio.gather(*(p.post(body) for p in (a, b, b, a)))
        assert all(status == 200 for status, _ in answers), answers

        store = await Store.open(pg_url)
        try:
            batches = BatchStore(store)
            await rows_when(store, batch_id, lambda rs: sum(r.state == SUBMITTED for r in rs) >= 10, 30, a.log_tail)
            a.kill()
            rows = await rows_when(
                store,
                batch_id,
                lambda rs: not [r for r in rs if r.state in (QUEUED, SUBMITTING)],
                LEASE + 40,
                lambda: a.log_tail() + b.log_tail(),
            )
            counts = posts_per_device(sim)
            assert max(counts.values()) == 1, counts  # never twice
            states = collections.Counter(r.state for r in rows)
            assert len(rows) == 60 and set(states) <= {SUBMITTED, UNKNOWN}, states
            assert states[UNKNOWN] <= 3  # at most the rows in flight at the kill (BULK_CONCURRENCY)
            for row in rows:
                expected = 1 if row.state == SUBMITTED else counts[row.device_id]
                assert counts[row.device_id] == expected <= 1, (row.device_name, row.state)
            # The last rows may be settled by B's reconciliation after B resumed the batch: that sweep then finishes
            # the batch (Runner.finish_if_idle), a moment after the rows.
            batch = await batch_when(batches, batch_id, "finished", 10)
            assert batch.finished_at is not None
        finally:
            await store.close()


async def test_a_row_settled_by_the_sweep_finishes_its_batch_without_waiting_for_the_lease(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """A crashed instance left one device *submitting* and still holds the batch's lease: the sweep reconciles the
    device (never re-sent) and, nothing being left to send, finishes the batch there and then. A batch with a device
    still *queued* waits for its lease to run out (the runner that resumes it sends that device)."""
    bot = await make_bot()
    bulk = bot.running.workflow.bulk
    store = bot.running.store
    now = time.time()

    async def crashed_run(names: list[str], queued_left: bool) -> str:
        _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(names)))
        batch = await bulk.batches.get(batch_id)
        assert batch is not None
        rows = [bulk._row(batch, item, REASON, now, None) for item in batch.items if item["class"] == "ready"]
        started = await bulk.batches.start(batch, RUNNING, rows, reason=REASON)  # no runner: it "crashed"
        assert await bulk.batches.claim_run(batch, now + 3600, now, "crashed")  # ... holding the lease
        first, second, third = started.rows
        sent = await store.transition(first, SUBMITTING, now=now, lease_until=now + 3600)
        assert sent is not None and await store.transition(sent, SUBMITTED) is not None
        assert await store.transition(second, SUBMITTING, now=now, lease_until=now - 1) is not None  # stale
        if not queued_left:
            assert await store.transition(third, "cancelled") is not None  # cancelled before it was claimed
        return batch_id

    waiting = await crashed_run(CART[:3], queued_left=True)
    done = await crashed_run(CART[3:6], queued_left=False)
    counts = await bot.running.workflow.sweep()
    assert counts["unknown"] == 2  # both stale rows: Intune has no record of them, they are never re-sent
    finished = await batch_when(bulk.batches, done, "finished", 10)
    assert finished.finished_at is not None and finished.lease_until is None
    await connector.wait_for(lambda c: [s for s in c.sent() if "finished" in s.text.lower()])
    still = await bulk.batches.get(waiting)
    assert still is not None and still.state == RUNNING and still.lease_until == now + 3600
    assert not sim.deprovision_posts()


async def test_a_runner_that_lost_its_lease_can_neither_renew_nor_release_it(store: Store) -> None:
    """Review finding 10: the batch lease names its owner. A runner whose lease ran out and was taken by another
    (after a stall, say) cannot extend or drop the new owner's lease."""
    batches = BatchStore(store)
    batch = await batches.create(
        Batch(id="b" * 24, tenant_id="t", state="running", requester_id="r", created_at=0, updated_at=0, expires_at=9)
    )
    assert await batches.claim_run(batch, 100.0, 50.0, "runner-a")
    assert not await batches.claim_run(batch, 160.0, 99.0, "runner-b")  # A's lease still holds
    assert await batches.claim_run(batch, 200.0, 150.0, "runner-b")  # ran out: B takes over
    assert not await batches.renew(batch.id, 300.0, "runner-a")
    assert not await batches.renew(batch.id, 0.0, "runner-a")  # A cannot hand B's batch to the sweep either
    current = await batches.get(batch.id)
    assert current is not None and current.lease_until == 200.0
    assert await batches.renew(batch.id, 260.0, "runner-b")
