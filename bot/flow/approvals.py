"""The optional two-person rule: waiting for approval, finding approvers, approve and reject."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages as m
from bot.devices import Device
from bot.flow.base import MAX_COMMENT, USER_ID_RE, Deps, InvokeAnswer, Member, Requester, Viewer
from bot.flow.submission import Submission
from bot.flow.views import Views
from bot.rbac import Decision
from bot.store import AWAITING_APPROVAL, CANCELLED, Action, DeviceBusy
from cards import verbs

log = logging.getLogger("bot.workflow")

MAX_MENTIONED_APPROVERS = 59  # refresh.userIds holds 60 users, the requester is one of them


def channel_reference(reference: dict[str, Any], channel: str, tenant_id: str) -> dict[str, Any]:
    """A conversation reference for a proactive post in the approval channel (``APPROVAL_CHANNEL_ID``)."""
    ref = {**reference}
    ref["conversation"] = {"id": channel, "conversationType": "channel", "isGroup": True, "tenantId": tenant_id}
    ref.pop("activityId", None)
    return ref


class Approvals:
    def __init__(self, deps: Deps, views: Views, submission: Submission) -> None:
        self.deps = deps
        self.views = views
        self.submission = submission

    async def request(self, who: Requester, action: Action, reason: str) -> InvokeAnswer:
        """The requester confirmed in peer mode: the request waits for a second person."""
        now = self.deps.clock()
        confirmed = self.deps.audit.entry("confirmed", actor=who.actor, reason=reason, approval="peer")
        try:
            updated = await self.deps.change(
                action,
                AWAITING_APPROVAL,
                confirmed,
                reason=reason,
                expires_at=now + self.deps.settings.approval_ttl,
                now=now,
            )
        except DeviceBusy:
            return InvokeAnswer(card=await self.views.busy(action))
        if updated is None:
            return InvokeAnswer(card=await self.views.current(action, Viewer.REQUESTER))
        await self.views.supersede_others(updated, confirmed=True)
        self.deps.spawn(self.announce(updated))
        return InvokeAnswer(card=await self.views.render(updated, Viewer.REQUESTER))

    async def announce(self, action: Action) -> None:
        """Find eligible approvers among the conversation's members; post to the approval channel if set."""
        deps = self.deps
        try:
            members = await self._eligible_members(action)
            mris = [member.mri for member in members]
            await deps.store.set_approvers(action.id, mris)
            if members and deps.notifier is not None:
                # Tell the eligible approvers among the chat's members, by name (Teams notifies a mention).
                text = m.approval_mentions(action.requester_name, action.device_name, [mb.name for mb in members])
                await deps.notifier.send(action.reference, text=text, mentions=members)
            action = await deps.store.get(action.id) or action
            channel = deps.settings.approval_channel_id
            if channel and deps.notifier is not None:
                ref = channel_reference(action.reference, channel, action.tenant_id)
                card = await self.views.render(action, Viewer.OTHER, approval_card=True)
                activity_id = await deps.notifier.send(ref, card=card)
                await deps.store.set_approval_message(action.id, ref, activity_id)
                action = await deps.store.get(action.id) or action
            await self.views.update_shared(action)
        except Exception:
            log.exception("announcing the approval failed", extra={"action": action.id})

    async def _eligible_members(self, action: Action) -> list[Member]:
        if not action.is_group:
            return []

        async def eligible(probe: Requester) -> bool:
            return (await self.eligible(probe, action))[0]

        return await eligible_members(self.deps, action.reference, action.requester_id, action.tenant_id, eligible)

    async def eligible(self, who: Requester, action: Action, *, fresh: bool = False) -> tuple[bool, str]:
        """Not the requester, in ``APPROVER_GROUP_ID`` if set, and passes the same role check on the same device.

        With ``fresh`` (at approval time) the device is re-read from Intune in the same round trip.
        """
        deps = self.deps
        if who.aad_id == action.requester_id:
            return False, m.card_cannot_approve_own()
        group = deps.settings.approver_group_id
        if group and not await deps.rbac.is_group_member(who.aad_id, group):
            return False, m.card_not_eligible(m.not_eligible_group())
        snapshot = Device.from_snapshot(action.device)
        device: Device | None = snapshot
        decision: Decision | None
        if fresh:
            device, decision = await deps.rbac.check_current(who.aad_id, snapshot)
        else:
            decision = await deps.rbac.check(who.aad_id, snapshot)
        if device is None or decision is None or not device.is_chromeos:
            return False, m.card_device_changed()
        if not decision.allowed:
            return False, m.card_not_eligible(m.not_eligible_role(decision, device.name))
        return True, ""

    async def approve(self, who: Requester, action: Action, viewer: Viewer) -> InvokeAnswer:
        if action.state != AWAITING_APPROVAL:
            return InvokeAnswer(card=await self.views.render(action, viewer))
        eligible, why = await self.eligible(who, action, fresh=True)
        if not eligible:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=why))
        return await self.submission.submit(who, action, Viewer.OTHER, approver=who)

    async def reject(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        if action.state != AWAITING_APPROVAL:
            return InvokeAnswer(card=await self.views.render(action, viewer))
        eligible, why = await self.eligible(who, action)
        if not eligible:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=why))
        comment = " ".join(str(data.get(verbs.COMMENT_INPUT) or "").split())[:MAX_COMMENT]
        if not comment:
            return InvokeAnswer(
                card=await self.views.render(action, Viewer.APPROVER, note=m.card_reject_needs_comment())
            )
        rejected = self.deps.audit.entry("rejected", actor=who.actor, action=action, comment=comment)
        updated = await self.deps.change(
            action, CANCELLED, rejected, approver_id=who.aad_id, approver_name=who.name, comment=comment
        )
        if updated is None:
            return InvokeAnswer(card=await self.views.current(action, Viewer.OTHER))
        await self.views.update_shared(updated)
        await self.views.notify(updated, m.proactive_rejected(updated.device_name, who.name, comment))
        return InvokeAnswer(card=await self.views.render(updated, Viewer.OTHER))


async def eligible_members(
    deps: Deps,
    reference: dict[str, Any],
    requester_id: str,
    tenant_id: str,
    eligible: Callable[[Requester], Awaitable[bool]],
) -> list[Member]:
    """The conversation's members (first 100) who are ``eligible`` to approve, the requester aside — at most
    :data:`MAX_MENTIONED_APPROVERS` (one request or a bulk list; they are @mentioned and listed in refresh.userIds)."""
    if deps.notifier is None:
        return []
    found: list[Member] = []
    for member in (await deps.notifier.members(reference))[:100]:
        if member.aad_id == requester_id or not USER_ID_RE.match(member.aad_id):
            continue
        if await eligible(Requester(member.aad_id, member.name, member.mri, tenant_id)):
            found.append(member)
        if len(found) >= MAX_MENTIONED_APPROVERS:
            break
    return found
