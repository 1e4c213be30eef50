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
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.decision import Decision, DenyReason
from bot.devices import SELECT as DEVICE_SELECT
from bot.devices import Device
from bot.errors import BotError, GraphError, RbacUnavailable
from bot.graph import GraphClient, odata_string
from bot.settings import Settings

log = logging.getLogger("bot.rbac")
_T = TypeVar("_T")

RETIRE = "Microsoft.Intune_RemoteTasks_Retire"
READ = "Microsoft.Intune_ManagedDevices_Read"
ALL_DEVICES_SCOPES = {"alldevices", "alldevicesandlicensedusers"}
LICENSED_USERS_SCOPE = "alllicensedusers"
CHUNK = 20
ENTRA_ROLES_HEADERS = {"ConsistencyLevel": "eventual"}


def normalise_action(action: str) -> str:
    """``Microsoft.Intune/ManagedDevices/Read`` (legacy) → ``Microsoft.Intune_ManagedDevices_Read``."""
    action = action.strip()
    if "/" in action:
        head, *rest = action.split("/")
        return head + "_" + "_".join(rest)
    return action


@dataclass(frozen=True)
class RoleDefinition:
    id: str
    name: str
    allowed: frozenset[str]
    not_allowed: frozenset[str]
    built_in: bool = False

    def permits(self, action: str) -> bool:
        return not self.forbids(action) and self.mentions(action)

    def forbids(self, action: str) -> bool:
        # ``"*"`` means every action (§6), in ``notAllowedResourceActions`` too: fail closed.
        # A prefix wildcard (``Microsoft.Intune_RemoteTasks_*``) in the forbidden list forbids too.
        return any(
            entry == action or entry == "*" or (entry.endswith("*") and action.startswith(entry[:-1]))
            for entry in self.not_allowed
        )

    def mentions(self, action: str) -> bool:
        return action in self.allowed or "*" in self.allowed

    @classmethod
    def from_graph(cls, row: dict[str, Any]) -> RoleDefinition:
        allowed: set[str] = set()
        not_allowed: set[str] = set()
        for key in ("rolePermissions", "permissions"):
            for perm in row.get(key) or []:
                allowed.update(normalise_action(a) for a in perm.get("actions") or [])
                for ra in perm.get("resourceActions") or []:
                    allowed.update(normalise_action(a) for a in ra.get("allowedResourceActions") or [])
                    not_allowed.update(normalise_action(a) for a in ra.get("notAllowedResourceActions") or [])
        return cls(
            id=str(row.get("id", "")),
            name=str(row.get("displayName", "")),
            allowed=frozenset(allowed),
            not_allowed=frozenset(not_allowed),
            built_in=bool(row.get("isBuiltIn") or row.get("isBuiltInRoleDefinition")),
        )


@dataclass(frozen=True)
class RoleAssignment:
    id: str
    name: str
    role_id: str
    members: tuple[str, ...]
    scope_type: str
    scope_groups: tuple[str, ...]
    scope_tags: tuple[str, ...]

    @classmethod
    def from_graph(cls, row: dict[str, Any], role_id: str) -> RoleAssignment:
        groups = list(row.get("resourceScopes") or []) + list(row.get("scopeMembers") or [])
        return cls(
            id=str(row.get("id", "")),
            name=str(row.get("displayName", "")),
            role_id=role_id,
            members=tuple(dict.fromkeys(str(m) for m in row.get("members") or [])),
            scope_type=str(row.get("scopeType") or "resourceScope"),
            scope_groups=tuple(dict.fromkeys(str(g) for g in groups)),
            scope_tags=tuple(str(t) for t in row.get("roleScopeTagIds") or []),
        )


@dataclass(frozen=True)
class Access:
    """What a requester may do with one device: see it at all (least disclosure), and deprovision it."""

    readable: bool
    decision: Decision


class Sub(enum.Enum):
    """The kinds of sub-request in a role-check ``$batch``; ids read ``kind.device.chunk``."""

    ME = "me"  # the requester's group memberships
    ENTRA = "entra"  # the requester's Entra admin roles
    USER = "pu"  # device k's primary user's memberships of scope groups
    DEVICE = "dv"  # device k's Entra object's memberships of scope groups
    DEVOBJ = "devobj"  # device k's Entra object id
    FRESH = "fresh"  # device k re-read from Intune

    def id(self, device: int = 0, chunk: int = 0) -> str:
        return f"{self.value}.{device}.{chunk}"

    @staticmethod
    def parse(rid: str) -> tuple[Sub, int]:
        kind, device, _ = rid.split(".")
        return Sub(kind), int(device)


