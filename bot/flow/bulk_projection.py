"""What someone other than the requester may see of a bulk request (least disclosure, graph-intune.md §16).

The requester sees their whole list: every entry as typed and every class (each one a device they may read, or the
uniform *not found*). Anyone else gets a **projection**: only the list's *ready* devices that they may read in
Intune — no entry as typed, no other class, nobody's request on a device, no denial reason — and every count is
over those devices only, so a device they cannot read is indistinguishable from one that is not in the list.

An eligible approver's projection is decided on fresh data from Intune, exactly as the approval will be: each
device shown is marked as covered by their role (what **Approve** sends) or not (left out), and the Approve button
carries a digest of the covered devices — a click approves exactly what the card showed, or nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from bot.batches import AWAITING_APPROVAL, Batch
from bot.devices import Device
from bot.flow.base import Deps, Requester

Item = dict[str, Any]


def digest(device_ids: list[str] | tuple[str, ...]) -> str:
    """A short fingerprint of a set of devices (the approve button's ``covers``)."""
    return hashlib.sha256("\n".join(sorted(device_ids)).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Projection:
    #: What the viewer sees: ready devices they may read (an approver's: *ready* = covered, *not_covered* = not).
    items: list[Item]
    #: Ids of the devices the viewer may read (the progress rows they see once the request runs).
    readable: frozenset[str]
    #: The devices their approval would send now, fresh from Intune (empty: they may not approve).
    covered: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return digest(list(self.covered))

    def decided(self) -> Projection:
        """The same viewer once the approval is decided: the devices they may read, no approver's marks."""
        return Projection([{**i, "class": "ready"} for i in self.items if i["class"] == "ready"], self.readable)


class Projector:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def project(self, batch: Batch, who: Requester) -> Projection:
        """``who``'s view of ``batch`` (never its requester). Their role on the stored devices first (one round trip
        for a tenant-wide or tag-scoped role); fresh data only for a possible approver."""
        ready = [i for i in batch.items if i.get("class") == "ready"]
        devices = [Device.from_snapshot(i["device"]) for i in ready]
        accesses = await self.deps.rbac.access_stepwise(who.aad_id, devices) if devices else []
        seen = [(d, a) for d, a in zip(devices, accesses, strict=True) if a.readable]
        readable = frozenset(d.id for d, _ in seen)
        allowed = any(a.decision.allowed for _, a in seen)
        if not (allowed and await self.may_approve(who, batch)):
            return Projection([_item("ready", d) for d, _ in seen], readable)
        fresh = await self.deps.rbac.access_current_many(who.aad_id, [d for d, _ in seen])
        items: list[Item] = []
        covered: dict[str, dict[str, Any]] = {}
        for current, access in fresh:
            if current is None or access is None or not access.readable:
                continue  # gone from Intune, or no longer theirs to read: not shown
            ok = current.is_chromeos and access.decision.allowed
            items.append(_item("ready" if ok else "not_covered", current))
            if ok:
                covered[current.id] = current.snapshot()
        return Projection(items, readable, covered)

    async def may_approve(self, who: Requester, batch: Batch) -> bool:
        """Waiting for approval, not the requester, and in ``APPROVER_GROUP_ID`` when set (the role: per device)."""
        if batch.state != AWAITING_APPROVAL or who.aad_id == batch.requester_id:
            return False
        group = self.deps.settings.approver_group_id
        return not group or await self.deps.rbac.is_group_member(who.aad_id, group)


def _item(klass: str, device: Device) -> Item:
    return {"class": klass, "device": device.snapshot()}
