"""Rendering a request's card for a viewer, updating the shared messages in place, telling the requester."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot import messages as m
from bot.flow.base import Deps, Viewer
from bot.store import REQUESTED, SUPERSEDED, Action
from cards.deprovision import ActionView, action_card, message_card


class Views:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        #: A device of a bulk request changed: its batch card is refreshed (throttled) instead of a card of its own.
        self.batch_changed: Callable[[str], None] | None = None

    async def render(
        self, action: Action, viewer: Viewer, *, note: str | None = None, approval_card: bool = False
    ) -> dict[str, Any]:
        if action.state == SUPERSEDED:
            lines = m.card_superseded(action.device_name, action.device_serial, action.requester_name)
            return message_card(m.CARD_TITLE_SUPERSEDED, lines)
        try:
            tag_names = (await self.deps.rbac.catalog()).tag_names
        except Exception:
            tag_names = {}
        view = ActionView(
            action_id=action.id,
            state=action.state,
            requester_name=action.requester_name,
            requester_mri=action.requester_mri,
            device=action.device,
            reason=action.reason,
            preset_reason=action.preset_reason,
            expires_at=action.expires_at,
            updated_at=action.updated_at,
            settled_at=action.settled_at,
            error_code=action.error_code,
            intune_state=action.intune_state,
            approval_channel=bool(self.deps.settings.approval_channel_id),
            approver_name=action.approver_name,
            comment=action.comment,
            graph_request_id=action.graph_request_id,
            error_message=action.error_message,
            retryable=action.retryable,
            is_group=action.is_group or approval_card,
            approval_mode=self.deps.settings.approval_mode == "peer" or bool(action.approver_id),
            approver_mris=action.approvers,
            tag_names=tag_names,
            reasons=tuple(self.deps.settings.reason_map),
            note=note,
        )
        return action_card(view, viewer)

    async def current(self, action: Action, viewer: Viewer) -> dict[str, Any]:
        """Another click or instance won a race: the card as the request stands now."""
        return await self.render(await self.deps.store.get(action.id) or action, viewer)

    async def busy(self, action: Action) -> dict[str, Any]:
        """The requester's card with the one "device busy" answer: another request holds the device."""
        holder = await self.deps.store.inflight_for_device(action.device_id)
        note = m.already_in_flight(
            action.device_name, holder.requester_name if holder else "", holder.state if holder else ""
        )
        return await self.render(action, Viewer.REQUESTER, note=note)

    async def update_shared(self, action: Action) -> None:
        """PUT the shared message(s) so every client drops stale buttons."""
        notifier = self.deps.notifier
        if action.batch_id and self.batch_changed is not None:
            self.batch_changed(action.batch_id)
        if notifier is None:
            return
        if action.card_activity_id:
            viewer = Viewer.OTHER if action.is_group else Viewer.REQUESTER
            await notifier.update(action.reference, action.card_activity_id, await self.render(action, viewer))
        approval = action.approval_reference
        if approval and action.approval_activity_id:
            card = await self.render(action, Viewer.OTHER, approval_card=True)
            await notifier.update(approval, action.approval_activity_id, card)

    async def supersede_others(self, action: Action, *, confirmed: bool = False) -> None:
        """``action`` is the device's newest request (or, ``confirmed``, the one confirmed): every other request
        still waiting for its requester's confirmation — older ones only, for a new request, so two requests created
        at once cannot supersede each other — is superseded, and each of its cards loses its buttons in place."""
        store = self.deps.store
        before = None if confirmed else action.created_at
        for older in await store.requested_for_device(action.device_id, except_id=action.id, created_before=before):
            superseded = self.deps.audit.entry("superseded", actor=None, by=action.id)
            updated = await self.deps.change(older, SUPERSEDED, superseded, from_states=(REQUESTED,))
            if updated is None:
                continue  # its requester confirmed or cancelled it meanwhile
            await self.update_shared(updated)

    async def notify(self, action: Action, text: str) -> None:
        """A proactive message about ``action``; a bulk request's devices report on their batch card instead."""
        if self.deps.notifier is not None and not action.batch_id:
            await self.deps.notifier.send(action.reference, text=text)

    async def notify_unknown(self, action: Action) -> None:
        notifier = self.deps.notifier
        if notifier is None:
            return
        if not await self.deps.store.claim_notification(action.id):
            return  # another instance (or an earlier sweep) already told the requester
        if action.batch_id:
            return  # the batch card lists the device as "outcome unknown"
        sent = await notifier.send(action.reference, text=m.proactive_unknown(action.device_name))
        if sent is None:
            await self.deps.store.claim_notification(action.id, claimed=False)  # try again on the next sweep
