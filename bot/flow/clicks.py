"""Card clicks (``adaptiveCard/action`` invokes): who may see and do what, checked on the server every time.

The card carries only an unguessable action id; device, reasons and requester come from the store. A click is
accepted only from the requester (approvers for approve/reject), within the TTL, once — repeated or concurrent
clicks get the current card and never a second Graph call (store compare-and-set). Device and role are re-checked
with fresh data at confirmation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages as m
from bot.devices import Device
from bot.errors import GraphError, RbacUnavailable
from bot.flow.approvals import Approvals
from bot.flow.base import (
    ACTION_ID_RE,
    USER_ID_RE,
    Conversation,
    Deps,
    InvokeAnswer,
    Requester,
    Viewer,
    base_conversation,
    unavailable,
)
from bot.flow.commands import Commands
from bot.flow.submission import Submission
from bot.flow.views import Views
from bot.store import AWAITING_APPROVAL, CANCELLED, FAILED, REQUESTED, Action
from cards import verbs
from cards.deprovision import message_card

Handler = Callable[[Requester, Action, Viewer, dict[str, Any]], Awaitable[InvokeAnswer]]


class Clicks:
    def __init__(
        self, deps: Deps, views: Views, submission: Submission, approvals: Approvals, commands: Commands
    ) -> None:
        self.deps = deps
        self.views = views
        self.submission = submission
        self.approvals = approvals
        self.commands = commands
        self._handlers: dict[str, Handler] = {
            verbs.REFRESH: self._refresh,
            verbs.CONFIRM: self._confirm,
            verbs.CANCEL: self._cancel,
            verbs.RETRY: self._retry,
            verbs.APPROVE: self._approve,
            verbs.REJECT: self._reject,
        }

    async def on_invoke(self, who: Requester, conv: Conversation, verb: str, data: dict[str, Any]) -> InvokeAnswer:
        if not USER_ID_RE.match(who.aad_id):
            return InvokeAnswer(error=(403, "Forbidden", m.anonymous_user()))
        try:
            if verb == verbs.SELECT:
                return await self.commands.select(who, conv, data)
            if verb in verbs.BULK or "batchId" in data:
                return await self.commands.bulk.on_invoke(who, conv, verb, data)
            action_id = str(data.get("actionId") or "")
            action = await self.deps.store.get(action_id) if ACTION_ID_RE.match(action_id) else None
            if action is None or action.tenant_id != who.tenant_id:
                return InvokeAnswer(card=message_card(m.CARD_TITLE_EXPIRED, [m.card_unknown_request()]))
            if not await self._may_see(who, conv, action):
                return InvokeAnswer(card=message_card(m.CARD_TITLE_UNAVAILABLE, [m.card_not_available()]))
            action = await self.submission.expire_if_due(action)
            return await self._handlers[verb](who, action, self._viewer(who, action), data)
        except (RbacUnavailable, GraphError) as exc:
            return InvokeAnswer(message=unavailable(exc))

    async def _may_see(self, who: Requester, conv: Conversation, action: Action) -> bool:
        """A request's card goes to its requester, to eligible approvers, and (neutral view) to members of the
        conversation it lives in — the request's own chat or the approval channel. Nobody else learns of it."""
        if who.aad_id == action.requester_id:
            return True
        here = base_conversation(conv.id)
        if here == base_conversation(action.conversation_id):
            return True
        if action.approval_activity_id and here == base_conversation(self.deps.settings.approval_channel_id or ""):
            return True
        if action.state == AWAITING_APPROVAL:
            eligible, _ = await self.approvals.eligible(who, action)
            return eligible
        return False

    @staticmethod
    def _viewer(who: Requester, action: Action) -> Viewer:
        if who.aad_id == action.requester_id:
            return Viewer.REQUESTER
        if action.state == AWAITING_APPROVAL and who.mri in action.approvers:
            return Viewer.APPROVER
        return Viewer.OTHER

    async def _not_yours(self, who: Requester, action: Action, viewer: Viewer) -> InvokeAnswer | None:
        """The one "only the requester may click" check (confirm, cancel, retry)."""
        if viewer == Viewer.REQUESTER:
            return None
        return InvokeAnswer(
            card=await self.views.render(action, viewer, note=m.card_only_requester(action.requester_name))
        )

    async def _refresh(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        if viewer == Viewer.OTHER and action.state == AWAITING_APPROVAL:
            eligible, _ = await self.approvals.eligible(who, action)
            viewer = Viewer.APPROVER if eligible else Viewer.OTHER
        return InvokeAnswer(card=await self.views.render(action, viewer))

    async def _confirm(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        refused = await self._not_yours(who, action, viewer)
        if refused is not None:
            return refused
        if action.state != REQUESTED:
            return InvokeAnswer(card=await self.views.render(action, viewer))
        reason = str(data.get(verbs.REASON_INPUT) or "").strip()
        if reason not in self.deps.settings.reason_map:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=m.card_choose_reason()))
        changed = await self._recheck(who, action)
        if changed is not None:
            return changed
        if self.deps.settings.approval_mode == "peer":
            return await self.approvals.request(who, action, reason)
        return await self.submission.submit(who, action, viewer, reason=reason)

    async def _recheck(self, who: Requester, action: Action) -> InvokeAnswer | None:
        """Fresh device and role at confirmation time; on failure the action fails and the card says why."""
        deps = self.deps
        device, decision = await deps.rbac.check_current(who.aad_id, Device.from_snapshot(action.device))
        event: dict[str, Any]
        if device is None or decision is None or not device.is_chromeos:
            code, message, event = "device_changed", m.card_device_changed(), {"error": "device_changed"}
        elif not decision.allowed:
            code, message = "denied", m.denied(decision, device.name)
            event = {"decision": decision.audit(), "stage": "confirm"}
        else:
            return None
        kind = "failed" if code == "device_changed" else "denied"
        entry = deps.audit.entry(kind, actor=who.actor, action=action, **event)
        updated = await deps.change(action, FAILED, entry, record_anyway=True, error_code=code, error_message=message)
        await self.views.update_shared(updated or action)
        return InvokeAnswer(card=await self.views.render(updated or action, Viewer.REQUESTER))

    async def _cancel(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        refused = await self._not_yours(who, action, viewer)
        if refused is not None:
            return refused
        if action.state not in (REQUESTED, AWAITING_APPROVAL):
            return InvokeAnswer(card=await self.views.render(action, viewer))
        cancelled = self.deps.audit.entry("cancelled", actor=who.actor, action=action)
        updated = await self.deps.change(action, CANCELLED, cancelled, approver_name=who.name)
        if updated is None:
            return InvokeAnswer(card=await self.views.current(action, viewer))
        await self.views.update_shared(updated)
        return InvokeAnswer(card=await self.views.render(updated, viewer))

    async def _retry(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        refused = await self._not_yours(who, action, viewer)
        if refused is not None:
            return refused
        if action.state != FAILED or not action.retryable:
            return InvokeAnswer(card=await self.views.render(action, viewer))
        if self.deps.clock() >= action.expires_at + self.deps.settings.action_ttl:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=m.card_expired()))
        device, decision = await self.deps.rbac.check_current(who.aad_id, Device.from_snapshot(action.device))
        if device is None or decision is None or not device.is_chromeos:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=m.card_device_changed()))
        if not decision.allowed:
            return InvokeAnswer(card=await self.views.render(action, viewer, note=m.denied(decision, device.name)))
        return await self.submission.submit(who, action, viewer)

    async def _approve(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        return await self.approvals.approve(who, action, viewer)

    async def _reject(self, who: Requester, action: Action, viewer: Viewer, data: dict[str, Any]) -> InvokeAnswer:
        return await self.approvals.reject(who, action, viewer, data)
