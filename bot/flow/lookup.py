"""Exact lookup and the role check in as few Graph round trips as the answer allows (issue #18).

The lookup's first ``$batch`` also carries the requester's own facts (admin-group memberships, Entra roles — the
same for every device); the role catalogue is cached. So a message turn for a requester whose role is tenant-wide
or tag-scoped costs one round trip: the device's record (scope tags, primary user) is all the rest needs. A second
round trip only when needed — a serial that misses is tried as a device name (Graph cannot ``or`` across
properties), a GUID that is no Intune id as an Entra device id, a held scope-group assignment needs the device's or
its primary user's memberships (a third while the device's Entra object id is not known yet; it is then cached).

Single devices and lists share this path; only the single device follows an answer's further pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.devices import BatchLookup, Device, LookupResult
from bot.flow.base import Deps, Requester
from bot.rbac import Access


@dataclass
class Found:
    """One lookup result per query, and the requester's access to every device found (candidates included)."""

    results: list[LookupResult]
    access: dict[str, Access]

    def readable(self, result: LookupResult) -> list[tuple[Device, Access]]:
        """The devices of ``result`` the requester may read (least disclosure), with their access."""
        devices = [result.device] if result.device is not None else result.candidates
        return [(d, self.access[d.id]) for d in devices if self.access[d.id].readable]


class Finder:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.lookup = BatchLookup(deps.graph)

    async def find(self, who: Requester, queries: Sequence[str], *, follow_pages: bool = False) -> Found:
        """Look ``queries`` (already cleaned) up exactly and decide the requester's access to every device found."""
        rbac = self.deps.rbac
        catalog = await rbac.catalog()
        mine = rbac.requester_requests(catalog, who.aad_id)
        results, answers = await self.lookup.find_with(queries, mine, follow_pages=follow_pages)
        devices: dict[str, Device] = {}
        for result in results:
            for device in [result.device] if result.device is not None else result.candidates:
                devices.setdefault(device.id, device)
        if not devices:
            return Found(results, {})
        requester = await rbac.requester_facts(mine, answers)
        accesses = await rbac.access_found(catalog, requester, list(devices.values()))
        return Found(results, dict(zip(devices, accesses, strict=True)))
