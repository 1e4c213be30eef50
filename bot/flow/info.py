"""``status``, ``history`` and ``pending``: what a requester may read about devices and requests (least disclosure).

Each looks up exactly and keeps only what the viewer could see in Intune (graph-intune.md §16). ``history`` shows a
bulk request as one line with its counts; ``history <device>`` shows that device's own line, bulk or not.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import TYPE_CHECKING

from bot import messages as m
from bot.batches import Batch, BatchStore
from bot.devices import Device
from bot.flow.base import Deps, Reply, Requester
from bot.flow.submission import chrome_state
from bot.intune_record import deprovision_audits, read_record
from bot.store import EXPIRED, OPEN_STATES, Action
from cards.info import history_card, pending_card, status_card

if TYPE_CHECKING:
    from bot.flow.commands import Commands


def _final(action: Action, now: float) -> str:
    """The state history shows: a request past its deadline is *expired* even before the sweep has moved it."""
    return EXPIRED if action.state in OPEN_STATES and action.expired(now) else action.state


class Info:
    def __init__(self, deps: Deps, commands: Commands, batches: BatchStore) -> None:
        self.deps = deps
        self.commands = commands
        self.batches = batches

    async def _one_readable(self, who: Requester, target: str) -> Device | Reply:
        """Exactly one readable device for ``status``/``history``, or the answer to give instead."""
        found = await self.commands.readable(who, target)
        if isinstance(found, Reply):
            return found
        if len(found) > 1:
            return Reply(text=m.ambiguous(target.strip(), len(found)))
        return found[0][0]

    async def status(self, who: Requester, target: str) -> Reply:
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

    async def history(self, who: Requester, target: str | None) -> Reply:
        label: str | None = None
        bulk: list[tuple[float, str]] = []
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
            bulk = await self._bulk_rows(who)
        if not items and not bulk:
            return Reply(text=m.history_empty(label))
        now = self.deps.clock()
        rows: list[tuple[float, str]] = [
            (
                a.created_at,
                m.history_row(
                    a.device_name, a.device_serial, m.state_label(_final(a, now)), a.requester_name, a.reason
                ),
            )
            for a in items
            if target or not a.batch_id  # your own history: a bulk request is one line (below)
        ]
        rows = sorted(rows + bulk, key=lambda r: r[0], reverse=True)[:10]
        return Reply(card=history_card(m.history_title(label), rows))

    async def _bulk_rows(self, who: Requester) -> list[tuple[float, str]]:
        """The requester's bulk requests, one line each with its counts."""
        rows: list[tuple[float, str]] = []
        for batch in await self.batches.for_requester(who.aad_id):
            states = Counter(r.state for r in await self.batches.rows(batch.id))
            ready = sum(1 for i in batch.items if i.get("class") == "ready") if not states else sum(states.values())
            line = m.history_bulk_row(
                ready,
                states["submitted"] + states["confirmed"],
                states["failed"],
                states["unknown"],
                states["cancelled"] + states["expired"],
                m.state_label(batch.state),
                batch.requester_name,
            )
            rows.append((batch.created_at, line))
        return rows

    async def _still_readable(self, who: Requester, items: list[Action]) -> list[Action]:
        """Only the actions on devices the viewer can read today (their scope may have shrunk)."""
        if not items:
            return []
        snapshots = {a.device_id: Device.from_snapshot(a.device) for a in items}
        accesses = await self.deps.rbac.access_many(who.aad_id, list(snapshots.values()))
        readable = {d for d, access in zip(snapshots, accesses, strict=True) if access.readable}
        return [a for a in items if a.device_id in readable]

    async def pending(self, who: Requester) -> Reply:
        """The viewer's own waiting requests and those they may approve — nothing else in the tenant.

        When bulk requests of others wait, whether the viewer may read devices at all is checked first (anyone can
        type ``pending``; someone who may not gets only their own, at the cost of that one check and nothing per
        device). The single requests alone (at most 20) are checked in one pass, as before.
        """
        waiting = await self.deps.store.awaiting_approval(who.tenant_id)
        batches = await self.batches.awaiting(who.tenant_id)
        mine = [a for a in waiting if a.requester_id == who.aad_id]
        others = [a for a in waiting if a.requester_id != who.aad_id]
        others_bulk = [b for b in batches if b.requester_id != who.aad_id]
        if others_bulk and not await self.deps.rbac.can_read_devices(who.aad_id):
            others, others_bulk = [], []
        items = mine + (await self._approvable(who, others) if others else [])
        bulk = await self._pending_bulk(who, [b for b in batches if b.requester_id == who.aad_id], others_bulk)
        if not items and not bulk:
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
        return Reply(card=pending_card(m.pending_title(len(items) + len(bulk)), summary, bulk))

    async def _pending_bulk(
        self, who: Requester, mine: list[Batch], others: list[Batch]
    ) -> list[tuple[str, str, str, float]]:
        """Bulk requests waiting for approval: the viewer's own, and those covering a device they may approve.

        The role checks are bounded: each device once, at most ``BULK_MAX`` of them, taken in turn from every waiting
        request (its first device, then its second, …) so that each request is looked at.
        """
        group = self.deps.settings.approver_group_id
        if others and group and not await self.deps.rbac.is_group_member(who.aad_id, group):
            others = []
        devices: dict[str, Device] = {}
        for tier in itertools.zip_longest(*([i["device"] for i in b.items if i["class"] == "ready"] for b in others)):
            for snapshot in tier:
                if snapshot is not None and len(devices) < self.deps.settings.bulk_max:
                    devices.setdefault(snapshot["id"], Device.from_snapshot(snapshot))
        accesses = await self.deps.rbac.access_many(who.aad_id, list(devices.values())) if devices else []
        checked = list(zip(devices.items(), accesses, strict=True))
        allowed = {i for (i, d), a in checked if a.readable and a.decision.allowed and d.is_chromeos}
        visible = {i for (i, _), a in checked if a.readable}
        covered = {b.id for b in others if any(i["class"] == "ready" and i["device"]["id"] in allowed for i in b.items)}
        rows: list[tuple[str, str, str, float]] = []
        for b in sorted([*mine, *(b for b in others if b.id in covered)], key=lambda b: b.created_at):
            own = b.requester_id == who.aad_id
            ready = [i["device"]["id"] for i in b.items if i.get("class") == "ready"]
            # Someone else's request counts only the devices the viewer may read (bot.flow.bulk_projection).
            count = len(ready) if own else sum(1 for i in ready if i in visible)
            summary = m.pending_bulk_row(count, b.requester_name, own=own)
            rows.append((b.id, m.pending_bulk_label(count), summary, b.expires_at))
        return rows

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
