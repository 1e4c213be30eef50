"""Classifying the entries of a list, least disclosure first (see :mod:`bot.flow.bulk` for the classes).

Only devices the requester may read (graph-intune.md §16) get a class other than *not found*: a device that exists but
is not readable is indistinguishable from one that does not exist — same class, same text, no OS, no state, no
denial. The role checks come with the lookup (:mod:`bot.flow.lookup`: the requester's facts ride in its first
``$batch``) and the in-flight check is one query.
"""

from __future__ import annotations

from typing import Any

from bot import messages as m
from bot.batches import BatchStore
from bot.devices import Device
from bot.flow.base import Conversation, Deps, Requester
from bot.flow.lookup import Found
from bot.rbac import Access
from bot.store import Action

Item = dict[str, Any]


async def classify(batches: BatchStore, found: Found) -> list[Item]:
    """One item per entry; every device fact shown only for devices the requester may read."""
    devices = {d.id: d for result in found.results for d in ([result.device] if result.device else result.candidates)}
    readable = [i for i, a in found.access.items() if a.readable and devices[i].is_chromeos]
    busy = await batches.inflight_for_devices(readable)
    items: list[Item] = []
    seen: dict[str, str] = {}
    for result in found.results:
        mine = found.readable(result)
        item: Item = {"entry": result.query, "class": "not_found"}
        if result.incomplete:
            item["class"] = "incomplete"
        elif len(mine) > 1:
            item.update({"class": "ambiguous", "detail": m.bulk_ambiguous([d.serial for d, _ in mine], len(mine))})
        elif mine:
            device, access = mine[0]
            item.update(_one(device, access, busy, seen))
            seen.setdefault(device.id, result.query)
        items.append(item)
    return items


def _one(device: Device, access: Access, busy: dict[str, Action], seen: dict[str, str]) -> Item:
    """The class of one readable device (the order of the single flow: ChromeOS, in flight, role)."""
    decision = access.decision
    item: Item = {"device": device.snapshot()}
    if device.id in seen:
        return {**item, "class": "duplicate", "detail": m.bulk_duplicate(seen[device.id])}
    if not device.is_chromeos:
        return {**item, "class": "not_chromeos", "detail": device.operating_system}
    holder = busy.get(device.id)
    if holder is not None:
        return {**item, "class": "busy", "requester": holder.requester_name, "state": holder.state}
    if not decision.allowed:
        reason = m.bulk_denied_reason(decision.reason)
        return {**item, "class": "denied", "detail": reason, "decision": decision.audit()}
    return {**item, "class": "ready", "decision": decision.audit()}


async def audit_request(deps: Deps, who: Requester, conv: Conversation, batch_id: str, items: list[Item]) -> None:
    """Every device audited on its own, with the batch id: *requested* (ready) or *denied*."""
    for item in items:
        if item["class"] in ("ready", "denied"):
            device = item["device"]
            await deps.audit.record(
                "requested" if item["class"] == "ready" else "denied",
                actor=who.actor,
                device={"id": device["id"], "name": device["name"], "serial": device["serial"]},
                conversation_id=conv.id,
                decision=item.get("decision"),
                batch_id=batch_id,
            )
