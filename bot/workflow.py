"""The conversation's domain logic, independent of the Teams SDK.

``deprovision <device>`` → lookup → ChromeOS check → role check → confirmation card → (approval) → Graph →
the card updated in place. Rules enforced here, on the server, for every invoke:

* the card carries only an unguessable action id; device, reason choices and requester come from the store;
* an invoke is accepted only from the requester (approvers for approve/reject), within the TTL, once —
  repeated or concurrent clicks get the current card and never a second Graph call (store compare-and-set);
* tenant, device and role are re-checked with fresh data at confirmation;
* state is committed (*submitting*) before Graph is called; the outcome is written after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import commands as cmd
from bot import messages as m
from bot.audit import Actor, AuditLog
from bot.devices import Device, DeviceDirectory
from bot.errors import GraphError, GraphThrottled, InvalidInput, OutcomeUnknown, RbacUnavailable
from bot.graph import GraphClient
from bot.logs import safe
from bot.rbac import Access, Decision, RbacChecker
from bot.settings import Settings
from bot.store import (
    AWAITING_APPROVAL,
    CANCELLED,
    EXPIRED,
    FAILED,
    REQUESTED,
    SUBMITTED,
    SUBMITTING,
    UNKNOWN,
    Action,
    DeviceBusy,
    Selection,
    Store,
)
from cards import verbs
from cards.deprovision import ActionView, action_card, message_card
from cards.info import help_card, history_card, pending_card, selection_card, status_card

log = logging.getLogger("bot.workflow")

ACTION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
USER_ID_RE = re.compile(r"^[0-9A-Fa-f-]{30,40}$")
MAX_COMMENT = 500
RECONCILE_CLOCK_SKEW = 30.0  # seconds


@dataclass(frozen=True)
class Requester:
    aad_id: str
    name: str
    mri: str
    tenant_id: str

    @property
    def actor(self) -> Actor:
        return Actor(self.aad_id, self.name)


@dataclass(frozen=True)
class Conversation:
    id: str
    type: str
    reference: dict[str, Any]

    @property
    def is_group(self) -> bool:
        return self.type in ("groupChat", "channel")


@dataclass(frozen=True)
class Member:
    aad_id: str
    mri: str
    name: str


@dataclass
class Reply:
    """One outgoing message: text or a card; ``action_id``/``selection_id`` ask for the sent message's id."""

    text: str | None = None
    card: dict[str, Any] | None = None
    action_id: str | None = None
    selection_id: str | None = None


@dataclass
class InvokeAnswer:
    card: dict[str, Any] | None = None
    message: str | None = None
    error: tuple[int, str, str] | None = None  # (status, code, message)


class Notifier(Protocol):
    """Proactive messaging, implemented over the Agents SDK in :mod:`bot.teams`."""

    async def update(self, reference: dict[str, Any], activity_id: str, card: dict[str, Any]) -> bool: ...

    async def send(
        self, reference: dict[str, Any], *, text: str | None = None, card: dict[str, Any] | None = None
    ) -> str | None: ...

    async def members(self, reference: dict[str, Any]) -> list[Member]: ...


