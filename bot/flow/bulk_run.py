"""Running a confirmed bulk request: each device written ahead (*queued*), claimed, sent once, within Intune's budget.

* **Exactly once.** Each device's row is claimed by compare-and-set (*queued* → *submitting*, with the submit lease
  and its *confirmed* / *submitted* audit entries in the same transaction, as for one device) before its POST, by
  whichever runner gets there first — two instances, or a runner resumed after a crash, never send a device twice. A
  row left in *submitting* by a dead process is reconciled by the sweep like any single request (never re-sent); rows
  still *queued* are sent by the runner that resumes the batch once its lease has run out.
* **Throttling.** Writes go through one :class:`WriteBudget` per process: a sliding window of ``BULK_WRITE_BUDGET``
  (default 200 writes per 20 s, Intune's per-app limit, graph-intune.md §10), each write's window running from its
  answer, so a run of 1,000 takes about the window's floor and Graph rarely has to say 429. When it does,
  ``Retry-After`` is honoured (the Graph client waits within ``GRAPH_MAX_RETRY_WAIT``; a device Graph still refuses is
  tried again after the budget allows). Other instances' writes are not counted here: their 429s are honoured the
  same way.
* **Concurrency.** At most ``BULK_CONCURRENCY`` POSTs in flight per batch.
* **Ambiguous outcomes** follow the single flow: a timeout or 5xx leaves the device *unknown* and locked, and
  completion tracking settles it from Intune's own record.
* **Cancel** moves the rows not yet claimed to *cancelled* (bot.batches); their claims then fail.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from bot.batches import CANCELLED, FINISHED, RUNNING, Batch, BatchStore
from bot.flow.base import Deps, Requester
from bot.flow.bulk_views import BulkViews
from bot.flow.submission import Submission
from bot.store import FAILED, QUEUED, SUBMITTING, Action

log = logging.getLogger("bot.workflow")

#: How often one device is offered to Graph again after it answered "throttled" past the client's own waiting.
MAX_THROTTLED_ATTEMPTS = 20


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


class Runner:
    def __init__(self, deps: Deps, submission: Submission, views: BulkViews, batches: BatchStore) -> None:
        self.deps = deps
        self.submission = submission
        self.views = views
        self.batches = batches
        limit, window = deps.settings.bulk_write_budget
        self.budget = WriteBudget(limit, window)
        self._sent = 0  # devices sent by this process (names the crash tests' checkpoints)
        submission.batch_row_settled = self.settled

    def start(self, batch_id: str) -> None:
        self.deps.spawn(self.run(batch_id))

    async def run(self, batch_id: str) -> None:
        """Send every *queued* device of the batch, then finish it (if it holds the lease)."""
        batch = await self.batches.get(batch_id)
        now = self.deps.clock()
        lease = self.submission.lease()
        if batch is None or not await self.batches.claim_run(batch, now + lease, now):
            return
        renewing = asyncio.create_task(self._renew(batch_id, lease))
        try:
            semaphore = asyncio.Semaphore(self.deps.settings.bulk_concurrency)
            rows = await self.batches.rows(batch_id, QUEUED)
            await asyncio.gather(*(self._one(batch, row, semaphore) for row in rows))
            renewing.cancel()
            await self._finish(batch_id)
        except Exception:
            log.exception("bulk run failed", extra={"batch": batch_id})
            await self.batches.renew(batch_id, self.deps.clock())  # let the sweep resume it
        finally:
            renewing.cancel()

    async def _renew(self, batch_id: str, lease: float) -> None:
        """Keep the batch's lease while this runner works (a dead runner's lease runs out; the sweep resumes)."""
        while True:
            await asyncio.sleep(lease / 3)
            await self.batches.renew(batch_id, self.deps.clock() + lease)

    def _actor(self, batch: Batch) -> Requester:
        if batch.approver_id:
            return Requester(batch.approver_id, batch.approver_name or "", "", batch.tenant_id)
        return Requester(batch.requester_id, batch.requester_name, batch.requester_mri, batch.tenant_id)

    async def _claim(self, row: Action, batch: Batch, source: str) -> Action | None:
        """*submitting* (compare-and-set from ``source``) with its audit entries in the same transaction: on a first
        claim *confirmed* (unless a peer approval audited the device already), and *submitted* — the write-ahead."""
        now = self.deps.clock()
        audit, request_id = self.deps.audit, str(uuid.uuid4())
        entries = []
        if source == QUEUED and batch.approver_id is None:
            requester = Requester(batch.requester_id, batch.requester_name, "", batch.tenant_id)
            entries.append(audit.entry("confirmed", actor=requester.actor, reason=batch.reason))
        entries.append(audit.entry("submitted", actor=self._actor(batch).actor, client_request_id=request_id))
        return await self.deps.change(
            row,
            SUBMITTING,
            *entries,
            from_states=(source,),
            now=now,
            lease_until=now + self.submission.lease(),
            client_request_id=request_id,
            error_code=None,
            error_message=None,
            retryable=False,
        )

    async def _one(self, batch: Batch, row: Action, semaphore: asyncio.Semaphore) -> None:
        async with semaphore:
            claimed = await self._claim(row, batch, QUEUED)
            if claimed is None:
                return  # cancelled, or another runner took it
            actor = self._actor(batch)
            final = await self.submission.send(claimed, actor, written_ahead=True, gate=self.budget.slot)
            attempts = 1
            while final.state == FAILED and final.retryable and attempts < MAX_THROTTLED_ATTEMPTS:
                attempts += 1
                await asyncio.sleep(self.deps.settings.graph_retry_after_cap)
                again = await self._claim(final, batch, FAILED)
                if again is None:
                    break
                final = await self.submission.send(again, actor, written_ahead=True, gate=self.budget.slot)
            self._sent += 1
            self.views.changed(batch.id)
            self.deps.checkpoint(f"bulk_after_{self._sent}")

    def settled(self, batch_id: str) -> None:
        """The sweep settled a device of the batch that a crashed instance left *submitting*."""
        self.deps.spawn(self.finish_if_idle(batch_id))

    async def finish_if_idle(self, batch_id: str) -> None:
        """Finish the batch now if no device is left to send — none *queued* or *submitting*, none *failed* and
        waiting to be offered to Graph again after a throttle — instead of when its (dead) runner's lease runs out.

        Safe beside a live runner: it only ever sends rows it claims from *queued* or retryable *failed*, and the
        batch's move to *finished* is a compare-and-set, so only one of them finishes it (and tells the requester).
        """
        if await self.batches.rows(batch_id, QUEUED, SUBMITTING):
            return
        if any(row.retryable for row in await self.batches.rows(batch_id, FAILED)):
            return
        await self._close(batch_id)

    async def _finish(self, batch_id: str) -> None:
        """Every device sent (or cancelled): the batch is finished, its card final, the requester told."""
        if await self.batches.rows(batch_id, QUEUED, SUBMITTING):
            await self.batches.renew(batch_id, self.deps.clock())  # a crashed runner's row: the sweep resumes
            return
        await self._close(batch_id)

    async def _close(self, batch_id: str) -> None:
        batch = await self.batches.get(batch_id)
        if batch is None or batch.finished_at is not None:
            return
        now = self.deps.clock()
        if batch.state == RUNNING:
            done = await self.batches.transition(batch, FINISHED, finished_at=now, lease_until=None)
        elif batch.state == CANCELLED:
            done = await self.batches.transition(batch, CANCELLED, finished_at=now, lease_until=None)
        else:
            done = None
        if done is None:
            return
        await self.views.final(batch_id)
        if self.deps.notifier is not None and done.state == FINISHED:
            await self.deps.notifier.send(done.reference, text=await self.views.finished_text(done))

    async def resume(self, batch: Batch) -> None:
        """The sweep found a running batch whose runner's lease ran out (a crash): carry on, never resend."""
        await self.run(batch.id)
