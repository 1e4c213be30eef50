"""Intune's write budget kept on our side: a sliding window of ``BULK_WRITE_BUDGET`` writes (graph-intune.md §10)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable


class WriteBudget:
    """A sliding window: at most ``limit`` writes in any ``window`` seconds (what Intune enforces per app).

    A write holds its slot from :meth:`slot` until its answer is in, and the window runs from that answer: Intune
    counted the write somewhere between our sending it and its answer, so a write sent in the same slot a window
    later always lands in Intune's next window — whatever the network's delays, with no margin to guess. (Timing the
    window from the moment of sending would need a margin for the delays, paid once per window.)
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit, self.window = limit, window
        self._clock, self._sleep = clock, sleep
        self._answered: collections.deque[float] = collections.deque()  # when each write's answer came, in order
        self._in_flight = 0
        self._released = asyncio.Event()
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot, hold it while the write is on its way, and date it when its answer is in."""
        await self._take()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._answered.append(self._clock())
            self._released.set()

    async def _take(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._answered and self._answered[0] <= now - self.window:
                    self._answered.popleft()
                if self._in_flight + len(self._answered) < self.limit:
                    self._in_flight += 1
                    return
                if self._answered:
                    await self._sleep(self._answered[0] + self.window - now)
                else:  # every slot is on its way
                    self._released.clear()
                    await self._released.wait()
