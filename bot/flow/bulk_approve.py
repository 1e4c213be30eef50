"""The two-person rule for a bulk request: the whole list is one approval request.

Eligible to approve or reject: not the requester, in ``APPROVER_GROUP_ID`` when set, and a role that covers at least
one device of the list. As for one device, the eligible members of a group chat or channel are @mentioned in a notice
and get the approver view through ``refresh.userIds``; ``APPROVAL_CHANNEL_ID`` gets a proactive card. At approval the
approver's role is checked against every ready device with fresh data (one batched pass); devices their role does
not cover are left out of what is sent, and the card says so (class *not_approved*). Rejecting needs a comment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot import messages as m
from bot.batches import AWAITING_APPROVAL, CANCELLED, Batch
from bot.devices import Device
from bot.flow.approvals import MAX_MENTIONED_APPROVERS, channel_reference
from bot.flow.base import MAX_COMMENT, USER_ID_RE, InvokeAnswer, Member, Requester, Viewer
from cards import verbs

if TYPE_CHECKING:
    from bot.flow.bulk import Bulk

log = logging.getLogger("bot.workflow")


class BulkApprovals:
    def __init__(self, bulk: Bulk) -> None:
        self.bulk = bulk
        self.deps = bulk.deps

    async def on_invoke(self, who: Requester, batch: Batch, verb: str, data: dict[str, Any]) -> InvokeAnswer:
        awaiting = batch.state == AWAITING_APPROVAL
        if verb == verbs.REFRESH and who.mri in batch.approvers and who.aad_id != batch.requester_id:
            eligible = awaiting  # found eligible when the request was announced; approving checks again
        elif verb == verbs.BULK_APPROVE:
            eligible = awaiting and await self.bulk._may_approve(who, batch)  # the role: per device, in _approve
        else:
            eligible = awaiting and await self.eligible(who, batch)
        viewer = Viewer.APPROVER if eligible else Viewer.OTHER
        if verb == verbs.REFRESH or not eligible:
            note = None
            if verb != verbs.REFRESH and awaiting:
                note = m.card_cannot_approve_own() if who.aad_id == batch.requester_id else m.card_not_eligible_bulk()
            return InvokeAnswer(card=await self.bulk.cards.render(batch, viewer, note=note))
        if verb == verbs.BULK_APPROVE:
            return await self._approve(who, batch)
        return await self._reject(who, batch, data)

    async def eligible(self, who: Requester, batch: Batch) -> bool:
        """Not the requester, in the approvers group if set, and a role that covers at least one ready device."""
        if not await self.bulk._may_approve(who, batch):
            return False
        devices = [Device.from_snapshot(i["device"]) for i in batch.items if i["class"] == "ready"]
        accesses = await self.deps.rbac.access_stepwise(who.aad_id, devices) if devices else []
        return any(a.readable and a.decision.allowed for a in accesses)

    async def announce(self, batch: Batch) -> None:
        """Tell the eligible approvers among the conversation's members (@mention; their view through refresh) and
        post the request to the approval channel if one is set — as for one device (bot.flow.approvals)."""
        deps, batches = self.deps, self.bulk.batches
        try:
            members = await self._eligible_members(batch)
            await batches.set_approvers(batch.id, [member.mri for member in members])
            ready = sum(1 for i in batch.items if i["class"] == "ready")
            if members and deps.notifier is not None:
                text = m.bulk_approval_mentions(batch.requester_name, ready, [mb.name for mb in members])
                await deps.notifier.send(batch.reference, text=text, mentions=members)
            channel = deps.settings.approval_channel_id
            if channel and deps.notifier is not None:
                current = await batches.get(batch.id) or batch
                ref = channel_reference(batch.reference, channel, batch.tenant_id)
                card = await self.bulk.cards.render(current, Viewer.OTHER, approval_card=True)
                activity_id = await deps.notifier.send(ref, card=card)
                await batches.set_approval_message(batch.id, ref, activity_id)
            await self.bulk.cards.update(batch.id)
        except Exception:
            log.exception("announcing the bulk approval failed", extra={"batch": batch.id})

    async def _eligible_members(self, batch: Batch) -> list[Member]:
        if self.deps.notifier is None or not batch.is_group:
            return []
        found: list[Member] = []
        for member in (await self.deps.notifier.members(batch.reference))[:100]:
            if member.aad_id == batch.requester_id or not USER_ID_RE.match(member.aad_id):
                continue
            if await self.eligible(Requester(member.aad_id, member.name, member.mri, batch.tenant_id), batch):
                found.append(member)
            if len(found) >= MAX_MENTIONED_APPROVERS:
                break
        return found

    async def _approve(self, who: Requester, batch: Batch) -> InvokeAnswer:
        items = await self.bulk.recheck(who, batch.items, "not_approved")
        if not any(i["class"] == "ready" for i in items):
            note = m.card_not_eligible_bulk()
            return InvokeAnswer(card=await self.bulk.cards.render(batch, Viewer.APPROVER, note=note))
        started = await self.bulk.start(batch, items, reason=batch.reason or "", approver=who)
        if started is None:
            current = await self.bulk.batches.get(batch.id) or batch
            return InvokeAnswer(card=await self.bulk.cards.render(current, Viewer.OTHER))
        for row in await self.bulk.batches.rows(batch.id):
            await self.deps.audit.record("approved", actor=who.actor, action=row, requester_id=batch.requester_id)
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
