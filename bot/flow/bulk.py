"""``deprovision`` + a list: look every entry up (batched), classify, one summary card, confirm once.

Classes (``messages.BULK_CLASSES``): *ready*; *not found* — one uniform class for a device that does not exist and one
the requester may not read (graph-intune.md §16: nothing tells them apart); *ambiguous* (several readable devices, the
card says "use the serial number"); *incomplete* (Graph's answer was too large to check); *not ChromeOS*; *denied*
(the requester's role does not cover it); *busy* (another request holds it, or it is already deprovisioned); and
*duplicate* (the same device as an earlier entry, e.g. by name and by serial). OS, in-flight state and the denial are
worked out only for devices the requester may read. The card carries only the batch id; the list is server state.

Confirming re-reads every ready device and re-checks the role in one batched pass (devices that changed are left out,
visibly), then writes one *queued* action row per device in the same transaction as the batch's compare-and-set
(bot.batches) and starts the runner (bot.flow.bulk_run). In peer mode the whole list is one approval request; the
rows are written when a second person approves, and devices their role does not cover are left out, visibly.

Only the requester sees the list as classified; every other click goes to bot.flow.bulk_approve, which shows the
viewer their projection (bot.flow.bulk_projection). In a group chat or channel the message itself is the shared card
(no device, no count): each person's own view comes by refresh.
"""

from __future__ import annotations

import json
from typing import Any

from bot import messages as m
from bot.audit import Actor, Entry
from bot.batches import AWAITING_APPROVAL, EXPIRED, REQUESTED, RUNNING, Batch, BatchStore
from bot.devices import Device, clean_query
from bot.errors import InvalidInput
from bot.flow.base import (
    ACTION_ID_RE,
    Conversation,
    Deps,
    InvokeAnswer,
    Reply,
    Requester,
    Viewer,
    base_conversation,
    new_id,
)
from bot.flow.bulk_approve import BulkApprovals
from bot.flow.bulk_classify import Item, classify, dropped_entries, request_entries
from bot.flow.bulk_run import Runner
from bot.flow.bulk_views import BulkViews
from bot.flow.lookup import Finder
from bot.flow.submission import Submission
from bot.flow.views import Views
from bot.store import QUEUED, Action
from cards import verbs
from cards.bulk import BulkView, bulk_card
from cards.deprovision import message_card


