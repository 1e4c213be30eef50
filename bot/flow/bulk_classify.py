"""Classifying the entries of a list, least disclosure first (see :mod:`bot.flow.bulk` for the classes).

Only devices the requester may read (graph-intune.md §16) get a class other than *not found*: a device that exists but
is not readable is indistinguishable from one that does not exist — same class, same text, no OS, no state, no
denial, no "too many matches" (an entry whose answer was too long to check is *incomplete* only when some of the
matches checked are readable). The role checks come with the lookup (:mod:`bot.flow.lookup`: the requester's facts ride
in its first ``$batch``) and the in-flight check is one query.
"""

from __future__ import annotations

from typing import Any

from bot import messages as m
from bot.audit import Actor, Entry
from bot.batches import Batch, BatchStore
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
            if mine:  # only readable matches may say "too many"; unreadable ones are a device that does not exist
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


def request_entries(
    deps: Deps, who: Requester, conv: Conversation, batch_id: str | None, items: list[Item]
) -> list[Entry]:
    """Every device audited on its own: *requested* (ready) or *denied*, with the batch id when the batch is kept."""
    return [
        deps.audit.entry(
            "requested" if item["class"] == "ready" else "denied",
            actor=who.actor,
            device={"id": item["device"]["id"], "name": item["device"]["name"], "serial": item["device"]["serial"]},
            conversation_id=conv.id,
            decision=item.get("decision"),
            batch_id=batch_id,
        )
        for item in items
        if item["class"] in ("ready", "denied")
    ]


#: The classes of a device ready in the stored list but left out when the list is sent (see messages.BULK_CLASSES).
DROPPED = ("changed", "not_approved", "taken")


def dropped_entries(deps: Deps, batch: Batch, items: list[Item], actor: Actor) -> list[Entry]:
    """A *dropped* audit event for each device ready in the stored list that ``items`` leave out."""
    was_ready = {i["device"]["id"] for i in batch.items if i["class"] == "ready"}
    return [
        deps.audit.entry("dropped", actor=actor, device=i["device"], batch_id=batch.id, why=i["class"])
        for i in items
        if i["class"] in DROPPED and i["device"]["id"] in was_ready
    ]
