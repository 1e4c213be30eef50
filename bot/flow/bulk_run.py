"""Running a confirmed bulk request: each device written ahead (*queued*), claimed, sent once, within Intune's budget.

* **Exactly once.** Each device's row is claimed by compare-and-set (*queued* → *submitting*, with the submit lease)
  before its POST, by whichever runner gets there first — two instances, or a runner resumed after a crash, never send
  a device twice. A row left in *submitting* by a dead process is reconciled by the sweep like any single request
  (never re-sent); rows still *queued* are sent by the runner that resumes the batch once its lease has run out.
  The write budget is taken *before* the claim, and the POST follows the claim at once: the submit lease covers the
  Graph call only, so no wait can outlast it (a lease run out lets the sweep settle the row and free the device).
* **Throttling.** Writes go through one :class:`WriteBudget` per process: a sliding window of ``BULK_WRITE_BUDGET``
  (default 200 writes per 20 s, Intune's per-app limit, graph-intune.md §10), each write's window running from its
  answer, so a run of 1,000 takes about the window's floor and Graph rarely has to say 429. When it does, ``Retry-After`` is honoured (the Graph client waits
  within ``GRAPH_MAX_RETRY_WAIT``; a device Graph still refuses is tried again after the budget allows). Other
  instances' writes are not counted here: their 429s are honoured the same way.
* **Concurrency.** At most ``BULK_CONCURRENCY`` POSTs in flight per batch.
* **Expiry.** A device still *queued* ``ACTION_TTL`` after the confirm (or the approval) is not sent on the role
  decision made then: it expires (after an outage longer than that, say).
* **Ambiguous outcomes** follow the single flow: a timeout or 5xx leaves the device *unknown* and locked, and
  completion tracking settles it from Intune's own record.
* **Cancel** moves the batch and, in the same transaction, the rows not yet claimed (and the throttled ones waiting
  for a retry) to *cancelled* (bot.batches). A claim needs the batch still *running*, so nothing is sent once the
  cancel has committed; a device Graph refuses as throttled after that is cancelled instead of retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from bot.batches import CANCELLED, FINISHED, RUNNING, Batch, BatchStore
from bot.flow.base import Deps, Requester
from bot.flow.bulk_views import BulkViews
from bot.flow.submission import Submission
from bot.flow.write_budget import WriteBudget
from bot.store import FAILED, QUEUED, SUBMITTING, Action, DeviceBusy, State

log = logging.getLogger("bot.workflow")

#: How often one device is offered to Graph again after it answered "throttled" past the client's own waiting.
MAX_THROTTLED_ATTEMPTS = 20


@dataclass
class _Run:
    """One runner's hold on one batch: the lease's owner token, the batch's concurrency, whether the lease was lost,
    whether the batch was seen no longer *running* (cancelled: the devices left are not offered to the budget)."""

    batch: Batch
    owner: str
    semaphore: asyncio.Semaphore
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def halted(self) -> bool:
        return self.lost.is_set() or self.stopped.is_set()


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
        owner = uuid.uuid4().hex
        if batch is None or not await self.batches.claim_run(batch, now + lease, now, owner):
            return
        run = _Run(batch, owner, asyncio.Semaphore(self.deps.settings.bulk_concurrency))
        if batch.state != RUNNING:  # resumed after a cancel: only its leftovers to settle in _finish
            run.stopped.set()
        renewing = asyncio.create_task(self._renew(run, lease))
        try:
            rows = await self.batches.rows(batch_id, QUEUED)
            # One device's error is logged and ends only that device: the others run on under this lease.
            results = await asyncio.gather(*(self._one(run, row) for row in rows), return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.error("bulk device failed", exc_info=result, extra={"batch": batch_id})
            renewing.cancel()
            if not run.lost.is_set():
                await self._finish(run)
        except Exception:
            log.exception("bulk run failed", extra={"batch": batch_id})
            await self.batches.renew(batch_id, self.deps.clock(), owner)  # let the sweep resume it
        finally:
            renewing.cancel()

    async def _renew(self, run: _Run, lease: float) -> None:
        """Keep the batch's lease while this runner works (a dead runner's lease runs out; the sweep resumes).

        A lease another runner has taken meanwhile (this one stalled past it) is never extended: this runner then
        stops claiming devices and leaves the batch to the new owner."""
        while True:
            await asyncio.sleep(lease / 3)
            try:
                renewed = await self.batches.renew(run.batch.id, self.deps.clock() + lease, run.owner)
            except Exception:
                log.exception("bulk lease renewal failed", extra={"batch": run.batch.id})
                continue
            if not renewed:
                log.warning("bulk lease lost", extra={"batch": run.batch.id})
                run.lost.set()
                return

    def _actor(self, batch: Batch) -> Requester:
        if batch.approver_id:
            return Requester(batch.approver_id, batch.approver_name or "", "", batch.tenant_id)
        return Requester(batch.requester_id, batch.requester_name, batch.requester_mri, batch.tenant_id)

    async def _claim(self, row: Action, batch: Batch, source: str, actor: Requester) -> Action | None:
        """*source* → *submitting* with the submit lease, its *submitted* audit event in the same transaction (the
        confirm or approval was audited when the device was written ahead).

        Called only once the write budget has let this POST through, so the lease covers the POST alone.
        """
        now = self.deps.clock()
        request_id = str(uuid.uuid4())
        audit = self.deps.audit
        submitted = audit.entry("submitted", actor=actor.actor, client_request_id=request_id)
        return await self.deps.store.transition(
            row,
            SUBMITTING,
            from_states=(source,),
            now=now,
            then=audit.then(submitted),
            lease_until=now + self.submission.lease(),
            client_request_id=request_id,
            error_code=None,
            error_message=None,
            retryable=False,
            provided=self.batches.runs(batch.id),  # a device of a batch no longer running is never claimed
        )

    async def _runs(self, run: _Run) -> bool:
        """Whether the batch still runs — read only after a claim failed (the claim itself is conditional on it);
        once it is seen stopped, the devices left skip the budget and the claim altogether."""
        if run.stopped.is_set():
            return False
        batch = await self.batches.get(run.batch.id)
        if batch is None or batch.state != RUNNING:
            run.stopped.set()
            return False
        return True

    async def _one(self, run: _Run, row: Action) -> None:
        batch = run.batch
        async with run.semaphore:
            if run.halted() or await self._expired(row):
                return  # cancelled meanwhile (the devices left are cancelled when the run ends), or not ours now
            # The budget first, then the claim and at once the POST: a wait for the budget never runs down the
            # lease (a lease run out would let the sweep settle the row and free the device while it is still sent).
            async with self.budget.slot():
                if run.halted() or await self._expired(row):
                    return
                actor = self._actor(batch)
                claimed = await self._claim(row, batch, QUEUED, actor)
                if claimed is None:
                    await self._runs(run)  # cancelled (the devices left then skip), or another runner took it
                    return
                final = await self.submission.send(claimed, actor)
            await self._retry(final, run, actor)
            self._sent += 1
            self.views.changed(batch.id)
            self.deps.checkpoint(f"bulk_after_{self._sent}")

    async def _expired(self, row: Action) -> bool:
        """A device still queued ``ACTION_TTL`` after the confirm (or approval) is not sent on the role decision made
        then (after an outage, say): it expires, visibly on the card and on the audit trail."""
        if self.deps.clock() < row.expires_at:
            return False
        audit = self.deps.audit
        await self.deps.store.transition(row, State.EXPIRED, then=audit.then(audit.entry("expired", actor=None)))
        return True

    async def _retry(self, final: Action, run: _Run, actor: Requester) -> Action:
        """A device Graph refused as throttled is offered again after a pause — only while the batch still runs."""
        attempts = 1
        while final.state == FAILED and final.retryable and attempts < MAX_THROTTLED_ATTEMPTS:
            attempts += 1
            await asyncio.sleep(self.deps.settings.graph_retry_after_cap)
            if not await self._runs(run):
                return await self._no_retry(final)
            async with self.budget.slot():
                try:
                    again = await self._claim(final, run.batch, FAILED, actor)
                except DeviceBusy:  # another request took the device meanwhile: it stays failed here
                    return final
                if again is None:  # the batch stopped meanwhile, or another claim won
                    return final if await self._runs(run) else await self._no_retry(final)
                final = await self.submission.send(again, actor)
        return final

    async def _no_retry(self, row: Action) -> Action:
        """A throttled device of a stopped batch is cancelled, not sent."""
        audit = self.deps.audit
        cancelled = await self.deps.store.transition(
            row, State.CANCELLED, then=audit.then(audit.entry("cancelled", actor=None))
        )
        return cancelled or row

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

    async def _finish(self, run: _Run) -> None:
        """Every device sent (or cancelled): the batch is finished, its card final, the requester told."""
        batch_id = run.batch.id
        batch = await self.batches.get(batch_id)
        if batch is None or batch.finished_at is not None:
            return
        if batch.state == CANCELLED:  # devices left behind by a cancel (rows the cancel could not see): not sent
            audit = self.deps.audit
            left = audit.then_rows(lambda rows: [audit.entry("cancelled", actor=None, action=r) for r in rows])
            await self.batches.cancel_left(batch_id, batch.approver_name or "", then=left)
        if await self.batches.rows(batch_id, QUEUED, SUBMITTING):  # a crashed runner's row: the sweep resumes
            await self.batches.renew(batch_id, self.deps.clock(), run.owner)
            return
        await self._close(batch_id)

    async def _close(self, batch_id: str) -> None:
        batch = await self.batches.get(batch_id)
        if batch is None or batch.finished_at is not None:
            return
        now = self.deps.clock()
        if batch.state == RUNNING:
            done = await self.batches.transition(batch, FINISHED, finished_at=now, lease_until=None, lease_owner=None)
        elif batch.state == CANCELLED:
            done = await self.batches.transition(batch, CANCELLED, finished_at=now, lease_until=None, lease_owner=None)
        else:
            done = None
        if done is None:
            return
        await self.views.final(batch_id)
        if self.deps.notifier is not None and done.state == FINISHED:
            await self.deps.notifier.send(done.reference, text=await self.views.finished_text(done))
