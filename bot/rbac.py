"""The requester's right to deprovision a device, decided as Intune would (graph-intune.md §14).

A user may deprovision device D iff

(a) the user holds a configured Entra admin role (Global Administrator, Intune Administrator), or
(b) an Intune role assignment A exists such that
    1. A's role allows ``Microsoft.Intune_RemoteTasks_Retire`` and ``Microsoft.Intune_ManagedDevices_Read``
       and forbids neither (``*`` allows all; ``notAllowedResourceActions`` wins);
    2. the user is a transitive member of one of ``A.members``;
    3. D is in A's scope: ``allDevices`` / ``allDevicesAndLicensedUsers`` → every device; ``allLicensedUsers`` →
       devices with a primary user; ``resourceScope`` → D's Entra device object or primary user is a transitive
       member of one of A's scope groups;
    4. ``A.roleScopeTagIds`` is empty or shares a tag with D (untagged = ``"0"``).

Facts are gathered in at most two ``$batch`` round trips (plus one for a cold role catalogue); :func:`decide`
is a pure function over them. A message turn splits them: the requester's own facts (:meth:`RbacChecker.
requester_requests`) ride in the lookup's ``$batch``, and :meth:`RbacChecker.access_found` asks for a device's
scope-group memberships only when a held assignment could still admit it. Any Graph failure fails closed (:class:`~bot.errors.RbacUnavailable`).

The rooms: the rule and its value types in :mod:`bot.rbac_rules`, the ``$batch`` sub-requests planned and read in
:mod:`bot.rbac_batch`, the cached role catalogue in :mod:`bot.rbac_catalog`. :class:`RbacChecker` is the one seam
callers use: it sends the round trips and remembers each device's Entra object id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from bot import rbac_batch as batch
from bot.decision import Decision, DenyReason
from bot.devices import Device
from bot.errors import GraphError, RbacUnavailable
from bot.graph import GraphClient
from bot.rbac_batch import CHUNK, Sub
from bot.rbac_catalog import RoleCatalogue
from bot.rbac_rules import (
    READ,
    RETIRE,
    Access,
    Catalog,
    Facts,
    RequesterFacts,
    RoleAssignment,
    RoleDefinition,
    can_read,
    decide,
    device_scope_pending,
    unsettled,
)
from bot.settings import Settings

__all__ = [
    "READ",
    "RETIRE",
    "Access",
    "Catalog",
    "Decision",
    "DenyReason",
    "Facts",
    "RbacChecker",
    "RequesterFacts",
    "RoleAssignment",
    "RoleDefinition",
    "can_read",
    "decide",
]

_T = TypeVar("_T")


class RbacChecker:
    """Gathers facts from Graph (batched, role catalogue cached) and applies :func:`decide`."""

    def __init__(self, settings: Settings, graph: GraphClient) -> None:
        self._settings = settings
        self._graph = graph
        self._catalogue = RoleCatalogue(graph, settings.rbac_cache_ttl)
        self._device_objects: dict[str, str | None] = {}  # azureADDeviceId → Entra object id (immutable)

    async def catalog(self) -> Catalog:
        """The role catalogue (TTL cache, refreshed without blocking)."""
        return await self._catalogue.get()

    # -- the check ---------------------------------------------------------------------------------------
    async def check(self, requester_id: str, device: Device) -> Decision:
        """Decide with fresh group memberships (never cached) and the cached role catalogue."""
        return (await self.access(requester_id, device)).decision

    async def access(self, requester_id: str, device: Device) -> Access:
        """May the requester read the device, and deprovision it? One round trip, two at most."""
        return (await self.access_many(requester_id, [device]))[0]

    async def access_many(self, requester_id: str, devices: Sequence[Device]) -> list[Access]:
        """:meth:`access` for several devices: the requester's facts once, each device's scope facts beside them."""
        results = await self._guarded(self._check_many(requester_id, list(devices)))
        return [access for _, access in results if access is not None]

    async def check_current(self, requester_id: str, device: Device) -> tuple[Device | None, Decision | None]:
        """Re-read the device from Intune and decide on the fresh copy, in the same ``$batch`` round trip (used at
        confirmation).

        Returns ``(None, None)`` when the device is gone. If its primary user or Entra device changed, the check is
        repeated for the new ones (the scope requests depended on them).
        """
        fresh, access = (await self.access_current_many(requester_id, [device]))[0]
        return fresh, access.decision if access else None

    async def access_current_many(
        self, requester_id: str, devices: Sequence[Device]
    ) -> list[tuple[Device | None, Access | None]]:
        """:meth:`check_current` for several devices (bulk confirmation and approval): batched the same way."""
        return await self._guarded(self._check_many(requester_id, list(devices), reread=True))

    @staticmethod
    async def _guarded(work: Awaitable[_T]) -> _T:
        """Fail closed: any Graph failure while gathering facts is :class:`RbacUnavailable`."""
        try:
            return await work
        except RbacUnavailable:
            raise
        except GraphError as exc:
            raise RbacUnavailable(exc) from exc

    def requester_requests(self, catalog: Catalog, requester_id: str) -> list[dict[str, Any]]:
        """The device-independent sub-requests of a check: the requester's admin-group memberships, Entra roles.

        They can ride in any ``$batch`` (the lookup's, for a message turn); :meth:`requester_facts` reads them.
        """
        return batch.requester_requests(catalog, requester_id, entra_roles=self._settings.entra_admin_roles_allowed)

    async def requester_facts(self, requests: Sequence[dict[str, Any]], answers: dict[str, Any]) -> RequesterFacts:
        """The answers to :meth:`requester_requests`; a missing or failed one fails closed (:class:`RbacUnavailable`)."""
        return await self._guarded(batch.read_requester(self._graph, requests, answers))

    async def access_stepwise(self, requester_id: str, devices: Sequence[Device]) -> list[Access]:
        """:meth:`access_many` the other way round, for many devices most of which need no facts of their own: the
        requester's facts first (one round trip), then scope-group memberships only where :meth:`access_found`
        needs them (bulk approvers: a tenant-wide or tag-scoped role costs one round trip for any list)."""
        catalog = await self.catalog()
        mine = self.requester_requests(catalog, requester_id)
        answers = await self._guarded(self._send(mine))
        requester = await self.requester_facts(mine, answers)
        return await self.access_found(catalog, requester, devices)

    async def access_found(
        self, catalog: Catalog, requester: RequesterFacts, devices: Sequence[Device]
    ) -> list[Access]:
        """Decide for devices just read from Intune, the requester's facts already known (a message turn).

        Tenant-wide and tag-scoped roles need nothing more. Scope-group memberships (the primary user's, the device
        object's) are asked only for a device a held ``resourceScope`` assignment could still admit — one more round
        trip, or two when the device's Entra object id is not known yet — and only for the held assignments' groups.
        """
        return await self._guarded(self._access_found(catalog, requester, list(devices)))

    async def _access_found(self, catalog: Catalog, requester: RequesterFacts, devices: list[Device]) -> list[Access]:
        groups = batch.held_scope_groups(catalog, requester)
        facts = [self._facts(catalog, requester, device, frozenset()) for device in devices]
        accesses = {k: Access(can_read(f), decide(f)) for k, f in enumerate(facts)}
        need = {k: f for k, f in enumerate(facts) if groups and unsettled(accesses[k]) and device_scope_pending(f)}
        if need:
            await self._scope_round(accesses, need, devices, groups)
        return [accesses[k] for k in range(len(devices))]

    async def _scope_round(
        self, accesses: dict[int, Access], need: dict[int, Facts], devices: list[Device], groups: list[str]
    ) -> None:
        answers = await self._send([r for k in need for r in self._scope_requests(k, devices[k], groups)])
        device_groups, resolved, _ = self._device_answers(answers, devices)
        for k, f in need.items():
            f.device_scope_groups = frozenset(device_groups[k])
            accesses[k] = Access(can_read(f), decide(f))
        await self._device_round(accesses, {k: f for k, f in need.items() if resolved.get(k)}, resolved, groups)

    def _facts(
        self, catalog: Catalog, requester: RequesterFacts, device: Device, scope_groups: frozenset[str]
    ) -> Facts:
        s = self._settings
        return Facts(
            roles=catalog.roles,
            assignments=catalog.assignments,
            requester_groups=requester.groups,
            device_tags=device.effective_scope_tags,
            device_has_primary_user=bool(device.user_id),
            device_scope_groups=scope_groups,
            entra_role_ids=requester.entra_roles,
            entra_roles_allowed=s.entra_admin_roles_allowed,
            admin_role_ids=frozenset(s.entra_admin_role_ids),
        )

    def _plan(self, catalog: Catalog, devices: list[Device], *, reread: bool) -> tuple[list[dict[str, Any]], list[str]]:
        """The device sub-requests of a check on known devices: per device its fresh copy and its scope facts.

        The requester's groups are not known yet, so every reader assignment's scope groups are asked at once.
        """
        scope_groups = batch.reader_scope_groups(catalog)
        requests: list[dict[str, Any]] = []
        for k, device in enumerate(devices):
            if reread:
                requests.append(batch.fresh_request(k, device))
            requests.extend(self._scope_requests(k, device, scope_groups))
        return requests, scope_groups

    def _scope_requests(self, k: int, device: Device, scope_groups: list[str]) -> list[dict[str, Any]]:
        device_object = self._device_objects.get(device.azure_ad_device_id, "")
        return batch.scope_requests(k, device, scope_groups, device_object)

    async def _send(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        """Batches of at most 20 sub-requests, sent side by side."""
        pages = await asyncio.gather(
            *(self._graph.batch(requests[i : i + CHUNK], version="beta") for i in range(0, len(requests), CHUNK))
        )
        return {rid: answer for page in pages for rid, answer in page.items()}

    def _device_answers(
        self, answers: dict[str, Any], devices: list[Device]
    ) -> tuple[list[set[str]], dict[int, str | None], dict[int, dict[str, Any] | None]]:
        """Per device: scope groups it (or its primary user) is in, its resolved Entra object, its fresh row."""
        device_groups: list[set[str]] = [set() for _ in devices]
        resolved: dict[int, str | None] = {}
        fresh_rows: dict[int, dict[str, Any] | None] = {}
        for rid, answer in answers.items():
            kind, k = Sub.parse(rid)
            if kind in (Sub.USER, Sub.DEVICE):
                device_groups[k].update(batch.groups_in(answer))
            elif kind is Sub.DEVOBJ:
                resolved[k] = self._remember_object(devices[k], answer)
            elif kind is Sub.FRESH:
                fresh_rows[k] = batch.fresh_row(devices[k], answer)
        return device_groups, resolved, fresh_rows

    async def _device_round(
        self,
        accesses: dict[int, Access],
        candidates: dict[int, Facts],
        objects: dict[int, str | None],
        groups: list[str],
    ) -> None:
        """One more round trip, only when a device object just resolved could still change an answer."""
        second = {k: f for k, f in candidates.items() if unsettled(accesses[k]) and device_scope_pending(f)}
        if not second:
            return
        more = await self._send([r for k in second for r in batch.object_checks(k, objects[k], groups)])
        found: dict[int, set[str]] = {k: set(f.device_scope_groups) for k, f in second.items()}
        for rid, answer in more.items():
            found[Sub.parse(rid)[1]].update(batch.groups_in(answer))
        for k, facts in second.items():
            facts.device_scope_groups = frozenset(found[k])
            accesses[k] = Access(can_read(facts), decide(facts))

    async def _check_many(
        self, requester_id: str, devices: list[Device], *, reread: bool = False
    ) -> list[tuple[Device | None, Access | None]]:
        catalog = await self.catalog()
        mine = self.requester_requests(catalog, requester_id)
        requests, scope_groups = self._plan(catalog, devices, reread=reread)
        answers = await self._send(mine + requests)
        requester = await self.requester_facts(mine, answers)
        device_groups, resolved, fresh_rows = self._device_answers(answers, devices)

        results: list[tuple[Device | None, Access | None]] = []
        accesses: dict[int, Access] = {}
        candidates: dict[int, Facts] = {}
        for k, device in enumerate(devices):
            if reread:
                row = fresh_rows.get(k)
                if row is None:
                    results.append((None, None))
                    continue
                fresh = Device.from_graph(row)
                if (fresh.user_id, fresh.azure_ad_device_id) != (device.user_id, device.azure_ad_device_id):
                    # The scope requests depended on these: ask again for the new ones.
                    results.append((await self._check_many(requester_id, [fresh]))[0])
                    continue
                device = fresh
            facts = self._facts(catalog, requester, device, frozenset(device_groups[k]))
            accesses[k] = Access(can_read(facts), decide(facts))
            if resolved.get(k):
                candidates[k] = facts
            results.append((device, None))
        await self._device_round(accesses, candidates, resolved, scope_groups)
        return [(device, accesses.get(k, access)) for k, (device, access) in enumerate(results)]

    def _remember_object(self, device: Device, answer: dict[str, Any]) -> str | None:
        """The Entra object id behind ``azureADDeviceId`` (immutable, so cached; bounded)."""
        device_object = batch.matched_object(device, answer)
        if len(self._device_objects) > 10_000:
            self._device_objects.clear()
        self._device_objects[device.azure_ad_device_id] = device_object
        return device_object

    async def is_group_member(self, user_id: str, group_id: str) -> bool:
        """Transitive membership of one group (used for ``APPROVER_GROUP_ID``)."""
        response = await self._graph.post(f"/v1.0/users/{user_id}/checkMemberGroups", {"groupIds": [group_id]})
        return group_id in (response.body or {}).get("value", [])

    async def can_read_devices(self, requester_id: str) -> bool:
        """Whether the requester holds Managed devices / Read anywhere (for ``history``)."""
        catalog = await self.catalog()
        readers = [
            a for a in catalog.assignments if a.role_id in catalog.roles and catalog.roles[a.role_id].permits(READ)
        ]
        requests = batch.member_checks(requester_id, (g for a in readers for g in a.members))
        if self._settings.entra_admin_roles_allowed:
            requests.append(batch.entra_roles_request(requester_id))
        answers = await self._guarded(self._send(requests))
        admin_roles = {r.lower() for r in self._settings.entra_admin_role_ids}
        for rid, answer in answers.items():
            if Sub.parse(rid)[0] is Sub.ENTRA:
                if {r.lower() for r in await batch.entra_roles_in(self._graph, answer)} & admin_roles:
                    return True
            elif batch.groups_in(answer, rid):
                return True
        return False