@dataclass(frozen=True)
class RequesterFacts:
    """The requester's side of a check, the same for every device: admin-group memberships, Entra roles."""

    groups: frozenset[str]
    entra_roles: frozenset[str]


@dataclass
class Facts:
    """Everything :func:`decide` needs, already fetched."""

    roles: dict[str, RoleDefinition]
    assignments: list[RoleAssignment]
    requester_groups: frozenset[str]
    device_tags: tuple[str, ...]
    device_has_primary_user: bool
    device_scope_groups: frozenset[str]
    entra_role_ids: frozenset[str] = frozenset()
    entra_roles_allowed: bool = True
    admin_role_ids: frozenset[str] = frozenset()


def _in_scope(a: RoleAssignment, facts: Facts) -> bool:
    scope = a.scope_type.lower()
    if scope in ALL_DEVICES_SCOPES:
        return True
    if scope == LICENSED_USERS_SCOPE:
        return facts.device_has_primary_user
    if scope == "resourcescope":
        return any(g in facts.device_scope_groups for g in a.scope_groups)
    return False  # unknownFutureValue and anything new: fail closed


def _tags_match(a: RoleAssignment, facts: Facts) -> bool:
    return not a.scope_tags or bool(set(a.scope_tags) & set(facts.device_tags or ("0",)))


def _device_scope_pending(facts: Facts) -> bool:
    """A held ``resourceScope`` assignment with Managed devices / Read passes clauses 1 and 2 but not (yet) 3.

    Only then can the device object's own group memberships still change a decision (or its reason), for
    deprovision and for read alike (every assignment that can grant deprovision also grants read).
    """
    for a in facts.assignments:
        role = facts.roles.get(a.role_id)
        if (
            role is not None
            and a.scope_type.lower() == "resourcescope"
            and set(a.members) & facts.requester_groups
            and role.permits(READ)
            and not _in_scope(a, facts)
        ):
            return True
    return False


def _unsettled(access: Access) -> bool:
    """Not yet readable and allowed: more facts about the device could still change the answer."""
    return not (access.readable and access.decision.allowed)


def _entra_admin(facts: Facts) -> str:
    if not facts.entra_roles_allowed:
        return ""
    held = {r.lower() for r in facts.entra_role_ids}
    return next((r for r in sorted(facts.admin_role_ids) if r.lower() in held), "")


def can_read(facts: Facts) -> bool:
    """The least-disclosure rule (graph-intune.md §16): could the requester see this device in Intune?

    Clause (a) of §14, or an assignment whose role allows Managed devices / Read (and does not forbid it), held by
    the requester, with the device in its scope by clauses 3–4.
    """
    if _entra_admin(facts):
        return True
    for a in facts.assignments:
        role = facts.roles.get(a.role_id)
        if (
            role is not None
            and set(a.members) & facts.requester_groups
            and role.permits(READ)
            and _in_scope(a, facts)
            and _tags_match(a, facts)
        ):
            return True
    return False


def decide(facts: Facts) -> Decision:
    """The pure rule. When denied, the reason is that of the assignment that got furthest."""
    entra_role = _entra_admin(facts)
    if entra_role:
        return Decision(True, basis="entra_role", entra_role_id=entra_role)
    held = [a for a in facts.assignments if set(a.members) & facts.requester_groups]
    roles_held = tuple(dict.fromkeys(facts.roles[a.role_id].name for a in held if a.role_id in facts.roles))
    best: tuple[int, DenyReason, RoleAssignment | None] = (0, DenyReason.NO_ROLE, None)
    a: RoleAssignment | None
    for a in held:
        role = facts.roles.get(a.role_id)
        if role is None:
            continue
        if role.forbids(RETIRE) or (role.permits(RETIRE) and role.forbids(READ)):
            progress, reason = 1, DenyReason.NOT_ALLOWED
        elif not role.permits(RETIRE):
            continue
        elif not role.permits(READ):
            progress, reason = 2, DenyReason.MISSING_READ
        elif not _in_scope(a, facts):
            progress, reason = 3, DenyReason.OUT_OF_SCOPE_GROUPS
        elif not _tags_match(a, facts):
            progress, reason = 4, DenyReason.OUT_OF_SCOPE_TAGS
        else:
            return Decision(
                True,
                basis="intune_role",
                assignment_id=a.id,
                assignment_name=a.name,
                role_id=role.id,
                role_name=role.name,
                roles_held=roles_held,
            )
        if progress > best[0]:
            best = (progress, reason, a)
    _, reason, a = best
    role = facts.roles.get(a.role_id) if a else None
    return Decision(
        False,
        reason=reason,
        assignment_id=a.id if a else "",
        assignment_name=a.name if a else "",
        role_id=role.id if role else "",
        role_name=role.name if role else "",
        roles_held=roles_held,
        device_tags=tuple(facts.device_tags or ("0",)),
        assignment_tags=a.scope_tags if a else (),
    )


