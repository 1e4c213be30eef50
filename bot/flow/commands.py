"""Typed chat commands: ``deprovision``, ``status``, ``history``, ``pending``, ``help`` — and the device choice.

A requester learns about a device only what Intune would show them (graph-intune.md §16): every command looks
up exactly, then keeps only the devices the requester can read; not found and not readable get one answer.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from bot import commands as cmd
from bot import messages as m
from bot.devices import Device
from bot.errors import GraphError, InvalidInput, RbacUnavailable
from bot.flow.base import (
    ACTION_ID_RE,
    USER_ID_RE,
    Conversation,
    Deps,
    InvokeAnswer,
    Reply,
    Requester,
    Viewer,
    unavailable,
)
from bot.flow.submission import chrome_state
from bot.flow.views import Views
from bot.intune_record import deprovision_audits, read_record
from bot.rbac import Access
from bot.store import EXPIRED, OPEN_STATES, REQUESTED, Action, Selection
from cards.deprovision import message_card
from cards.info import help_card, history_card, pending_card, selection_card, status_card

Found = list[tuple[Device, Access]]


def _final(action: Action, now: float) -> str:
    """The state history shows: a request past its deadline is *expired* even before the sweep has moved it."""
    return EXPIRED if action.state in OPEN_STATES and action.expired(now) else action.state


def _retitled(card: dict[str, Any], query: str, count: int) -> dict[str, Any]:
    """The "which one?" card worded as "did you mean": its title and intro swapped for the suggestion texts.

    cards/ has no suggestion card (yet); the choice card's buttons, data and layout are exactly what is needed.
    """
    swap = {
        m.CARD_SELECT_TITLE: m.CARD_SUGGEST_TITLE,
        m.ambiguous(query, count): m.suggest_intro(query),
    }
    for element in card.get("body", []):
        if isinstance(element, dict) and element.get("text") in swap:
            element["text"] = swap[element["text"]]
    card["fallbackText"] = m.suggest_intro(query)[:300]
    return card


def _command_name(command: cmd.Command) -> str:
    return {cmd.Status: "status", cmd.History: "history", cmd.Pending: "pending"}.get(type(command), "deprovision")


class Commands:
    def __init__(self, deps: Deps, views: Views) -> None:
        self.deps = deps
        self.views = views

    async def on_message(self, who: Requester, conv: Conversation, text: str | None) -> Reply:
        command = cmd.parse(text)
        if isinstance(command, cmd.Help):
            return Reply(card=help_card())
        if isinstance(command, cmd.Invalid):
            return Reply(text=m.usage(command.problem, command.command))
        if isinstance(command, cmd.Unknown):
            return Reply(text=m.unknown_command(command.text, command.suggestion))
        if not USER_ID_RE.match(who.aad_id):
            return Reply(text=m.anonymous_user())
        try:
            if isinstance(command, cmd.Deprovision):
                return await self._deprovision(who, conv, command)
            if isinstance(command, cmd.Status):
                return await self._status(who, command.target)
            if isinstance(command, cmd.History):
                return await self._history(who, command.target)
            return await self._pending(who)
        except InvalidInput as exc:
            return Reply(text=m.usage(exc.problem, _command_name(command)))
        except (RbacUnavailable, GraphError) as exc:
            return Reply(text=unavailable(exc))

    async def card_sent(self, reply: Reply, activity_id: str | None) -> None:
        """Remember the message id of a card just sent (to update it in place; to trust clicks on it)."""
        if not activity_id:
            return
        if reply.action_id:
            await self.deps.store.update_fields(reply.action_id, card_activity_id=activity_id)
        if reply.selection_id:
            await self.deps.store.selection_sent(reply.selection_id, activity_id)

    # -- deprovision -------------------------------------------------------------------------------------

    async def _deprovision(self, who: Requester, conv: Conversation, command: cmd.Deprovision) -> Reply:
        if command.reason_text:
            return Reply(text=m.unknown_reason(command.reason_text))
        found = await self._readable(who, command.target, suggest=True, reason=command.reason)
        if isinstance(found, Reply):
            return found
        if len(found) == 1:
            device, access = found[0]
            return await self.request(who, conv, device, command.reason, access=access)
        return await self._offer_choice(who, command.target, found, command.reason)

    async def _readable(
        self, who: Requester, target: str, *, suggest: bool = False, reason: str | None = None
    ) -> Found | Reply:
        """The devices matching ``target`` exactly that the requester could see in Intune (least disclosure).

        Not found and not readable get the same answer; so does a requester who may read no device at all (the
        lookup runs, but nothing of its result reaches them).
        """
        result = await self.deps.devices.find(target)
        candidates = [result.device] if result.device is not None else list(result.candidates)
        readable: Found = []
        if candidates:
            accesses = await self.deps.rbac.access_many(who.aad_id, candidates)
            readable = [(d, a) for d, a in zip(candidates, accesses, strict=True) if a.readable]
        if readable:
            return readable
        if result.incomplete and not candidates:
            return Reply(text=m.lookup_incomplete(result.query))
        if suggest:
            # Computed the same way whether an unreadable exact match exists or nothing does (least disclosure).
            offer = await self._suggest(who, result.query, reason)
            if offer is not None:
                return offer
        return Reply(text=m.not_found(result.query))

    async def _suggest(self, who: Requester, query: str, reason: str | None) -> Reply | None:
        """ "Did you mean …?": near misses the requester can read, as buttons that start the normal flow.

        Nothing fuzzy reaches a confirmation: a button only picks a device (a server-side selection, as for "which
        one?"); the request that follows runs every check again on that exact device.
        """
        near = await self.deps.devices.near(query)
        if not near:
            return None
        accesses = await self.deps.rbac.access_many(who.aad_id, near)
        readable = [(d, a) for d, a in zip(near, accesses, strict=True) if a.readable][: m.MAX_SUGGESTIONS]
        if not readable:
            return None
        selection_id = await self._new_selection(who, readable, reason)
        candidates = [d.snapshot() for d, _ in readable]
        card = selection_card(query, len(readable), selection_id, candidates)
        return Reply(card=_retitled(card, query, len(readable)), selection_id=selection_id)

    async def _new_selection(self, who: Requester, found: Found, reason: str | None) -> str:
        now = self.deps.clock()
        selection = Selection(
            id=secrets.token_urlsafe(18),
            tenant_id=who.tenant_id,
            requester_id=who.aad_id,
            candidates=[d.snapshot() for d, _ in found],
            preset_reason=reason,
            created_at=now,
            expires_at=now + self.deps.settings.action_ttl,
        )
        await self.deps.store.create_selection(selection)
        return selection.id

    async def _offer_choice(self, who: Requester, query: str, found: Found, reason: str | None) -> Reply:
        """Several readable devices match: a "which one?" card listing only those."""
        selection_id = await self._new_selection(who, found, reason)
        card = selection_card(query, len(found), selection_id, [d.snapshot() for d, _ in found])
        return Reply(card=card, selection_id=selection_id)

    async def request(
        self,
        who: Requester,
        conv: Conversation,
        device: Device,
        reason: str | None,
        *,
        access: Access | None = None,
        card_activity_id: str | None = None,
    ) -> Reply:
        """Checks, then a new action in *requested* with its confirmation card."""
        deps = self.deps
        access = access or await deps.rbac.access(who.aad_id, device)
        if not access.readable:
            return Reply(text=m.not_found(device.name))
        if not device.is_chromeos:
            return Reply(text=m.not_chromeos(device.name, device.operating_system))
        busy = await deps.store.inflight_for_device(device.id)
        if busy is not None:
            return Reply(text=m.already_in_flight(device.name, busy.requester_name, busy.state))
        decision = access.decision
        if not decision.allowed:
            await deps.audit.record(
                "denied",
                actor=who.actor,
                device={"id": device.id, "name": device.name, "serial": device.serial},
                conversation_id=conv.id,
                decision=decision.audit(),
            )
            return Reply(text=m.denied(decision, device.name))
        now = deps.clock()
        action = Action.new(
            id=secrets.token_urlsafe(18),
            tenant_id=who.tenant_id,
            state=REQUESTED,
            requester_id=who.aad_id,
            requester_name=who.name,
            requester_mri=who.mri,
            device=device.snapshot(),
            preset_reason=reason,
            conversation_id=conv.id,
            conversation_type=conv.type,
            reference=conv.reference,
            card_activity_id=card_activity_id,
            created_at=now,
            updated_at=now,
            expires_at=now + deps.settings.action_ttl,
            decision=decision.audit(),
        )
        requested = deps.audit.entry("requested", actor=who.actor, decision=decision.audit())
        await deps.store.create(action, then=deps.audit.then(requested))
        await self.views.supersede_others(action)  # one live card per device: the newest
        viewer = Viewer.OTHER if conv.is_group else Viewer.REQUESTER
        return Reply(card=await self.views.render(action, viewer), action_id=action.id)

    async def select(self, who: Requester, conv: Conversation, data: dict[str, Any]) -> InvokeAnswer:
        """A click on the "which device?" card: single use, requester-bound, expiring."""
        store = self.deps.store
        used = InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_selection_used()]))
        selection_id = str(data.get("selectionId") or "")
        selection = await store.get_selection(selection_id) if ACTION_ID_RE.match(selection_id) else None
        if (
            selection is None
            or selection.tenant_id != who.tenant_id
            or selection.requester_id != who.aad_id
            or self.deps.clock() >= selection.expires_at
        ):
            return used
        try:
            index = int(data.get("index", -1))
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(selection.candidates) or await store.take_selection(selection.id) is None:
            return used
        device = await self.deps.devices.get(str(selection.candidates[index].get("id", "")))
        if device is None:
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_device_changed()]))
        # The new card takes the selection card's place: the message id stored when that card was sent (a click's
        # replyToId is never trusted for this — it could name any message in the chat).
        reply = await self.request(
            who, conv, device, selection.preset_reason, card_activity_id=selection.card_activity_id
        )
        if reply.card is None:
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [reply.text or ""]))
        action = await store.get(reply.action_id) if reply.action_id else None
        if action is None:
            return InvokeAnswer(card=reply.card)
        await self.views.update_shared(action)
        return InvokeAnswer(card=await self.views.render(action, Viewer.REQUESTER))

    # -- status, history, pending ----------------------------------------------------------------------

    async def _one_readable(self, who: Requester, target: str) -> Device | Reply:
        """Exactly one readable device for ``status``/``history``, or the answer to give instead."""
        found = await self._readable(who, target)
        if isinstance(found, Reply):
            return found
        if len(found) > 1:
            return Reply(text=m.ambiguous(target.strip(), len(found)))
        return found[0][0]

    async def _status(self, who: Requester, target: str) -> Reply:
        device = await self._one_readable(who, target)
        if isinstance(device, Reply):
            return device
        details, audits = await asyncio.gather(
            self.deps.devices.details(device.id), deprovision_audits(self.deps.graph, device.id)
        )
        record = read_record(audits, details, device.id, 0.0, self.deps.settings)
        intune = m.intune_record(record.outcome, record.initiated_by, record.at) if record.outcome != "absent" else ""
        last = await self.deps.store.latest_for_device(device.id)
        catalog = await self.deps.rbac.catalog()
        return Reply(
            card=status_card(
                device.snapshot(),
                catalog.tag_names,
                operating_system=f"{device.operating_system} {device.os_version}".strip(),
                management_state=str(details.get("managementState") or device.management_state),
                chrome_state=chrome_state(details),
                last_action=m.last_action(last.state, last.requester_name, last.updated_at) if last else "",
                intune_record=intune,
            )
        )

    async def _history(self, who: Requester, target: str | None) -> Reply:
        label: str | None = None
        if target:
            device = await self._one_readable(who, target)
            if isinstance(device, Reply):
                return device
            items = await self.deps.store.history(device_id=device.id)
            label = device.name
        else:
            # Permission first: no Intune lookups for someone who may not see devices at all.
            if not await self.deps.rbac.can_read_devices(who.aad_id):
                return Reply(text=m.denied_read("history"))
            items = await self._still_readable(who, await self.deps.store.history(requester_id=who.aad_id))
        if not items:
            return Reply(text=m.history_empty(label))
        now = self.deps.clock()
        rows = [
            (
                a.created_at,
                m.history_row(
                    a.device_name, a.device_serial, m.state_label(_final(a, now)), a.requester_name, a.reason
                ),
            )
            for a in items
        ]
        return Reply(card=history_card(m.history_title(label), rows))

    async def _still_readable(self, who: Requester, items: list[Action]) -> list[Action]:
        """Only the actions on devices the viewer can read today (their scope may have shrunk)."""
        if not items:
            return []
        snapshots = {a.device_id: Device.from_snapshot(a.device) for a in items}
        accesses = await self.deps.rbac.access_many(who.aad_id, list(snapshots.values()))
        readable = {d for d, access in zip(snapshots, accesses, strict=True) if access.readable}
        return [a for a in items if a.device_id in readable]

    async def _pending(self, who: Requester) -> Reply:
        """The viewer's own waiting requests and those they may approve — nothing else in the tenant."""
        waiting = await self.deps.store.awaiting_approval(who.tenant_id)
        mine = [a for a in waiting if a.requester_id == who.aad_id]
        others = [a for a in waiting if a.requester_id != who.aad_id]
        items = mine + (await self._approvable(who, others) if others else [])
        if not items:
            return Reply(text=m.pending_empty())
        summary = [
            (
                a.id,
                a.device_name,
                m.pending_row(a.device_name, a.device_serial, a.requester_name, own=a.requester_id == who.aad_id),
                a.expires_at,
            )
            for a in items
        ]
        return Reply(card=pending_card(m.pending_title(len(items)), summary))

    async def _approvable(self, who: Requester, actions: list[Action]) -> list[Action]:
        """The requests ``who`` could approve: approvers group, and the deprovision right on each device."""
        deps = self.deps
        group = deps.settings.approver_group_id
        if group and not await deps.rbac.is_group_member(who.aad_id, group):
            return []
        devices = [Device.from_snapshot(a.device) for a in actions]
        accesses = await deps.rbac.access_many(who.aad_id, devices)
        return [
            a
            for a, d, access in zip(actions, devices, accesses, strict=True)
            if access.decision.allowed and access.readable and d.is_chromeos
        ]