@dataclass
class Workflow:
    settings: Settings
    store: Store
    audit: AuditLog
    graph: GraphClient
    devices: DeviceDirectory
    rbac: RbacChecker
    notifier: Notifier | None = None
    clock: Callable[[], float] = time.time
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # -- messages ----------------------------------------------------------------------------------------

    async def on_message(self, who: Requester, conv: Conversation, text: str | None) -> Reply:
        command = cmd.parse(text)
        if isinstance(command, cmd.Help):
            return Reply(card=help_card())
        if isinstance(command, cmd.Invalid):
            return Reply(text=m.usage(command.problem))
        if isinstance(command, cmd.Unknown):
            return Reply(card=help_card(), text=m.unknown_command(command.text))
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
            return Reply(text=m.usage(exc.problem))
        except (RbacUnavailable, GraphError) as exc:
            return Reply(text=_unavailable(exc))

    async def _deprovision(self, who: Requester, conv: Conversation, command: cmd.Deprovision) -> Reply:
        if command.reason_text:
            return Reply(text=m.unknown_reason(command.reason_text))
        found = await self._readable(who, command.target)
        if isinstance(found, Reply):
            return found
        if len(found) == 1:
            device, access = found[0]
            return await self._request(who, conv, device, command.reason, access=access)
        return await self._offer_choice(who, command.target, found, command.reason)

    async def _readable(self, who: Requester, target: str) -> list[tuple[Device, Access]] | Reply:
        """The devices matching ``target`` exactly that the requester could see in Intune (least disclosure).

        Not found and not readable get the same answer; so does a requester who may read no device at all (the
        lookup runs, but nothing of its result reaches them).
        """
        result = await self.devices.find(target)
        candidates = [result.device] if result.device is not None else list(result.candidates)
        readable: list[tuple[Device, Access]] = []
        if candidates:
            accesses = await self.rbac.access_many(who.aad_id, candidates)
            readable = [(d, a) for d, a in zip(candidates, accesses, strict=True) if a.readable]
        if readable:
            return readable
        if result.incomplete and not candidates:
            return Reply(text=m.lookup_incomplete(result.query))
        return Reply(text=m.not_found(result.query))

    async def _offer_choice(
        self, who: Requester, query: str, found: list[tuple[Device, Access]], reason: str | None
    ) -> Reply:
        """Several readable devices match: a "which one?" card listing only those."""
        now = self.clock()
        selection = Selection(
            id=secrets.token_urlsafe(18),
            tenant_id=who.tenant_id,
            requester_id=who.aad_id,
            candidates=[d.snapshot() for d, _ in found],
            preset_reason=reason,
            created_at=now,
            expires_at=now + self.settings.action_ttl,
        )
        await self.store.create_selection(selection)
        return Reply(
            card=selection_card(query, len(found), selection.id, selection.candidates), selection_id=selection.id
        )

    async def _request(
        self,
        who: Requester,
        conv: Conversation,
        device: Device,
        reason: str | None,
        *,
        access: Access | None = None,
        card_activity_id: str | None = None,
    ) -> Reply:
        """Checks then a new action in *requested* with its confirmation card."""
        access = access or await self.rbac.access(who.aad_id, device)
        if not access.readable:
            return Reply(text=m.not_found(device.name))
        if not device.is_chromeos:
            return Reply(text=m.not_chromeos(device.name, device.operating_system))
        busy = await self.store.inflight_for_device(device.id)
        if busy is not None:
            return Reply(text=m.already_in_flight(device.name, busy.requester_name, busy.state))
        decision = access.decision
        if not decision.allowed:
            await self.audit.record(
                "denied",
                actor=who.actor,
                device=_device_audit(device),
                conversation_id=conv.id,
                decision=decision.audit(),
            )
            return Reply(text=m.denied(decision, device.name))
        now = self.clock()
        action = Action(
            id=secrets.token_urlsafe(18),
            tenant_id=who.tenant_id,
            state=REQUESTED,
            requester_id=who.aad_id,
            requester_name=who.name,
            requester_mri=who.mri,
            device_id=device.id,
            device_name=device.name,
            device_serial=device.serial,
            device_json=json.dumps(device.snapshot()),
            preset_reason=reason,
            conversation_id=conv.id,
            conversation_type=conv.type,
            conversation_ref=json.dumps(conv.reference),
            card_activity_id=card_activity_id,
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.action_ttl,
            decision_json=json.dumps(decision.audit()),
        )
        await self.store.create(action)
        await self.audit.record("requested", actor=who.actor, action=action, decision=decision.audit())
        return Reply(card=await self.render(action, "requester" if not conv.is_group else "other"), action_id=action.id)

    async def card_sent(self, reply: Reply, activity_id: str | None) -> None:
        """Remember the message id of a card just sent (to update it in place; to trust clicks on it)."""
        if not activity_id:
            return
        if reply.action_id:
            await self.store.update_fields(reply.action_id, card_activity_id=activity_id)
        if reply.selection_id:
            await self.store.selection_sent(reply.selection_id, activity_id)

    async def _status(self, who: Requester, target: str) -> Reply:
        found = await self._readable(who, target)
        if isinstance(found, Reply):
            return found
        if len(found) > 1:
            return Reply(text=m.ambiguous(target.strip(), len(found)))
        device = found[0][0]
        details = await self.devices.details(device.id)
        chrome = _chrome_state(details)
        last = await self.store.latest_for_device(device.id)
        last_text = m.last_action(last.state, last.requester_name, last.updated_at) if last else ""
        catalog = await self.rbac.catalog()
        return Reply(
            card=status_card(
                device.snapshot(),
                catalog.tag_names,
                operating_system=f"{device.operating_system} {device.os_version}".strip(),
                management_state=str(details.get("managementState") or device.management_state),
                chrome_state=chrome,
                last_action=last_text,
            )
        )

    async def _history(self, who: Requester, target: str | None) -> Reply:
        label: str | None = None
        if target:
            found = await self._readable(who, target)
            if isinstance(found, Reply):
                return found
            if len(found) > 1:
                return Reply(text=m.ambiguous(target.strip(), len(found)))
            device = found[0][0]
            items = await self.store.history(device_id=device.id)
            label = device.name
        else:
            # Permission first: no Intune lookups for someone who may not see devices at all.
            if not await self.rbac.can_read_devices(who.aad_id):
                return Reply(text=m.denied_read("history"))
            items = await self._still_readable(who, await self.store.history(requester_id=who.aad_id))
        if not items:
            return Reply(text=m.history_empty(label))
        rows = [
            (
                a.created_at,
                m.history_row(a.device_name, a.device_serial, m.state_label(a.state), a.requester_name, a.reason),
            )
            for a in items
        ]
        return Reply(card=history_card(m.history_title(label), rows))

    async def _still_readable(self, who: Requester, items: list[Action]) -> list[Action]:
        """Only the actions on devices the viewer can read today (their scope may have shrunk)."""
        if not items:
            return []
        snapshots = {a.device_id: Device.from_snapshot(a.device) for a in items}
        accesses = await self.rbac.access_many(who.aad_id, list(snapshots.values()))
        readable = {d for d, access in zip(snapshots, accesses, strict=True) if access.readable}
        return [a for a in items if a.device_id in readable]

    async def _pending(self, who: Requester) -> Reply:
        """The viewer's own waiting requests and those they may approve — nothing else in the tenant."""
        waiting = await self.store.awaiting_approval(who.tenant_id)
        mine = [a for a in waiting if a.requester_id == who.aad_id]
        others = [a for a in waiting if a.requester_id != who.aad_id]
        approvable = await self._approvable(who, others) if others else []
        items = mine + approvable
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
        if self.settings.approver_group_id and not await self.rbac.is_group_member(
            who.aad_id, self.settings.approver_group_id
        ):
            return []
        devices = [Device.from_snapshot(a.device) for a in actions]
        accesses = await self.rbac.access_many(who.aad_id, devices)
        return [
            a
            for a, d, access in zip(actions, devices, accesses, strict=True)
            if access.decision.allowed and access.readable and d.is_chromeos
        ]

    # -- card invokes ------------------------------------------------------------------------------------

    async def on_invoke(self, who: Requester, conv: Conversation, verb: str, data: dict[str, Any]) -> InvokeAnswer:
        if not USER_ID_RE.match(who.aad_id):
            return InvokeAnswer(error=(403, "Forbidden", m.anonymous_user()))
        try:
            if verb == verbs.SELECT:
                return await self._select(who, conv, data)
            action_id = str(data.get("actionId") or "")
            action = await self.store.get(action_id) if ACTION_ID_RE.match(action_id) else None
            if action is None or action.tenant_id != who.tenant_id:
                return InvokeAnswer(card=message_card(m.CARD_TITLE_EXPIRED, [m.card_unknown_request()]))
            if not await self._may_see(who, conv, action):
                return InvokeAnswer(card=message_card(m.CARD_TITLE_UNAVAILABLE, [m.card_not_available()]))
            action = await self._expire_if_due(action)
            handler: dict[str, Callable[..., Awaitable[InvokeAnswer]]] = {
                verbs.REFRESH: self._refresh,
                verbs.CONFIRM: self._confirm,
                verbs.CANCEL: self._cancel,
                verbs.RETRY: self._retry,
                verbs.APPROVE: self._approve,
                verbs.REJECT: self._reject,
            }
            return await handler[verb](who, action, data)
        except (RbacUnavailable, GraphError) as exc:
            return InvokeAnswer(message=_unavailable(exc))

    async def _may_see(self, who: Requester, conv: Conversation, action: Action) -> bool:
        """A request's card goes to its requester, to eligible approvers, and (neutral view) to members of the
        conversation it lives in — the request's own chat or the approval channel. Nobody else learns of it."""
        if who.aad_id == action.requester_id:
            return True
        here = _base_conversation(conv.id)
        if here == _base_conversation(action.conversation_id):
            return True
        if action.approval_ref and here == _base_conversation(self.settings.approval_channel_id or ""):
            return True
        if action.state == AWAITING_APPROVAL:
            eligible, _ = await self._eligible_approver(who, action)
            return eligible
        return False

    async def _viewer(self, who: Requester, action: Action) -> str:
        if who.aad_id == action.requester_id:
            return "requester"
        if action.state == AWAITING_APPROVAL and who.mri in json.loads(action.approver_mris or "[]"):
            return "approver"
        return "other"

    async def _refresh(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        viewer = await self._viewer(who, action)
        if viewer == "other" and action.state == AWAITING_APPROVAL:
            eligible, _ = await self._eligible_approver(who, action)
            viewer = "approver" if eligible else "other"
        return InvokeAnswer(card=await self.render(action, viewer))

    async def _confirm(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        if who.aad_id != action.requester_id:
            return InvokeAnswer(
                card=await self.render(
                    action, await self._viewer(who, action), note=m.card_only_requester(action.requester_name)
                )
            )
        if action.state != REQUESTED:
            return InvokeAnswer(card=await self.render(action, "requester"))
        reason = str(data.get(verbs.REASON_INPUT) or "").strip()
        if reason not in self.settings.reason_map:
            return InvokeAnswer(card=await self.render(action, "requester", note=m.card_choose_reason()))
        fresh = await self._recheck(who, action)
        if isinstance(fresh, InvokeAnswer):
            return fresh
        if self.settings.approval_mode == "peer":
            return await self._await_approval(who, action, reason)
        return await self._submit(who, action, reason=reason)

    async def _recheck(self, who: Requester, action: Action) -> Device | InvokeAnswer:
        """Fresh device and role at confirmation time; on failure the action fails and the card says why."""
        device, decision = await self.rbac.check_current(who.aad_id, Device.from_snapshot(action.device))
        if device is None or decision is None or not device.is_chromeos:
            updated = await self.store.transition(
                action, FAILED, error_code="device_changed", error_message=m.card_device_changed()
            )
            await self.audit.record("failed", actor=who.actor, action=action, error="device_changed")
            await self._update_shared(updated or action)
            return InvokeAnswer(card=await self.render(updated or action, "requester"))
        if not decision.allowed:
            message = m.denied(decision, device.name)
            updated = await self.store.transition(action, FAILED, error_code="denied", error_message=message)
            await self.audit.record(
                "denied", actor=who.actor, action=action, decision=decision.audit(), stage="confirm"
            )
            await self._update_shared(updated or action)
            return InvokeAnswer(card=await self.render(updated or action, "requester"))
        return device

    async def _submit(
        self, who: Requester, action: Action, *, reason: str | None = None, approver: Requester | None = None
    ) -> InvokeAnswer:
        now = self.clock()
        changes: dict[str, Any] = {
            "lease_until": now + self._lease(),
            "client_request_id": str(uuid.uuid4()),
            "error_code": None,
            "error_message": None,
            "retryable": False,
        }
        if reason:
            changes["reason"] = reason
        if approver:
            changes.update(approver_id=approver.aad_id, approver_name=approver.name)
        try:
            updated = await self.store.transition(action, SUBMITTING, now=now, **changes)
        except DeviceBusy:
            busy = await self.store.inflight_for_device(action.device_id)
            note = m.already_in_flight(
                action.device_name, busy.requester_name if busy else "", busy.state if busy else ""
            )
            return InvokeAnswer(card=await self.render(action, "requester", note=note))
        if updated is None:  # another click or instance won the race: show what it did
            current = await self.store.get(action.id)
            return InvokeAnswer(card=await self.render(current or action, await self._viewer(who, current or action)))
        if approver is None and reason:
            await self.audit.record("confirmed", actor=who.actor, action=updated, reason=reason)
        elif approver is not None:
            await self.audit.record("approved", actor=approver.actor, action=updated, requester_id=updated.requester_id)
            await self._notify(updated, m.proactive_approved(updated.device_name, approver.name))
        task = asyncio.create_task(self._send_to_graph(updated, who if approver is None else approver))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        done, _ = await asyncio.wait({task}, timeout=self.settings.invoke_budget)
        viewer = await self._viewer(who, updated)
        if done:
            final = task.result()
            return InvokeAnswer(card=await self.render(final, viewer))
        return InvokeAnswer(card=await self.render(updated, viewer))

    def _lease(self) -> float:
        """How long a *submitting* row belongs to the instance that wrote it: the longest a Graph call can take."""
        s = self.settings
        return 2 * s.graph_timeout + s.graph_max_retry_wait + s.submit_lease_grace

    def _crash(self, point: str) -> None:
        if self.settings.crash_point == point:
            log.error("test crash point reached", extra={"point": point})
            os._exit(137)

    async def _send_to_graph(self, action: Action, actor: Requester) -> Action:
        """Write-ahead already done (*submitting*). Call Graph once, record the outcome, update the cards."""
        wire_reason = self.settings.reason_map.get(action.reason or "", action.reason or "")
        await self.audit.record(
            "submitted", actor=actor.actor, action=action, client_request_id=action.client_request_id
        )
        self._crash("before_graph")
        outcome: Action | None
        try:
            response = await self.graph.deprovision(
                action.device_id, wire_reason, client_request_id=action.client_request_id or str(uuid.uuid4())
            )
        except OutcomeUnknown as exc:
            outcome = await self.store.transition(
                action, UNKNOWN, error_code="outcome_unknown", error_message=exc.detail
            )
            await self.audit.record("unknown", actor=actor.actor, action=action, error=exc.detail)
        except GraphError as exc:
            if exc.status == 504:
                outcome = await self.store.transition(
                    action, UNKNOWN, error_code="gateway_timeout", error_message=exc.message
                )
                await self.audit.record(
                    "unknown", actor=actor.actor, action=action, status=504, request_id=exc.request_id
                )
            else:
                retryable = isinstance(exc, GraphThrottled)
                outcome = await self.store.transition(
                    action,
                    FAILED,
                    error_code=exc.code,
                    error_message=_graph_message(exc),
                    retryable=retryable,
                    graph_request_id=exc.request_id,
                )
                await self.audit.record(
                    "failed",
                    actor=actor.actor,
                    action=action,
                    status=exc.status,
                    code=exc.code,
                    message=exc.message,
                    request_id=exc.request_id,
                    retryable=retryable,
                )
        else:
            self._crash("after_graph")
            outcome = await self.store.transition(action, SUBMITTED, graph_request_id=response.request_id)
            await self.audit.record("succeeded", actor=actor.actor, action=action, request_id=response.request_id)
        final = outcome or await self.store.get(action.id) or action
        await self._update_shared(final)
        if final.state in (UNKNOWN,):
            await self._notify_unknown(final)
        elif final.state == SUBMITTED and final.approver_id:
            await self._notify(final, m.proactive_done(final.device_name))
        return final

    async def _cancel(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        if who.aad_id != action.requester_id:
            return InvokeAnswer(
                card=await self.render(
                    action, await self._viewer(who, action), note=m.card_only_requester(action.requester_name)
                )
            )
        if action.state not in (REQUESTED, AWAITING_APPROVAL):
            return InvokeAnswer(card=await self.render(action, "requester"))
        updated = await self.store.transition(action, CANCELLED, approver_name=who.name)
        if updated is None:
            current = await self.store.get(action.id) or action
            return InvokeAnswer(card=await self.render(current, "requester"))
        await self.audit.record("cancelled", actor=who.actor, action=action)
        await self._update_shared(updated)
        return InvokeAnswer(card=await self.render(updated, "requester"))

    async def _retry(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        if who.aad_id != action.requester_id:
            return InvokeAnswer(
                card=await self.render(
                    action, await self._viewer(who, action), note=m.card_only_requester(action.requester_name)
                )
            )
        if action.state != FAILED or not action.retryable:
            return InvokeAnswer(card=await self.render(action, "requester"))
        if self.clock() >= action.expires_at + self.settings.action_ttl:
            return InvokeAnswer(card=await self.render(action, "requester", note=m.card_expired()))
        fresh = await self._recheck_for_retry(who, action)
        if fresh is not None:
            return fresh
        return await self._submit(who, action)

    async def _recheck_for_retry(self, who: Requester, action: Action) -> InvokeAnswer | None:
        device, decision = await self.rbac.check_current(who.aad_id, Device.from_snapshot(action.device))
        if device is None or decision is None or not device.is_chromeos:
            return InvokeAnswer(card=await self.render(action, "requester", note=m.card_device_changed()))
        if not decision.allowed:
            return InvokeAnswer(card=await self.render(action, "requester", note=m.denied(decision, device.name)))
        return None

    async def _select(self, who: Requester, conv: Conversation, data: dict[str, Any]) -> InvokeAnswer:
        selection_id = str(data.get("selectionId") or "")
        selection = await self.store.get_selection(selection_id) if ACTION_ID_RE.match(selection_id) else None
        if (
            selection is None
            or selection.tenant_id != who.tenant_id
            or selection.requester_id != who.aad_id
            or self.clock() >= selection.expires_at
        ):
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_selection_used()]))
        try:
            index = int(data.get("index", -1))
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(selection.candidates):
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_selection_used()]))
        if await self.store.take_selection(selection.id) is None:
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_selection_used()]))
        device = await self.devices.get(str(selection.candidates[index].get("id", "")))
        if device is None:
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [m.card_device_changed()]))
        # The new card takes the selection card's place: the message id stored when that card was sent (a click's
        # replyToId is never trusted for this — it could name any message in the chat).
        reply = await self._request(
            who, conv, device, selection.preset_reason, card_activity_id=selection.card_activity_id
        )
        if reply.card is None:
            return InvokeAnswer(card=message_card(m.CARD_SELECT_TITLE, [reply.text or ""]))
        if reply.action_id:
            action = await self.store.get(reply.action_id)
            if action is not None:
                await self._update_shared(action)
                return InvokeAnswer(card=await self.render(action, "requester"))
        return InvokeAnswer(card=reply.card)

    # -- approvals ---------------------------------------------------------------------------------------

    async def _await_approval(self, who: Requester, action: Action, reason: str) -> InvokeAnswer:
        now = self.clock()
        try:
            updated = await self.store.transition(
                action, AWAITING_APPROVAL, reason=reason, expires_at=now + self.settings.approval_ttl, now=now
            )
        except DeviceBusy:
            busy = await self.store.inflight_for_device(action.device_id)
            note = m.already_in_flight(
                action.device_name, busy.requester_name if busy else "", busy.state if busy else ""
            )
            return InvokeAnswer(card=await self.render(action, "requester", note=note))
        if updated is None:
            current = await self.store.get(action.id) or action
            return InvokeAnswer(card=await self.render(current, "requester"))
        await self.audit.record("confirmed", actor=who.actor, action=updated, reason=reason, approval="peer")
        task = asyncio.create_task(self._announce_approval(updated))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return InvokeAnswer(card=await self.render(updated, "requester"))

    async def _announce_approval(self, action: Action) -> None:
        """Find eligible approvers among the conversation's members; post to the approval channel if set."""
        try:
            mris: list[str] = []
            if self.notifier is not None and action.is_group:
                for member in (await self.notifier.members(action.reference))[:100]:
                    if member.aad_id == action.requester_id or not USER_ID_RE.match(member.aad_id):
                        continue
                    probe = Requester(member.aad_id, member.name, member.mri, action.tenant_id)
                    eligible, _ = await self._eligible_approver(probe, action)
                    if eligible:
                        mris.append(member.mri)
                    if len(mris) >= 59:
                        break
            await self.store.update_fields(action.id, approver_mris=json.dumps(mris))
            action.approver_mris = json.dumps(mris)
            if self.settings.approval_channel_id and self.notifier is not None:
                ref = dict(action.reference)
                ref["conversation"] = {
                    "id": self.settings.approval_channel_id,
                    "conversationType": "channel",
                    "isGroup": True,
                    "tenantId": action.tenant_id,
                }
                ref.pop("activityId", None)
                card = await self.render(action, "other", approval_card=True)
                activity_id = await self.notifier.send(ref, card=card)
                await self.store.update_fields(
                    action.id, approval_ref=json.dumps(ref), approval_activity_id=activity_id
                )
                action.approval_ref, action.approval_activity_id = json.dumps(ref), activity_id
            await self._update_shared(action)
        except Exception:
            log.exception("announcing the approval failed", extra={"action": action.id})

    async def _eligible_approver(self, who: Requester, action: Action, *, fresh: bool = False) -> tuple[bool, str]:
        """Not the requester, in ``APPROVER_GROUP_ID`` if set, and passes the same role check on the same device.

        With ``fresh`` (at approval time) the device is re-read from Intune in the same round trip.
        """
        if who.aad_id == action.requester_id:
            return False, m.card_cannot_approve_own()
        if self.settings.approver_group_id and not await self.rbac.is_group_member(
            who.aad_id, self.settings.approver_group_id
        ):
            return False, m.card_not_eligible(m.not_eligible_group())
        snapshot = Device.from_snapshot(action.device)
        device: Device | None = snapshot
        decision: Decision | None
        if fresh:
            device, decision = await self.rbac.check_current(who.aad_id, snapshot)
        else:
            decision = await self.rbac.check(who.aad_id, snapshot)
        if device is None or decision is None or not device.is_chromeos:
            return False, m.card_device_changed()
        if not decision.allowed:
            return False, m.card_not_eligible(m.not_eligible_role(decision, device.name))
        return True, ""

    async def _approve(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        if action.state != AWAITING_APPROVAL:
            return InvokeAnswer(card=await self.render(action, await self._viewer(who, action)))
        eligible, why = await self._eligible_approver(who, action, fresh=True)
        if not eligible:
            return InvokeAnswer(card=await self.render(action, await self._viewer(who, action), note=why))
        return await self._submit(who, action, approver=who)

    async def _reject(self, who: Requester, action: Action, data: dict[str, Any]) -> InvokeAnswer:
        if action.state != AWAITING_APPROVAL:
            return InvokeAnswer(card=await self.render(action, await self._viewer(who, action)))
        eligible, why = await self._eligible_approver(who, action)
        if not eligible:
            return InvokeAnswer(card=await self.render(action, await self._viewer(who, action), note=why))
        comment = " ".join(str(data.get(verbs.COMMENT_INPUT) or "").split())[:MAX_COMMENT]
        if not comment:
            return InvokeAnswer(card=await self.render(action, "approver", note=m.card_reject_needs_comment()))
        updated = await self.store.transition(
            action, CANCELLED, approver_id=who.aad_id, approver_name=who.name, comment=comment
        )
        if updated is None:
            current = await self.store.get(action.id) or action
            return InvokeAnswer(card=await self.render(current, "other"))
        await self.audit.record("rejected", actor=who.actor, action=action, comment=comment)
        await self._update_shared(updated)
        await self._notify(updated, m.proactive_rejected(updated.device_name, who.name, comment))
        return InvokeAnswer(card=await self.render(updated, "other"))

    # -- rendering and proactive updates ------------------------------------------------------------------

    async def render(
        self, action: Action, viewer: str, *, note: str | None = None, approval_card: bool = False
    ) -> dict[str, Any]:
        try:
            tag_names = (await self.rbac.catalog()).tag_names
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
            approver_name=action.approver_name,
            comment=action.comment,
            graph_request_id=action.graph_request_id,
            error_message=action.error_message,
            retryable=action.retryable,
            is_group=action.is_group or approval_card,
            approval_mode=self.settings.approval_mode == "peer" or bool(action.approver_id),
            approver_mris=tuple(json.loads(action.approver_mris or "[]")),
            tag_names=tag_names,
            reasons=tuple(self.settings.reason_map),
            note=note,
        )
        return action_card(view, viewer)

    async def _base_card(self, action: Action, *, approval_card: bool = False) -> dict[str, Any]:
        viewer = "other" if action.is_group or approval_card else "requester"
        return await self.render(action, viewer, approval_card=approval_card)

    async def _update_shared(self, action: Action) -> None:
        """PUT the shared message(s) so every client drops stale buttons."""
        if self.notifier is None:
            return
        if action.card_activity_id:
            await self.notifier.update(action.reference, action.card_activity_id, await self._base_card(action))
        if action.approval_ref and action.approval_activity_id:
            await self.notifier.update(
                json.loads(action.approval_ref),
                action.approval_activity_id,
                await self._base_card(action, approval_card=True),
            )

    async def _notify(self, action: Action, text: str) -> None:
        if self.notifier is not None:
            await self.notifier.send(action.reference, text=text)

    async def _notify_unknown(self, action: Action) -> None:
        if self.notifier is None:
            return
        if not await self.store.claim_notification(action.id):
            return  # another instance (or an earlier sweep) already told the requester
        sent = await self.notifier.send(action.reference, text=m.proactive_unknown(action.device_name))
        if sent is None:
            await self.store.claim_notification(action.id, claimed=False)  # try again on the next sweep

    # -- housekeeping: expiry, crash recovery --------------------------------------------------------------

    async def _expire_if_due(self, action: Action) -> Action:
        if not action.expired(self.clock()):
            return action
        updated = await self.store.transition(action, EXPIRED)
        if updated is None:
            return await self.store.get(action.id) or action
        await self.audit.record("expired", actor=None, action=action)
        await self._update_shared(updated)
        return updated

    async def sweep(self) -> dict[str, int]:
        """Expire overdue requests, reconcile abandoned submissions, tell requesters about unknown outcomes."""
        counts = {"expired": 0, "reconciled": 0, "unknown": 0, "notified": 0}
        now = self.clock()
        for action in await self.store.due_for_expiry(now):
            if (await self._expire_if_due(action)).state == EXPIRED:
                counts["expired"] += 1
        for action in await self.store.stale_submitting(now):
            result = await self._reconcile(action)
            if result is not None:
                counts["reconciled" if result.state == SUBMITTED else "unknown"] += 1
        for action in await self.store.unnotified():
            await self._update_shared(action)
            await self._notify_unknown(action)
            counts["notified"] += 1
        return counts

    async def _reconcile(self, action: Action) -> Action | None:
        """An action left in *submitting* by a crashed process: learn from Graph, never re-send."""
        try:
            details = await self.devices.details(action.device_id)
        except GraphError:
            details = {}
        record = _deprovision_record(details)
        started = _parse_time(record.get("startDateTime")) if record else None
        # Only a record that started after this action was committed as *submitting* (allowing for clock skew
        # between this host and Intune) is this action's; an older attempt on the same device is not.
        if record and started is not None and started >= action.updated_at - RECONCILE_CLOCK_SKEW:
            updated = await self.store.transition(action, SUBMITTED, error_code=None, error_message=None)
            if updated is not None:
                await self.audit.record(
                    "succeeded",
                    actor=None,
                    action=action,
                    reconciled=True,
                    action_state=record.get("actionState"),
                )
                await self._update_shared(updated)
                await self._notify(updated, m.proactive_done(updated.device_name))
            return updated
        updated = await self.store.transition(
            action,
            UNKNOWN,
            error_code="interrupted",
            error_message="the bot stopped while the request was being sent",
        )
        if updated is not None:
            await self.audit.record("unknown", actor=None, action=action, reconciled=True)
            await self._update_shared(updated)
            await self._notify_unknown(updated)
        return updated

    async def drain(self, limit: float = 10.0) -> None:
        """Let in-flight Graph submissions finish (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=limit)


def _unavailable(exc: RbacUnavailable | GraphError) -> str:
    """Log a dependency failure (no secrets: status, code and request id only) and say so to the user."""
    if isinstance(exc, RbacUnavailable):
        log.warning("rbac unavailable", extra={"error": safe(exc)})
        return m.rbac_unavailable()
    log.warning("graph error", extra={"status": exc.status, "code": exc.code, "request_id": exc.request_id})
    return m.graph_unavailable()


def _base_conversation(conversation_id: str) -> str:
    """A channel thread's id without its ``;messageid=…`` suffix."""
    return conversation_id.split(";", 1)[0].lower()


def _device_audit(device: Device) -> dict[str, Any]:
    return {"id": device.id, "name": device.name, "serial": device.serial}


def _graph_message(exc: GraphError) -> str:
    return f"{exc.message} (HTTP {exc.status}, {exc.code})" if exc.message else f"HTTP {exc.status} {exc.code}"


def _deprovision_record(details: dict[str, Any]) -> dict[str, Any]:
    for item in details.get("deviceActionResults") or []:
        if str(item.get("actionName", "")).lower() == "deprovision":
            return dict(item)
    return {}


def _chrome_state(details: dict[str, Any]) -> str:
    for prop in details.get("chromeOSDeviceInfo") or []:
        if str(prop.get("name", "")).lower() in ("devicestatus", "status", "deprovisionstatus"):
            return str(prop.get("value", ""))
    record = _deprovision_record(details)
    if record:
        return f"deprovision {record.get('actionState', '')}".strip()
    return ""


def _parse_time(value: Any) -> float | None:
    from datetime import datetime

    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
