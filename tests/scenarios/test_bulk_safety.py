"""Bulk runs under adversity, over HTTP: a budget wait longer than a lease, a cancel racing throttled retries, a
batch that stops running mid-way, a device taken while its retry waits, a run resumed after its devices expired.

Each test is the regression test of one finding of the security review of the bulk feature.
"""

from __future__ import annotations

import asyncio
import collections

from bot.batches import BatchStore
from bot.store import FAILED
from simulator import Simulator
from tests.conftest import BotFactory
from tests.harness import ALEX, Connector, action_id_of
from tests.scenarios.test_bulk import CART, REASON, bulk_card


def deprovision_attempts(sim: Simulator) -> collections.Counter[str]:
    """Every deprovision POST that reached Graph, per device — accepted or not."""
    return collections.Counter(
        c.path.split("/")[-2] for c in sim.calls if c.method == "POST" and c.path.endswith("/deprovision")
    )


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
