"""The two-person rule for a bulk request: the whole list is one approval request.

Any eligible person (not the requester; in ``APPROVER_GROUP_ID`` when set) may approve or reject it. At approval the
approver's role is checked against every ready device with fresh data (one batched pass); devices their role does
not cover are left out of what is sent, and the card says so (class *not_approved*). Rejecting needs a comment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot import messages as m
from bot.batches import AWAITING_APPROVAL, CANCELLED, Batch
from bot.flow.base import MAX_COMMENT, InvokeAnswer, Requester, Viewer
from cards import verbs

if TYPE_CHECKING:
    from bot.flow.bulk import Bulk


class BulkApprovals:
    def __init__(self, bulk: Bulk) -> None:
        self.bulk = bulk
        self.deps = bulk.deps

    async def on_invoke(self, who: Requester, batch: Batch, verb: str, data: dict[str, Any]) -> InvokeAnswer:
        eligible = batch.state == AWAITING_APPROVAL and await self.bulk._may_approve(who, batch)
        viewer = Viewer.APPROVER if eligible else Viewer.OTHER
        if verb == verbs.REFRESH or not eligible:
            note = None
            if verb != verbs.REFRESH and batch.state == AWAITING_APPROVAL:
                note = m.card_cannot_approve_own() if who.aad_id == batch.requester_id else m.card_not_eligible_bulk()
            return InvokeAnswer(card=await self.bulk.cards.render(batch, viewer, note=note))
        if verb == verbs.BULK_APPROVE:
            return await self._approve(who, batch)
        return await self._reject(who, batch, data)

    async def _approve(self, who: Requester, batch: Batch) -> InvokeAnswer:
        items = await self.bulk.recheck(who, batch.items, "not_approved")
        if not any(i["class"] == "ready" for i in items):
            note = m.card_not_eligible_bulk()
            return InvokeAnswer(card=await self.bulk.cards.render(batch, Viewer.APPROVER, note=note))
        started = await self.bulk.start(batch, items, reason=batch.reason or "", approver=who)
        if started is None:
            current = await self.bulk.batches.get(batch.id) or batch
            return InvokeAnswer(card=await self.bulk.cards.render(current, Viewer.OTHER))
        if self.deps.notifier is not None:
            ready = sum(1 for i in items if i["class"] == "ready")
            await self.deps.notifier.send(batch.reference, text=m.proactive_approved(f"{ready} devices", who.name))
        return InvokeAnswer(card=await self.bulk.cards.render(started, Viewer.OTHER))

    async def _reject(self, who: Requester, batch: Batch, data: dict[str, Any]) -> InvokeAnswer:
        comment = " ".join(str(data.get(verbs.COMMENT_INPUT) or "").split())[:MAX_COMMENT]
        if not comment:
            note = m.card_reject_needs_comment()
            return InvokeAnswer(card=await self.bulk.cards.render(batch, Viewer.APPROVER, note=note))
        updated = await self.bulk.batches.transition(
            batch, CANCELLED, approver_id=who.aad_id, approver_name=who.name, comment=comment
        )
        if updated is None:
            current = await self.bulk.batches.get(batch.id) or batch
            return InvokeAnswer(card=await self.bulk.cards.render(current, Viewer.OTHER))
        for item in batch.items:
            if item["class"] == "ready":
                await self.deps.audit.record(
                    "rejected", actor=who.actor, device=item["device"], comment=comment, batch_id=batch.id
                )
        await self.bulk.cards.update(batch.id)
        if self.deps.notifier is not None:
            text = m.proactive_rejected(f"{len(batch.items)} devices", who.name, comment)
            await self.deps.notifier.send(batch.reference, text=text)
        return InvokeAnswer(card=await self.bulk.cards.render(updated, Viewer.OTHER))
