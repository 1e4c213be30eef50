"""Typed chat commands: ``deprovision`` (one device or a list), ``help`` — and the device choice; ``status``,
``history`` and ``pending`` are answered by :mod:`bot.flow.info`, lists by :mod:`bot.flow.bulk`.

A requester learns about a device only what Intune would show them (graph-intune.md §16): every command looks
up exactly, then keeps only the devices the requester can read; not found and not readable get one answer.

One line with spaces (``deprovision Chrome- PFSXKG0X``) is first tried as one device, exactly as always; only when it
names no device the requester may read are its words taken as a list (``deprovision A1 B2 C3``) — and if none of
those is one either, the answer is the single device's (not found, "did you mean").
"""

from __future__ import annotations

from typing import Any

from bot import commands as cmd
from bot import messages as m
from bot.devices import Device, clean_query
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
    new_id,
    unavailable,
)
from bot.flow.bulk import Bulk
from bot.flow.info import Info
from bot.flow.views import Views
from bot.rbac import Access
from bot.selections import Selection, SelectionStore
from bot.store import REQUESTED, Action
from cards.deprovision import message_card
from cards.info import help_card, selection_card

Found = list[tuple[Device, Access]]


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
    def __init__(self, deps: Deps, views: Views, bulk: Bulk) -> None:
        self.deps = deps
        self.views = views
        self.bulk = bulk
        self.info = Info(deps, self, bulk.batches)
        self.finder = bulk.finder
        self.selections = SelectionStore(deps.store)

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
            if isinstance(command, cmd.BulkDeprovision):
                if command.reason_text:
                    return Reply(text=m.unknown_reason(command.reason_text))
                reply = await self.bulk.request(who, conv, list(command.targets), command.reason)
                return reply or Reply(text=m.not_found(command.targets[0]))
            if isinstance(command, cmd.Status):
                return await self.info.status(who, command.target)
            if isinstance(command, cmd.History):
                return await self.info.history(who, command.target)
            return await self.info.pending(who)
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
            await self.selections.sent(reply.selection_id, activity_id)
        if reply.batch_id:
            await self.bulk.card_sent(reply.batch_id, activity_id)

    # -- deprovision -------------------------------------------------------------------------------------

    async def _deprovision(self, who: Requester, conv: Conversation, command: cmd.Deprovision) -> Reply:
        if command.reason_text:
            return Reply(text=m.unknown_reason(command.reason_text))
        words = command.target.split()
        found = await self.readable(who, command.target, suggest=len(words) == 1, reason=command.reason)
        if isinstance(found, Reply) and len(words) > 1:
            # Not one device the requester may read: perhaps several, separated by spaces.
            listed = await self.bulk.request(who, conv, words, command.reason, quiet=True)
            if listed is not None:
                return listed
            offer = await self._suggest(who, command.target, command.reason)
            return offer or found
        if isinstance(found, Reply):
            return found
        if len(found) == 1:
            device, access = found[0]
            return await self.request(who, conv, device, command.reason, access=access)
        return await self._offer_choice(who, command.target, found, command.reason)

    async def readable(
        self, who: Requester, target: str, *, suggest: bool = False, reason: str | None = None
    ) -> Found | Reply:
        """The devices matching ``target`` exactly that the requester could see in Intune (least disclosure).

        Not found and not readable get the same answer; so does a requester who may read no device at all (the
        lookup runs, but nothing of its result reaches them). One Graph round trip for the lookup and the role check
        together in the common case (:mod:`bot.flow.lookup`).
        """
        found = await self.finder.find(who, [clean_query(target)], follow_pages=True)
        result = found.results[0]
        readable = found.readable(result)
        if readable:
            return readable
        if result.incomplete and result.device is None and not result.candidates:
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
            id=new_id(),
            tenant_id=who.tenant_id,
            requester_id=who.aad_id,
            candidates=[d.snapshot() for d, _ in found],
            preset_reason=reason,
            created_at=now,
            expires_at=now + self.deps.settings.action_ttl,
        )
        await self.selections.create(selection)
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
            id=new_id(),
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
        selection = await self.selections.get(selection_id) if ACTION_ID_RE.match(selection_id) else None
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
        if not 0 <= index < len(selection.candidates) or await self.selections.take(selection.id) is None:
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
