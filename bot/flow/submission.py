"""Sending the deprovision: write-ahead, the one Graph call, the lease, expiry and crash recovery.

State is committed (*submitting*, with a lease) before Graph is called; the outcome is written after. A process
that dies in between leaves a row whose lease runs out; the sweep then learns from Intune and never re-sends.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from bot import messages as m
from bot.errors import GraphError, GraphThrottled, OutcomeUnknown
from bot.flow.base import Deps, InvokeAnswer, Requester, Viewer
from bot.flow.tracking import Tracking
from bot.flow.views import Views
from bot.intune_record import parse_time
from bot.store import EXPIRED, SUBMITTED, SUBMITTING, UNKNOWN, Action, DeviceBusy, State

log = logging.getLogger("bot.workflow")

RECONCILE_CLOCK_SKEW = 30.0  # seconds


class Submission:
    def __init__(self, deps: Deps, views: Views) -> None:
        self.deps = deps
        self.views = views
        #: A device of a bulk request was settled by the sweep (a crashed instance's row): its batch may be done.
        self.batch_row_settled: Callable[[str], None] | None = None
        self.tracking = Tracking(deps, views)

    def first_check(self) -> float:
        """When Intune's own record of a write is read first (see :mod:`bot.flow.tracking`)."""
        return self.deps.clock() + self.deps.settings.completion_first_check

    def lease(self) -> float:
        """How long a *submitting* row belongs to the instance that wrote it: the longest a Graph call can take."""
        s = self.deps.settings
        return 2 * s.graph_timeout + s.graph_max_retry_wait + s.submit_lease_grace

    async def submit(
        self,
        who: Requester,
        action: Action,
        viewer: Viewer,
        *,
        reason: str | None = None,
        approver: Requester | None = None,
    ) -> InvokeAnswer:
        """Move to *submitting* (compare-and-set), then call Graph in the background within the invoke budget."""
        now = self.deps.clock()
        changes: dict[str, Any] = {
            "lease_until": now + self.lease(),
            "client_request_id": str(uuid.uuid4()),
            "error_code": None,
            "error_message": None,
            "retryable": False,
        }
        if reason:
            changes["reason"] = reason
        if approver:
            changes.update(approver_id=approver.aad_id, approver_name=approver.name)
        audit = self.deps.audit
        entries = []
        if approver is None and reason:
            entries.append(audit.entry("confirmed", actor=who.actor, reason=reason))
        elif approver is not None:
            entries.append(audit.entry("approved", actor=approver.actor, requester_id=action.requester_id))
        # The write-ahead: committed with *submitting*, before Graph is called.
        sender = approver or who
        entries.append(audit.entry("submitted", actor=sender.actor, client_request_id=changes["client_request_id"]))
        try:
            updated = await self.deps.change(action, SUBMITTING, *entries, now=now, **changes)
        except DeviceBusy:
            return InvokeAnswer(card=await self.views.busy(action))
        if updated is None:
            return InvokeAnswer(card=await self.views.current(action, viewer))
        await self.views.supersede_others(updated, confirmed=True)
        if approver is not None:
            await self.views.notify(updated, m.proactive_approved(updated.device_name, approver.name))
        task = self.deps.spawn(self.send(updated, sender))
        done, _ = await asyncio.wait({task}, timeout=self.deps.settings.invoke_budget)
        return InvokeAnswer(card=await self.views.render(task.result() if done else updated, viewer))

    async def send(self, action: Action, actor: Requester) -> Action:
        """Write-ahead already done (*submitting*, its *submitted* audit event in the same transaction). Call Graph
        once, record the outcome, update the cards.

        Nothing may wait between the write-ahead and the POST: the submit lease covers the Graph call only (the bulk
        runner takes its write budget before it claims a device).
        """
        deps = self.deps
        audit = deps.audit
        wire_reason = deps.settings.reason_map.get(action.reason or "", action.reason or "")
        deps.checkpoint("before_graph")
        outcome: Action | None
        try:
            response = await deps.graph.deprovision(
                action.device_id, wire_reason, client_request_id=action.client_request_id or str(uuid.uuid4())
            )
        except OutcomeUnknown as exc:
            outcome = await deps.change(
                action,
                UNKNOWN,
                audit.entry("unknown", actor=actor.actor, action=action, error=exc.detail),
                record_anyway=True,
                error_code="outcome_unknown",
                error_message=exc.detail,
                next_check_at=self.first_check(),
            )
        except GraphError as exc:
            outcome = await self._graph_error(action, actor, exc)
        else:
            deps.checkpoint("after_graph")
            outcome = await deps.change(
                action,
                SUBMITTED,
                audit.entry("succeeded", actor=actor.actor, action=action, request_id=response.request_id),
                record_anyway=True,
                graph_request_id=response.request_id,
                next_check_at=self.first_check(),
            )
        final = outcome or await deps.store.get(action.id) or action
        await self.views.update_shared(final)
        if final.state == UNKNOWN:
            await self.views.notify_unknown(final)
        elif final.state == SUBMITTED and final.approver_id:
            await self.views.notify(final, m.proactive_done(final.device_name))
        return final

    async def _graph_error(self, action: Action, actor: Requester, exc: GraphError) -> Action | None:
        deps = self.deps
        if exc.status == 504:
            return await deps.change(
                action,
                UNKNOWN,
                deps.audit.entry("unknown", actor=actor.actor, action=action, status=504, request_id=exc.request_id),
                record_anyway=True,
                error_code="gateway_timeout",
                error_message=exc.message,
            )
        retryable = isinstance(exc, GraphThrottled)
        failed = deps.audit.entry(
            "failed",
            actor=actor.actor,
            action=action,
            status=exc.status,
            code=exc.code,
            message=exc.message,
            request_id=exc.request_id,
            retryable=retryable,
        )
        return await deps.change(
            action,
            State.FAILED,
            failed,
            record_anyway=True,
            error_code=exc.code,
            error_message=_graph_message(exc),
            retryable=retryable,
            graph_request_id=exc.request_id,
        )

    # -- housekeeping: expiry, crash recovery --------------------------------------------------------------

    async def expire_if_due(self, action: Action) -> Action:
        if not action.expired(self.deps.clock()):
            return action
        updated = await self.deps.change(action, EXPIRED, self.deps.audit.entry("expired", actor=None, action=action))
        if updated is None:
            return await self.deps.store.get(action.id) or action
        await self.views.update_shared(updated)
        return updated

    async def sweep(self) -> dict[str, int]:
        """Expire overdue requests, reconcile abandoned submissions, tell requesters about unknown outcomes."""
        store = self.deps.store
        counts = {"expired": 0, "reconciled": 0, "unknown": 0, "notified": 0}
        now = self.deps.clock()
        for action in await store.due_for_expiry(now):
            if (await self.expire_if_due(action)).state == EXPIRED:
                counts["expired"] += 1
        for action in await store.stale_submitting(now):
            result = await self.reconcile(action)
            if result is not None:
                counts["reconciled" if result.state == SUBMITTED else "unknown"] += 1
                if result.batch_id and self.batch_row_settled is not None:
                    self.batch_row_settled(result.batch_id)
        for action in await store.unnotified():
            await self.views.update_shared(action)
            await self.views.notify_unknown(action)
            counts["notified"] += 1
        counts.update(await self.tracking.check_due())
        return counts

    async def reconcile(self, action: Action) -> Action | None:
        """An action left in *submitting* by a crashed process: learn from Graph, never re-send."""
        deps = self.deps
        try:
            details = await deps.devices.details(action.device_id)
        except GraphError:
            details = {}
        record = deprovision_record(details)
        started = parse_time(record.get("startDateTime")) if record else None
        # Only a record that started after this action was committed as *submitting* (allowing for clock skew
        # between this host and Intune) is this action's; an older attempt on the same device is not.
        if record and started is not None and started >= action.updated_at - RECONCILE_CLOCK_SKEW:
            succeeded = deps.audit.entry(
                "succeeded", actor=None, action=action, reconciled=True, action_state=record.get("actionState")
            )
            updated = await deps.change(
                action, SUBMITTED, succeeded, error_code=None, error_message=None, next_check_at=self.first_check()
            )
            if updated is not None:
                await self.views.update_shared(updated)
                await self.views.notify(updated, m.proactive_done(updated.device_name))
            return updated
        updated = await deps.change(
            action,
            UNKNOWN,
            deps.audit.entry("unknown", actor=None, action=action, reconciled=True),
            error_code="interrupted",
            error_message="the bot stopped while the request was being sent",
            next_check_at=self.first_check(),
        )
        if updated is not None:
            await self.views.update_shared(updated)
            await self.views.notify_unknown(updated)
        return updated


def _graph_message(exc: GraphError) -> str:
    return f"{exc.message} (HTTP {exc.status}, {exc.code})" if exc.message else f"HTTP {exc.status} {exc.code}"


def deprovision_record(details: dict[str, Any]) -> dict[str, Any]:
    for item in details.get("deviceActionResults") or []:
        if str(item.get("actionName", "")).lower() == "deprovision":
            return dict(item)
    return {}


def chrome_state(details: dict[str, Any]) -> str:
    for prop in details.get("chromeOSDeviceInfo") or []:
        if str(prop.get("name", "")).lower() in ("devicestatus", "status", "deprovisionstatus"):
            return str(prop.get("value", ""))
    record = deprovision_record(details)
    if record:
        return f"deprovision {record.get('actionState', '')}".strip()
    return ""
