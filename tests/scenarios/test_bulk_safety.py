"""Bulk runs under adversity, over HTTP: a budget wait longer than a lease, a cancel racing throttled retries, a
batch that stops running mid-way, a device taken while its retry waits, a run resumed after its devices expired.

Each test is the regression test of one finding of the security review of the bulk feature.
"""

from __future__ import annotations

import asyncio
import collections

from bot import messages as m
from bot.batches import CANCELLED as BATCH_CANCELLED
from bot.batches import Batch, BatchStore
from bot.store import CANCELLED, FAILED, SUBMITTED
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, BotUnderTest, Connector, action_id_of, card_of, card_text
from tests.scenarios.test_bulk import CART, REASON, bulk_card, wait_rows


def deprovision_attempts(sim: Simulator) -> collections.Counter[str]:
    """Every deprovision POST that reached Graph, per device — accepted or not."""
    return collections.Counter(
        c.path.split("/")[-2] for c in sim.calls if c.method == "POST" and c.path.endswith("/deprovision")
    )


async def finished(bot: BotUnderTest, batch_id: str, timeout: float = 15.0) -> Batch:
    """The batch once its run has ended (``finished_at`` set), without any sweep."""
    batches = BatchStore(bot.running.store)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        batch = await batches.get(batch_id)
        assert batch is not None
        if batch.finished_at is not None:
            return batch
        assert asyncio.get_running_loop().time() < deadline, (batch, [r.state for r in await batches.rows(batch_id)])
        await asyncio.sleep(0.05)


async def test_a_device_waiting_for_the_write_budget_is_never_sent_twice(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """Review finding 2: the wait for the write budget must not run down a device's submit lease. The lease here is
    2.6 s (2 × GRAPH_TIMEOUT + GRAPH_MAX_RETRY_WAIT + SUBMIT_LEASE_GRACE); the budget lets one write through per 6 s,
    so the second device waits far longer than a lease. Meanwhile the sweep runs and the requester asks again for any
    device the bot reports free: Graph still sees one POST per device."""
    bot = await make_bot(
        BULK_CONCURRENCY="2",
        BULK_WRITE_BUDGET="1/6s",
        GRAPH_TIMEOUT="1",
        GRAPH_MAX_RETRY_WAIT="0.1",
        SUBMIT_LEASE_GRACE="0.5",
        COMPLETION_FIRST_CHECK="0.5",
        SWEEP_INTERVAL="1h",
    )
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:2])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    await connector.wait_for(lambda c: len(sim.deprovision_posts()) == 1, timeout=10)
    batches = BatchStore(bot.running.store)
    asked_again: set[str] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 8.5  # past the budget's window (6 s + margin): the second device has been sent
    while loop.time() < deadline:
        await bot.running.workflow.sweep()
        for row in await batches.rows(batch_id, FAILED):
            if row.device_id in asked_again:
                continue
            asked_again.add(row.device_id)
            replies = await bot.say(ALEX, f"deprovision {row.device_serial}")
            card = replies[-1].cards[0]
            await bot.click(ALEX, "deprovision.confirm", {"actionId": action_id_of(card), "reason": REASON})
        await asyncio.sleep(0.2)
    attempts = deprovision_attempts(sim)
    assert len(attempts) == 2 and set(attempts.values()) == {1}, attempts


async def test_cancel_stops_the_retries_of_throttled_devices(
    make_bot: BotFactory, sim: Simulator, connector: Connector, database_url: str
) -> None:
    """Review finding 3a: a device Graph refused with 429 waits for its retry; Cancel must stop that retry too."""
    bot = await make_bot(
        database_url,
        BULK_CONCURRENCY="2",
        BULK_WRITE_BUDGET="100/1s",
        GRAPH_RETRY_AFTER_CAP="2",
        GRAPH_MAX_RETRY_WAIT="0.1",
        SWEEP_INTERVAL="1h",
    )
    sim.control.write_limit = (1, 30.0)  # Intune accepts one write, then says 429 until the test lifts it
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:4])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    await wait_rows(bot, batch_id, lambda rows: any(r.state == FAILED and r.retryable for r in rows), timeout=10)
    cancelled = card_of(await bot.click(ALEX, "bulk.cancel", {"batchId": batch_id}))
    assert m.BULK_TITLE_CANCELLED in card_text(cancelled)
    sim.control.write_limit = None  # from now on Intune would accept every write
    batch = await finished(bot, batch_id)
    await asyncio.sleep(0.5)
    rows = await BatchStore(bot.running.store).rows(batch_id)
    assert batch.state == BATCH_CANCELLED
    assert len(sim.deprovision_posts()) == 1, [(r.device_name, r.state) for r in rows]
    assert sorted(r.state for r in rows) == [CANCELLED, CANCELLED, CANCELLED, SUBMITTED]


