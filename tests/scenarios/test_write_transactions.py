"""Database write transactions per turn (issue 18), over HTTP: one per state change, its audit events included.

Counted as COMMITs on the store's engine (a listener on the real engine of the running bot), so the numbers are
deterministic; :data:`EXPECTED` is the regression guard, on both backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from simulator import Simulator
from tests.harness import ALEX, BotUnderTest, action_id_of

EXPECTED: dict[str, int] = {
    # the action with its "requested" event; then the sent card's message id (known only once it is sent)
    "message": 2,
    # submitting with "confirmed" and the write-ahead "submitted" (committed before Graph is called);
    # then submitted with "succeeded"
    "confirm": 2,
}
SERIAL = "5CD0832TGL"  # NHS-CART3-01


class Commits:
    def __init__(self, bot: BotUnderTest) -> None:
        assert bot.services is not None
        self.engine = bot.services.store.engine.sync_engine
        self.count = 0
        sa.event.listen(self.engine, "commit", self._commit)

    def _commit(self, _conn: Any) -> None:
        self.count += 1

    def close(self) -> None:
        sa.event.remove(self.engine, "commit", self._commit)


@pytest.fixture
async def bot(make_bot: Any, database_url: str) -> AsyncIterator[BotUnderTest]:
    """On both backends (``database_url`` is parametrised: SQLite, PostgreSQL)."""
    bot = await make_bot(database_url)
    assert bot.services is not None
    await bot.services.rbac.catalog()
    yield bot


async def test_write_transactions_per_turn(bot: BotUnderTest, sim: Simulator) -> None:
    assert bot.services is not None
    commits = Commits(bot)
    try:
        replies = await bot.say(ALEX, f"deprovision {SERIAL}")
        assert commits.count == EXPECTED["message"]
        card = replies[-1]
        commits.count = 0
        data = {"actionId": action_id_of(card.cards[0]), "reason": "retiring_device"}
        await bot.click(ALEX, "deprovision.confirm", data, reply_to=card.activity_id)
        await bot.services.workflow.drain()
        assert len(sim.deprovision_posts()) == 1
        assert commits.count == EXPECTED["confirm"]
    finally:
        commits.close()
