"""Following each sent deprovision in Intune's own record until it settles (completion and ambiguous writes).

After Graph's 204 the action is *submitted* ("sent to Intune — waiting for Google"); after a write whose answer was
lost it is *unknown* and its device stays locked. Both are checked on a backed-off schedule (first after
``COMPLETION_FIRST_CHECK``, doubling up to ``COMPLETION_MAX_INTERVAL``, given up after ``COMPLETION_TIMEOUT``): done →
*confirmed*; failed → *failed* (the device is free again, the requester is told); an unknown write that Intune never
recorded → *failed* as "not carried out". Each round is claimed with a compare-and-set, so one instance checks it.
"""

from __future__ import annotations

import logging

from bot import messages as m
from bot.errors import GraphError
from bot.flow.base import Deps
from bot.flow.views import Views
from bot.intune_record import Record, fetch_record
from bot.store import CONFIRMED, FAILED, UNKNOWN, Action

log = logging.getLogger("bot.workflow")

#: Intune's clock against ours, and the longest a POST can take: how far before the recorded outcome a record of
#: this very request may be stamped.
CLOCK_SKEW = 30.0


class Tracking:
    def __init__(self, deps: Deps, views: Views) -> None:
        self.deps = deps
        self.views = views

    def first_check(self, now: float) -> float:
        return now + self.deps.settings.completion_first_check

    async def check_due(self) -> dict[str, int]:
        """One pass over the actions whose check is due (called by the sweep)."""
        counts = {"confirmed": 0, "intune_failed": 0, "not_confirmed": 0, "pending": 0}
        now = self.deps.clock()
        for action in await self.deps.store.due_for_check(now):
            # Claim this round (one instance), long enough for the two reads.
            if not await self.deps.store.claim_check(action, now + 2 * self.deps.settings.graph_timeout + 5):
                continue
            fresh = await self.deps.store.get(action.id)
            if fresh is None:
                continue
            counts[await self.check(fresh)] += 1
        return counts

    async def check(self, action: Action) -> str:
        deps = self.deps
        s = deps.settings
        now = deps.clock()
        lease = 2 * s.graph_timeout + s.graph_max_retry_wait + s.submit_lease_grace
        since = action.updated_at - lease - CLOCK_SKEW
        try:
            record = await fetch_record(deps.graph, deps.devices, action.device_id, since, s)
        except GraphError as exc:
            log.warning("reading Intune's record failed", extra={"action": action.id, "status": exc.status})
            record = Record("pending", f"HTTP {exc.status}")
        age = now - action.updated_at
        if record.outcome == "done":
            return await self._settle_done(action, record, now)
        if record.outcome == "failed":
            return await self._settle_failed(action, record.detail, "intune_failed", now)
        if record.outcome == "absent" and action.state == UNKNOWN and age >= 2 * s.completion_first_check:
            # Intune has no record of the write at all: it was not carried out.
            return await self._settle_failed(action, m.not_carried_out(), "not_applied", now)
        if age >= s.completion_timeout:
            await deps.store.update_fields(action.id, next_check_at=None, intune_state="not_confirmed")
            await deps.audit.record("not_confirmed", actor=None, action=action, intune=record.outcome)
            updated = await deps.store.get(action.id) or action
            await self.views.update_shared(updated)
            await self.views.notify(updated, m.proactive_not_confirmed(updated.device_name))
            return "not_confirmed"
        checks = action.checks + 1
        interval = min(s.completion_first_check * 2**checks, s.completion_max_interval)
        await deps.store.update_fields(
            action.id, next_check_at=now + interval, checks=checks, intune_state=record.outcome
        )
        return "pending"

    async def _settle_done(self, action: Action, record: Record, now: float) -> str:
        deps = self.deps
        completed = deps.audit.entry(
            "completed", actor=None, action=action, intune_at=record.at, initiated_by=record.initiated_by
        )
        updated = await deps.change(
            action,
            CONFIRMED,
            completed,
            now=action.updated_at,  # keep the time of sending; the confirmation time is settled_at
            next_check_at=None,
            intune_state="done",
            intune_detail=record.at,
            settled_at=now,
            error_code=None,
            error_message=None,
        )
        if updated is None:
            return "pending"
        await self.views.update_shared(updated)
        if action.state == UNKNOWN:
            await self.views.notify(updated, m.proactive_done(updated.device_name))
        return "confirmed"

    async def _settle_failed(self, action: Action, detail: str, code: str, now: float) -> str:
        deps = self.deps
        failed = deps.audit.entry("failed", actor=None, action=action, source="intune", code=code, message=detail)
        updated = await deps.change(
            action,
            FAILED,
            failed,
            next_check_at=None,
            intune_state="failed",
            settled_at=now,
            error_code=code,
            error_message=detail,
            retryable=False,
        )
        if updated is None:
            return "pending"
        await self.views.update_shared(updated)
        await self.views.notify(updated, m.proactive_intune_failed(updated.device_name, detail))
        return "intune_failed"