async def test_a_batch_no_longer_running_sends_none_of_its_queued_devices(
    make_bot: BotFactory, sim: Simulator, connector: Connector, database_url: str
) -> None:
    """Review finding 3b: once the batch has left *running* (here: cancelled by a write that left its devices
    queued, as a crash between two writes did), no queued device is claimed; the run cancels them and ends."""
    bot = await make_bot(database_url, BULK_CONCURRENCY="1", BULK_WRITE_BUDGET="1/1s", SWEEP_INTERVAL="1h")
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:6])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    await connector.wait_for(lambda c: len(sim.deprovision_posts()) >= 1, timeout=10)
    batches = BatchStore(bot.running.store)
    batch = await batches.get(batch_id)
    assert batch is not None
    assert await batches.transition(batch, BATCH_CANCELLED, approver_name="Alex Wilber") is not None
    sent_before = len(sim.deprovision_posts())
    done = await finished(bot, batch_id)
    await asyncio.sleep(1.5)
    rows = await batches.rows(batch_id)
    # At most the one device claimed before the batch stopped (BULK_CONCURRENCY=1) is still sent.
    assert len(sim.deprovision_posts()) <= sent_before + 1, [(r.device_name, r.state) for r in rows]
    assert done.state == BATCH_CANCELLED
    assert {r.state for r in rows} == {SUBMITTED, CANCELLED}
    assert len([r for r in rows if r.state == SUBMITTED]) == len(sim.deprovision_posts())


async def test_a_device_taken_while_its_retry_waits_does_not_break_the_run(
    make_bot: BotFactory, sim: Simulator, connector: Connector
) -> None:
    """Review finding 10: one device's error (here the device was taken by a single request while its throttled
    retry waited) must not end the run early and hand the batch to a second runner; the run finishes by itself."""
    bot = await make_bot(
        BULK_CONCURRENCY="2",
        BULK_WRITE_BUDGET="100/1s",
        GRAPH_RETRY_AFTER_CAP="3",
        GRAPH_MAX_RETRY_WAIT="0.1",
        SWEEP_INTERVAL="1h",
    )
    sim.control.write_limit = (1, 30.0)
    _card, batch_id, _ = bulk_card(await bot.say(ALEX, "deprovision " + ", ".join(CART[:2])))
    await bot.click(ALEX, "bulk.confirm", {"batchId": batch_id, "reason": REASON})
    rows = await wait_rows(bot, batch_id, lambda rows: any(r.state == FAILED and r.retryable for r in rows), timeout=10)
    [throttled] = [r for r in rows if r.state == FAILED]
    sim.control.write_limit = None
    replies = await bot.say(ALEX, f"deprovision {throttled.device_serial}")
    single = action_id_of(replies[-1].cards[0])
    await bot.click(ALEX, "deprovision.confirm", {"actionId": single, "reason": REASON})
    held = await bot.running.store.get(single)
    assert held is not None and held.state == SUBMITTED  # the single request holds the device now
    batch = await finished(bot, batch_id, timeout=8)
    assert batch.state == "finished" and batch.lease_until is None
    assert (await bot.running.workflow.sweep())["bulk_resumed"] == 0
    attempts = deprovision_attempts(sim)
    assert set(attempts.values()) <= {1, 2} and sum(1 for c in sim.deprovision_posts()) == 2, attempts
