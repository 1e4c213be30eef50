"""The bulk runner's write budget on a made-up clock: a slot is free again one window after its write's answer."""

from __future__ import annotations

import asyncio

from bot.flow.write_budget import WriteBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_the_window_runs_from_each_writes_answer_not_from_its_sending() -> None:
    clock = Clock()
    budget = WriteBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    async with budget.slot():
        clock.now = 1.0  # sent at 0, answered at 1
    async with budget.slot():
        clock.now = 3.0
    async with budget.slot():
        sent_at = clock.now
    assert sent_at == 11.0  # a window after the first answer (Intune counted that write at 1 at the latest)


async def test_writes_within_the_limit_wait_for_nothing() -> None:
    clock = Clock()
    budget = WriteBudget(3, 10.0, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        async with budget.slot():
            pass
    assert clock.now == 0.0


async def test_a_write_on_its_way_holds_its_slot() -> None:
    clock = Clock()
    budget = WriteBudget(1, 10.0, clock=clock, sleep=clock.sleep)
    sent: list[float] = []

    async def second() -> None:
        async with budget.slot():
            sent.append(clock.now)

    async with budget.slot():
        waiting = asyncio.create_task(second())
        for _ in range(5):
            await asyncio.sleep(0)
        assert sent == []  # no answer yet: the slot is taken
        clock.now = 2.0
    await waiting
    assert sent == [12.0]


async def test_a_failed_write_counts_too() -> None:
    clock = Clock()
    budget = WriteBudget(1, 10.0, clock=clock, sleep=clock.sleep)
    try:
        async with budget.slot():
            clock.now = 0.5
            raise TimeoutError
    except TimeoutError:
        pass
    async with budget.slot():
        assert clock.now == 10.5
