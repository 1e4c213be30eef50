"""The two-person rule for a bulk request: the whole list is one approval request.

Eligible to approve or reject: not the requester, in ``APPROVER_GROUP_ID`` when set, and a role that covers at least
one device of the list. As for one device, the eligible members of a group chat or channel are @mentioned in a notice
and get the approver view through ``refresh.userIds``; ``APPROVAL_CHANNEL_ID`` gets a proactive card (the shared
card: no device, no count). An approver sees only their projection (bot.flow.bulk_projection): the devices they may
read, each marked as covered by their role or not, decided on fresh data — "Approve k of n devices" sends exactly the
k covered devices the card showed; the others are left out and named only to the requester (*not approved by …*).
Rejecting needs a comment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot import messages as m
from bot.batches import AWAITING_APPROVAL, CANCELLED, Batch
from bot.devices import Device
from bot.flow.approvals import channel_reference, eligible_members
from bot.flow.base import MAX_COMMENT, InvokeAnswer, Member, Requester
from bot.flow.bulk_projection import Projection, Projector
from cards import verbs
from cards.deprovision import message_card

if TYPE_CHECKING:
    from bot.flow.bulk import Bulk

log = logging.getLogger("bot.workflow")


class BulkApprovals:
    """Every click on a bulk request by someone other than its requester (their view, approve, reject)."""

    def __init__(self, bulk: Bulk) -> None:
        self.bulk = bulk
        self.deps = bulk.deps
        self.projector = Projector(bulk.deps)

    async def on_invoke(
        self, who: Requester, here: bool, batch: Batch, verb: str, data: dict[str, Any]
    ) -> InvokeAnswer:
        """``here``: the click comes from the request's conversation or the approval channel (a member sees their
        projection). From anywhere else only an eligible approver, or the approver of the run, learns of it."""
        unavailable = InvokeAnswer(card=message_card(m.CARD_TITLE_UNAVAILABLE, [m.card_not_available()]))
        if not (here or batch.state == AWAITING_APPROVAL or who.aad_id == batch.approver_id):
            return unavailable  # nothing to approve: no Graph call for a stranger's click
        batch = await self.bulk._expire_if_due(batch)
        seen = await self.projector.project(batch, who)
        eligible = bool(seen.covered)
        if not (here or eligible or who.aad_id == batch.approver_id):
            return unavailable
        if verb == verbs.BULK_APPROVE and eligible:
            return await self._approve(who, batch, seen, str(data.get("covers") or ""))
        if verb == verbs.BULK_REJECT and eligible:
            return await self._reject(who, batch, seen, data)
        note = None
        if verb in (verbs.BULK_CONFIRM, verbs.BULK_CANCEL):
            note = m.card_only_requester(batch.requester_name)
        elif verb != verbs.REFRESH and batch.state == AWAITING_APPROVAL:
            note = m.card_not_eligible_bulk()
        return InvokeAnswer(card=await self.bulk.cards.personal(batch, seen, approver=eligible, note=note))

    async def eligible(self, who: Requester, batch: Batch) -> bool:
        """Not the requester, in the approvers group if set, and a role that covers at least one ready device."""
        if not await self.projector.may_approve(who, batch):
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
            if members and deps.notifier is not None:
                text = m.bulk_approval_mentions(batch.requester_name, [mb.name for mb in members])
                await deps.notifier.send(batch.reference, text=text, mentions=members)
            channel = deps.settings.approval_channel_id
            if channel and deps.notifier is not None:
                current = await batches.get(batch.id) or batch
                ref = channel_reference(batch.reference, channel, batch.tenant_id)
                card = self.bulk.cards.shared(current, approval_card=True)
                activity_id = await deps.notifier.send(ref, card=card)
                await batches.set_approval_message(batch.id, ref, activity_id)
            await self.bulk.cards.update(batch.id)
        except Exception:
            log.exception("announcing the bulk approval failed", extra={"batch": batch.id})

    async def _eligible_members(self, batch: Batch) -> list[Member]:
        if not batch.is_group:
            return []

        async def eligible(probe: Requester) -> bool:
            return await self.eligible(probe, batch)

        return await eligible_members(self.deps, batch.reference, batch.requester_id, batch.tenant_id, eligible)

    async def _approve(self, who: Requester, batch: Batch, seen: Projection, covers: str) -> InvokeAnswer:
        """Send exactly the devices the approver's view showed as covered (fresh from Intune); the list's other
        devices are left out, named only to the requester (*not approved by …*). A view that no longer matches
        (``covers``) sends nothing and shows the approver the list as it stands."""
        if covers != seen.digest:
            note = m.card_bulk_approval_changed()
            return InvokeAnswer(card=await self.bulk.cards.personal(batch, seen, approver=True, note=note))
        items = [dict(i) for i in batch.items]
        for item in items:
            if item["class"] != "ready":
                continue
            fresh = seen.covered.get(item["device"]["id"])
            if fresh is not None:
                item["device"] = fresh
            else:
                item.update({"class": "not_approved", "detail": m.bulk_not_approved_by(who.name)})
        started = await self.bulk.start(batch, items, reason=batch.reason or "", approver=who)
        current = started or await self.bulk.batches.get(batch.id) or batch
        answer = await self.bulk.cards.personal(current, seen.decided())
        if started is None:
            return InvokeAnswer(card=answer)
        if self.deps.notifier is not None:
            await self.deps.notifier.send(batch.reference, text=m.proactive_bulk_approved(who.name))
        return InvokeAnswer(card=answer)

    async def _reject(self, who: Requester, batch: Batch, seen: Projection, data: dict[str, Any]) -> InvokeAnswer:
        comment = " ".join(str(data.get(verbs.COMMENT_INPUT) or "").split())[:MAX_COMMENT]
        if not comment:
            note = m.card_reject_needs_comment()
            return InvokeAnswer(card=await self.bulk.cards.personal(batch, seen, approver=True, note=note))
        updated = await self.bulk.batches.transition(
            batch, CANCELLED, approver_id=who.aad_id, approver_name=who.name, comment=comment
        )
        if updated is None:
            current = await self.bulk.batches.get(batch.id) or batch
            return InvokeAnswer(card=await self.bulk.cards.personal(current, seen.decided()))
        for item in batch.items:
            if item["class"] == "ready":
                await self.deps.audit.record(
                    "rejected", actor=who.actor, device=item["device"], comment=comment, batch_id=batch.id
                )
        await self.bulk.cards.update(batch.id)
        if self.deps.notifier is not None:
            await self.deps.notifier.send(batch.reference, text=m.proactive_bulk_rejected(who.name, comment))
        return InvokeAnswer(card=await self.bulk.cards.personal(updated, seen.decided()))