class Bulk:
    def __init__(self, deps: Deps, views: Views, submission: Submission) -> None:
        self.deps = deps
        self.views = views
        self.batches = BatchStore(deps.store)
        self.cards = BulkViews(deps, views, self.batches)
        self.runner = Runner(deps, submission, self.cards, self.batches)
        self.finder = Finder(deps)

    # -- the request --------------------------------------------------------------------------------------

    async def request(
        self, who: Requester, conv: Conversation, entries: list[str], reason: str | None, *, quiet: bool = False
    ) -> Reply | None:
        """The summary card for ``entries``; with ``quiet`` (one line split at its spaces) ``None`` when nothing in
        the list is a device the requester may read, so the caller answers as for one device."""
        s = self.deps.settings
        if len(entries) > s.bulk_max:
            return Reply(text=m.bulk_too_many(len(entries), s.bulk_max))
        queries: dict[str, str] = {}
        for number, entry in enumerate(entries, 1):
            try:
                query = clean_query(entry)
            except InvalidInput as exc:
                return Reply(text=m.bulk_entry_invalid(number, entry, exc.problem))
            queries.setdefault(query.casefold(), query)
        found = await self.finder.find(who, list(queries.values()))
        items = await classify(self.batches, found)
        if quiet and all(i["class"] in ("not_found", "incomplete") for i in items):
            return None
        now = self.deps.clock()
        batch = Batch(
            id=new_id(),
            tenant_id=who.tenant_id,
            state=REQUESTED,
            requester_id=who.aad_id,
            requester_name=who.name,
            requester_mri=who.mri,
            conversation_id=conv.id,
            conversation_type=conv.type,
            conversation_ref=_json(conv.reference),
            items_json=_json(items),
            preset_reason=reason,
            created_at=now,
            updated_at=now,
            expires_at=now + s.action_ttl,
        )
        audit = self.deps.audit
        if not conv.is_group and not any(i["class"] == "ready" for i in items):
            # nothing to confirm: no state kept, no batch id named
            await audit.record_entries(request_entries(self.deps, who, conv, None, items))
            view = BulkView(batch.id, REQUESTED, who.name, who.mri, items)
            return Reply(card=bulk_card(view, Viewer.REQUESTER.value))
        # In a group chat or channel every member sees the message: the shared card, the list only by refresh.
        requested = request_entries(self.deps, who, conv, batch.id, items)
        await self.batches.create(batch, then=audit.then_rows(lambda _rows: requested))
        card = self.cards.shared(batch) if conv.is_group else await self.cards.render(batch)
        return Reply(card=card, batch_id=batch.id)

    async def card_sent(self, batch_id: str, activity_id: str) -> None:
        await self.batches.set_card(batch_id, activity_id)

    # -- clicks -------------------------------------------------------------------------------------------

    async def on_invoke(self, who: Requester, conv: Conversation, verb: str, data: dict[str, Any]) -> InvokeAnswer:
        batch_id = str(data.get("batchId") or "")
        batch = await self.batches.get(batch_id) if ACTION_ID_RE.match(batch_id) else None
        if batch is None or batch.tenant_id != who.tenant_id:
            return InvokeAnswer(card=message_card(m.CARD_TITLE_EXPIRED, [m.card_unknown_request()]))
        if who.aad_id != batch.requester_id:
            here = base_conversation(conv.id) == base_conversation(batch.conversation_id) or (
                bool(batch.approval_activity_id)
                and base_conversation(conv.id) == base_conversation(self.deps.settings.approval_channel_id or "")
            )
            return await BulkApprovals(self).on_invoke(who, here, batch, verb, data)
        batch = await self._expire_if_due(batch)
        if verb in (verbs.BULK_APPROVE, verbs.BULK_REJECT) and batch.state == AWAITING_APPROVAL:
            return InvokeAnswer(card=await self.cards.render(batch, note=m.card_cannot_approve_own()))
        if verb == verbs.BULK_CONFIRM and batch.state == REQUESTED:
            return await self._confirm(who, batch, data)
        if verb == verbs.BULK_CANCEL and batch.state in (REQUESTED, AWAITING_APPROVAL, RUNNING):
            return await self._cancel(who, batch)
        return InvokeAnswer(card=await self.cards.render(batch))

    async def _expire_if_due(self, batch: Batch) -> Batch:
        if not batch.expired(self.deps.clock()):
            return batch
        audit = self.deps.audit
        entries = [
            audit.entry("expired", actor=None, device=item["device"], batch_id=batch.id)
            for item in batch.items
            if item["class"] == "ready"
        ]
        updated = await self.batches.transition(batch, EXPIRED, then=audit.then_rows(lambda _rows: entries))
        if updated is None:
            return await self.batches.get(batch.id) or batch
        await self.cards.update(batch.id)
        return updated

    async def recheck(self, who: Requester, items: list[Item], dropped: str) -> list[Item]:
        """Fresh device and role for every ready item (batched); those no longer allowed become ``dropped``."""
        ready = [i for i in items if i["class"] == "ready"]
        fresh = await self.deps.rbac.access_current_many(who.aad_id, [Device.from_snapshot(i["device"]) for i in ready])
        for item, (device, access) in zip(ready, fresh, strict=True):
            ok = device is not None and access is not None and device.is_chromeos
            if ok and device is not None and access is not None and access.readable and access.decision.allowed:
                item["device"] = device.snapshot()
            else:
                item["class"] = dropped
        return items

    async def _confirm(self, who: Requester, batch: Batch, data: dict[str, Any]) -> InvokeAnswer:
        reason = str(data.get(verbs.REASON_INPUT) or "").strip()
        if reason not in self.deps.settings.reason_map:
            return InvokeAnswer(card=await self.cards.render(batch, note=m.card_choose_reason()))
        items = await self.recheck(who, batch.items, "changed")
        if self.deps.settings.approval_mode == "peer":
            audit = self.deps.audit
            entries = [
                audit.entry(
                    "confirmed", actor=who.actor, device=i["device"], reason=reason, batch_id=batch.id, approval="peer"
                )
                for i in items
                if i["class"] == "ready"
            ]
            entries += dropped_entries(self.deps, batch, items, who.actor)
            expires = self.deps.clock() + self.deps.settings.approval_ttl
            waiting = await self.batches.transition(
                batch,
                AWAITING_APPROVAL,
                then=audit.then_rows(lambda _rows: entries),
                reason=reason,
                items_json=_json(items),
                expires_at=expires,
            )
            if waiting is None:
                return InvokeAnswer(card=await self._current(batch))
            await self.cards.update(batch.id)
            self.deps.spawn(BulkApprovals(self).announce(waiting))
            return InvokeAnswer(card=await self.cards.render(waiting))
        started = await self.start(batch, items, reason=reason)
        if started is None:
            return InvokeAnswer(card=await self._current(batch))
        return InvokeAnswer(card=await self.cards.render(started))

    async def start(
        self, batch: Batch, items: list[Item], *, reason: str, approver: Requester | None = None
    ) -> Batch | None:
        """Write every ready device ahead (*queued*) with the batch's move to *running*, then run it.

        The same transaction audits each device written as *confirmed* (or *approved*, by ``approver``) — at the
        click, before anything is sent — and each device left out as *dropped*."""
        now = self.deps.clock()
        rows = [self._row(batch, item, reason, now, approver) for item in items if item["class"] == "ready"]
        changes: dict[str, Any] = {"reason": reason, "items_json": _json(items)}
        if approver is not None:
            changes.update(approver_id=approver.aad_id, approver_name=approver.name)
        audit = self.deps.audit
        actor = approver.actor if approver else Actor(batch.requester_id, batch.requester_name)

        def entries(written: list[Action]) -> list[Entry]:
            if approver is None:
                done = [audit.entry("confirmed", actor=actor, action=row) for row in written]
            else:
                done = [
                    audit.entry("approved", actor=actor, action=r, requester_id=batch.requester_id) for r in written
                ]
            held = {row.device_id for row in written}
            taken = [{**i, "class": "taken"} for i in items if i["class"] == "ready" and i["device"]["id"] not in held]
            return done + dropped_entries(self.deps, batch, [*items, *taken], actor)

        started = await self.batches.start(batch, RUNNING, rows, then=audit.then_rows(entries), **changes)
        if started.batch is None:
            return None
        if started.busy:
            for item in items:
                if item["class"] == "ready" and item["device"]["id"] in started.busy:
                    item["class"] = "taken"
            await self.batches.set_items(batch.id, items)
        self.deps.spawn(self._supersede(started.rows))
        self.runner.start(batch.id)
        return await self.batches.get(batch.id) or started.batch

    def _row(self, batch: Batch, item: Item, reason: str, now: float, approver: Requester | None) -> Action:
        return Action.new(
            id=new_id(),
            tenant_id=batch.tenant_id,
            state=QUEUED,
            requester_id=batch.requester_id,
            requester_name=batch.requester_name,
            requester_mri=batch.requester_mri,
            device=item["device"],
            reason=reason,
            preset_reason=batch.preset_reason,
            conversation_id=batch.conversation_id,
            conversation_type=batch.conversation_type,
            reference=batch.reference,
            created_at=now,
            updated_at=now,
            expires_at=now + self.deps.settings.action_ttl,
            decision=item.get("decision") or {},
            batch_id=batch.id,
            approver_id=approver.aad_id if approver else None,
            approver_name=approver.name if approver else None,
        )

    async def _supersede(self, rows: list[Action]) -> None:
        """One live card per device: older single requests for these devices lose their buttons."""
        for row in rows:
            await self.views.supersede_others(row, confirmed=True)

    async def _cancel(self, who: Requester, batch: Batch) -> InvokeAnswer:
        """Cancel: the batch and every device not sent yet, with their audit events, in one transaction."""
        audit = self.deps.audit
        ready = [i["device"] for i in batch.items if i["class"] == "ready"]

        def cancelled(rows: list[Action]) -> list[Entry]:
            if batch.state == RUNNING:
                return [audit.entry("cancelled", actor=who.actor, action=row) for row in rows]
            return [audit.entry("cancelled", actor=who.actor, device=d, batch_id=batch.id) for d in ready]

        updated = await self.batches.cancel(batch, who.name, then=audit.then_rows(cancelled), approver_name=who.name)
        if updated is None:
            return InvokeAnswer(card=await self._current(batch))
        if batch.state == RUNNING:
            self.runner.start(batch.id)  # finishes it if no runner is left (a crash), else a no-op
        await self.cards.update(batch.id)
        return InvokeAnswer(card=await self.cards.render(updated))

    async def _current(self, batch: Batch) -> dict[str, Any]:
        return await self.cards.render(await self.batches.get(batch.id) or batch)

    # -- housekeeping -------------------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Expire open bulk requests; resume running ones whose runner died (rows already sent are never resent)."""
        expired, stale = await self.batches.due(self.deps.clock())
        for batch in expired:
            await self._expire_if_due(batch)
        for batch in stale:
            self.runner.start(batch.id)
        return {"bulk_expired": len(expired), "bulk_resumed": len(stale)}


def _json(value: Any) -> str:
    return json.dumps(value)