@dataclass
class Catalog:
    roles: dict[str, RoleDefinition]
    assignments: list[RoleAssignment]
    tag_names: dict[str, str]
    fetched_at: float = field(default_factory=time.monotonic)


def _chunks(items: Iterable[str], size: int = CHUNK) -> list[list[str]]:
    values = list(dict.fromkeys(items))
    return [values[i : i + size] for i in range(0, len(values), size)]


class RbacChecker:
    """Gathers facts from Graph (batched, role catalogue cached) and applies :func:`decide`."""

    def __init__(self, settings: Settings, graph: GraphClient) -> None:
        self._settings = settings
        self._graph = graph
        self._catalog: Catalog | None = None
        self._lock = asyncio.Lock()
        self._refresh_task: asyncio.Task[None] | None = None
        self._device_objects: dict[str, str | None] = {}  # azureADDeviceId → Entra object id (immutable)

    # -- role catalogue (TTL cache, refreshed without blocking) ------------------------------------------

    async def catalog(self) -> Catalog:
        cached = self._catalog
        if cached is not None:
            if time.monotonic() - cached.fetched_at >= self._settings.rbac_cache_ttl and (
                self._refresh_task is None or self._refresh_task.done()
            ):
                self._refresh_task = asyncio.create_task(self._background_refresh())
            return cached
        async with self._lock:
            if self._catalog is None:
                self._catalog = await self._fetch_catalog()
            return self._catalog

    def invalidate(self) -> None:
        self._catalog = None

    async def _background_refresh(self) -> None:
        try:
            self._catalog = await self._fetch_catalog()
        except BotError as exc:  # keep serving the previous copy; the next request tries again
            log.warning("role catalogue refresh failed", extra={"error": type(exc).__name__})

    async def _fetch_catalog(self) -> Catalog:
        answers = await self._graph.batch(
            [
                {"id": "defs", "method": "GET", "url": "/deviceManagement/roleDefinitions"},
                {
                    "id": "assignments",
                    "method": "GET",
                    "url": "/deviceManagement/roleAssignments?$expand=roleDefinition",
                },
                {
                    "id": "tags",
                    "method": "GET",
                    "url": "/deviceManagement/roleScopeTags?$select=id,displayName",
                },
            ],
            version="beta",
        )
        defs = await self._collect(answers.get("defs"), "roleDefinitions")
        rows = await self._collect(answers.get("assignments"), "roleAssignments")
        try:
            tags = await self._collect(answers.get("tags"), "roleScopeTags")
        except RbacUnavailable:
            tags = []  # names are cosmetic
        roles = {r.id: r for r in (RoleDefinition.from_graph(d) for d in defs)}
        assignments = [
            RoleAssignment.from_graph(row, str((row.get("roleDefinition") or {}).get("id", ""))) for row in rows
        ]
        tag_names = {str(t.get("id")): str(t.get("displayName", "")) for t in tags}
        tag_names.setdefault("0", "Default")
        return Catalog(roles, assignments, tag_names)

    async def _collect(
        self, answer: dict[str, Any] | None, what: str, headers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        body = self._ok(answer, what)
        items = list(body.get("value", []))
        next_link = body.get("@odata.nextLink")
        while next_link:
            page = await self._graph.get(next_link, headers=headers)
            items.extend(page.get("value", []))
            next_link = page.get("@odata.nextLink")
        return items

    @staticmethod
    def _ok(answer: dict[str, Any] | None, what: str, *, allow_404: bool = False) -> dict[str, Any]:
        if answer is None:
            raise RbacUnavailable(GraphError(0, "MissingResponse", what))
        status = int(answer.get("status", 0))
        body = answer.get("body") or {}
        if allow_404 and status == 404:
            return {}
        if not 200 <= status < 300:
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise RbacUnavailable(GraphError(status, str(err.get("code", "")), str(err.get("message", what))))
        return body if isinstance(body, dict) else {}

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
        """Re-read the device from Intune and decide, in the same ``$batch`` round trip (used at confirmation)."""
        fresh, access = await self.access_current(requester_id, device)
        return fresh, access.decision if access else None

    async def access_current(self, requester_id: str, device: Device) -> tuple[Device | None, Access | None]:
        """Re-read the device from Intune and decide on the fresh copy, in the same ``$batch`` round trip.

        Returns ``(None, None)`` when the device is gone. If its primary user or Entra device changed, the check is
        repeated for the new ones (the scope requests depended on them).
        """
        return (await self._guarded(self._check_many(requester_id, [device], reread=True)))[0]

    async def access_current_many(
        self, requester_id: str, devices: Sequence[Device]
    ) -> list[tuple[Device | None, Access | None]]:
        """:meth:`access_current` for several devices (bulk confirmation and approval): batched the same way."""
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
        requests = [
            self._check_groups(Sub.ME.id(0, i), f"/users/{requester_id}", chunk)
            for i, chunk in enumerate(_chunks(g for a in catalog.assignments for g in a.members))
        ]
        if self._settings.entra_admin_roles_allowed:
            requests.append(self._entra_roles_request(requester_id))
        return requests

    async def requester_facts(self, requests: Sequence[dict[str, Any]], answers: dict[str, Any]) -> RequesterFacts:
        """The answers to :meth:`requester_requests`; a missing or failed one fails closed (:class:`RbacUnavailable`)."""
        return await self._guarded(self._requester_facts(requests, answers))

    async def _requester_facts(self, requests: Sequence[dict[str, Any]], answers: dict[str, Any]) -> RequesterFacts:
        groups: set[str] = set()
        entra_roles: set[str] = set()
        for request in requests:
            rid = str(request["id"])
            answer = answers.get(rid)
            if Sub.parse(rid)[0] is Sub.ENTRA:
                rows = await self._collect(answer, "transitiveRoleAssignments", ENTRA_ROLES_HEADERS)
                entra_roles.update(str(r.get("roleDefinitionId")) for r in rows)
            else:
                groups.update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
        return RequesterFacts(frozenset(groups), frozenset(entra_roles))

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
        groups = self._held_scope_groups(catalog, requester)
        facts = [self._facts(catalog, requester, device, frozenset()) for device in devices]
        accesses = {k: Access(can_read(f), decide(f)) for k, f in enumerate(facts)}
        need = {k: f for k, f in enumerate(facts) if groups and _unsettled(accesses[k]) and _device_scope_pending(f)}
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

    @staticmethod
    def _held_scope_groups(catalog: Catalog, requester: RequesterFacts) -> list[str]:
        """The scope groups of the requester's own ``resourceScope`` assignments (the only ones decide reads)."""
        return [
            g
            for a in catalog.assignments
            if a.scope_type.lower() == "resourcescope"
            and set(a.members) & requester.groups
            and a.role_id in catalog.roles
            and (catalog.roles[a.role_id].mentions(RETIRE) or catalog.roles[a.role_id].permits(READ))
            for g in a.scope_groups
        ]

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
        readers = [
            a
            for a in catalog.assignments
            if a.role_id in catalog.roles
            and (catalog.roles[a.role_id].mentions(RETIRE) or catalog.roles[a.role_id].permits(READ))
        ]
        scope_groups = [g for a in readers if a.scope_type.lower() == "resourcescope" for g in a.scope_groups]
        requests: list[dict[str, Any]] = []
        for k, device in enumerate(devices):
            if reread:
                requests.append(
                    {
                        "id": Sub.FRESH.id(k),
                        "method": "GET",
                        "url": f"/deviceManagement/managedDevices/{device.id}?$select={DEVICE_SELECT}",
                    }
                )
            requests.extend(self._scope_requests(k, device, scope_groups))
        return requests, scope_groups

    def _scope_requests(self, k: int, device: Device, scope_groups: list[str]) -> list[dict[str, Any]]:
        """Scope-group facts of device ``k``: its primary user's and its Entra object's memberships."""
        if not scope_groups:
            return []
        requests = []
        if device.user_id:
            for i, chunk in enumerate(_chunks(scope_groups)):
                requests.append(self._check_groups(Sub.USER.id(k, i), f"/users/{device.user_id}", chunk))
        device_object = self._device_objects.get(device.azure_ad_device_id, "")
        if device.azure_ad_device_id and device_object == "":
            requests.append(
                {
                    "id": Sub.DEVOBJ.id(k),
                    "method": "GET",
                    "url": "/devices?$filter=deviceId eq "
                    + odata_string(device.azure_ad_device_id)
                    + "&$select=id,deviceId",
                }
            )
        elif device_object:
            for i, chunk in enumerate(_chunks(scope_groups)):
                requests.append(self._check_groups(Sub.DEVICE.id(k, i), f"/devices/{device_object}", chunk))
        return requests

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
                device_groups[k].update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
            elif kind is Sub.DEVOBJ:
                resolved[k] = self._remember_object(devices[k], answer)
            elif kind is Sub.FRESH:
                fresh_rows[k] = self._fresh_row(devices[k], answer)
        return device_groups, resolved, fresh_rows

    async def _device_round(
        self,
        accesses: dict[int, Access],
        candidates: dict[int, Facts],
        objects: dict[int, str | None],
        groups: list[str],
    ) -> None:
        """One more round trip, only when a device object just resolved could still change an answer."""
        second = {k: f for k, f in candidates.items() if _unsettled(accesses[k]) and _device_scope_pending(f)}
        if not second:
            return
        more = await self._send(
            [
                self._check_groups(Sub.DEVICE.id(k, i), f"/devices/{objects[k]}", chunk)
                for k in second
                for i, chunk in enumerate(_chunks(groups))
            ]
        )
        found: dict[int, set[str]] = {k: set(f.device_scope_groups) for k, f in second.items()}
        for rid, answer in more.items():
            found[Sub.parse(rid)[1]].update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
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
        rows = self._ok(answer, "devices").get("value", [])
        match = [r for r in rows if str(r.get("deviceId", "")).lower() == device.azure_ad_device_id.lower()]
        device_object = str(match[0]["id"]) if len(match) == 1 else None
        if len(self._device_objects) > 10_000:
            self._device_objects.clear()
        self._device_objects[device.azure_ad_device_id] = device_object
        return device_object

    def _fresh_row(self, device: Device, answer: dict[str, Any] | None) -> dict[str, Any] | None:
        """The re-read device, or ``None`` when it is gone (or Intune answered with another device)."""
        if answer is not None and int(answer.get("status", 0)) in (400, 404):
            return None
        row = self._ok(answer, "managedDevice")
        return row if str(row.get("id", "")).lower() == device.id.lower() else None

    @staticmethod
    def _entra_roles_request(requester_id: str) -> dict[str, Any]:
        return {
            "id": Sub.ENTRA.id(),
            "method": "GET",
            "url": "/roleManagement/directory/transitiveRoleAssignments?$count=true&$filter="
            + f"principalId eq {odata_string(requester_id)}&$select=roleDefinitionId",
            "headers": dict(ENTRA_ROLES_HEADERS),
        }

    @staticmethod
    def _check_groups(rid: str, base: str, group_ids: list[str]) -> dict[str, Any]:
        return {
            "id": rid,
            "method": "POST",
            "url": f"{base}/checkMemberGroups",
            "headers": {"Content-Type": "application/json"},
            "body": {"groupIds": group_ids},
        }

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
        requests: list[dict[str, Any]] = [
            self._check_groups(Sub.ME.id(0, i), f"/users/{requester_id}", chunk)
            for i, chunk in enumerate(_chunks(g for a in readers for g in a.members))
        ]
        if self._settings.entra_admin_roles_allowed:
            requests.append(self._entra_roles_request(requester_id))
        answers = await self._guarded(self._send(requests))
        for rid, answer in answers.items():
            if Sub.parse(rid)[0] is Sub.ENTRA:
                rows = await self._collect(answer, "transitiveRoleAssignments", ENTRA_ROLES_HEADERS)
                held = {str(r.get("roleDefinitionId")).lower() for r in rows}
                if held & {r.lower() for r in self._settings.entra_admin_role_ids}:
                    return True
            elif self._ok(answer, rid, allow_404=True).get("value"):
                return True
        return False
