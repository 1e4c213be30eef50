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
is a pure function over them. Any Graph failure fails closed (:class:`~bot.errors.RbacUnavailable`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot.devices import SELECT as DEVICE_SELECT
from bot.devices import Device
from bot.errors import BotError, GraphError, RbacUnavailable
from bot.graph import GraphClient, odata_string
from bot.settings import Settings

log = logging.getLogger("bot.rbac")

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


class DenyReason(enum.StrEnum):
    NO_ROLE = "no_role_with_retire"
    NOT_ALLOWED = "action_not_allowed"
    MISSING_READ = "role_lacks_managed_devices_read"
    OUT_OF_SCOPE_GROUPS = "device_not_in_scope_groups"
    OUT_OF_SCOPE_TAGS = "device_outside_scope_tags"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: DenyReason | None = None
    basis: str = ""  # "entra_role" | "intune_role"
    assignment_id: str = ""
    assignment_name: str = ""
    role_id: str = ""
    role_name: str = ""
    entra_role_id: str = ""
    roles_held: tuple[str, ...] = ()
    device_tags: tuple[str, ...] = ()
    assignment_tags: tuple[str, ...] = ()

    def audit(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v}


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
    """A held ``resourceScope`` assignment passes clauses 1 and 2 but not (yet) 3.

    Only then can the device object's own group memberships still change the decision (or its reason).
    """
    for a in facts.assignments:
        role = facts.roles.get(a.role_id)
        if (
            role is not None
            and a.scope_type.lower() == "resourcescope"
            and set(a.members) & facts.requester_groups
            and role.permits(RETIRE)
            and role.permits(READ)
            and not _in_scope(a, facts)
        ):
            return True
    return False


def decide(facts: Facts) -> Decision:
    """The pure rule. When denied, the reason is that of the assignment that got furthest."""
    if facts.entra_roles_allowed:
        entra_held = {r.lower() for r in facts.entra_role_ids}
        for role_id in sorted(r for r in facts.admin_role_ids if r.lower() in entra_held):
            return Decision(True, basis="entra_role", entra_role_id=role_id)
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
        try:
            _, decision = await self._check(requester_id, device)
        except RbacUnavailable:
            raise
        except GraphError as exc:
            raise RbacUnavailable(exc) from exc
        assert decision is not None
        return decision

    async def check_current(self, requester_id: str, device: Device) -> tuple[Device | None, Decision | None]:
        """Re-read the device from Intune and decide, in the same ``$batch`` round trip (used at confirmation).

        Returns ``(None, None)`` when the device is gone. The decision is taken on the fresh device (its scope tags
        and primary user); if the primary user or Entra device changed, the check is repeated for the new ones.
        """
        try:
            return await self._check(requester_id, device, reread=True)
        except RbacUnavailable:
            raise
        except GraphError as exc:
            raise RbacUnavailable(exc) from exc

    async def _check(
        self, requester_id: str, device: Device, *, reread: bool = False
    ) -> tuple[Device | None, Decision | None]:
        catalog = await self.catalog()
        s = self._settings
        relevant = [
            a for a in catalog.assignments if a.role_id in catalog.roles and catalog.roles[a.role_id].mentions(RETIRE)
        ]
        other = [a for a in catalog.assignments if a not in relevant]
        member_groups = [g for a in relevant + other for g in a.members]
        scoped = [a for a in relevant if a.scope_type.lower() == "resourcescope"]
        scope_groups = [g for a in scoped for g in a.scope_groups]

        requests: list[dict[str, Any]] = []
        for i, chunk in enumerate(_chunks(member_groups)):
            requests.append(self._check_groups(f"me{i}", f"/users/{requester_id}", chunk))
        if s.entra_admin_roles_allowed:
            requests.append(self._entra_roles_request(requester_id))
        device_object = self._device_objects.get(device.azure_ad_device_id, "")
        if scope_groups:
            if device.user_id:
                for i, chunk in enumerate(_chunks(scope_groups)):
                    requests.append(self._check_groups(f"pu{i}", f"/users/{device.user_id}", chunk))
            if device.azure_ad_device_id and device_object == "":
                requests.append(
                    {
                        "id": "devobj",
                        "method": "GET",
                        "url": "/devices?$filter=deviceId eq "
                        + odata_string(device.azure_ad_device_id)
                        + "&$select=id,deviceId",
                    }
                )
            elif device_object:
                for i, chunk in enumerate(_chunks(scope_groups)):
                    requests.append(self._check_groups(f"dv{i}", f"/devices/{device_object}", chunk))

        if reread:
            requests.insert(
                0,
                {
                    "id": "fresh",
                    "method": "GET",
                    "url": f"/deviceManagement/managedDevices/{device.id}?$select={DEVICE_SELECT}",
                },
            )
        answers: dict[str, Any] = {}
        for i in range(0, len(requests), CHUNK):
            answers.update(await self._graph.batch(requests[i : i + CHUNK], version="beta"))

        if reread:
            fresh_answer = answers.pop("fresh", None)
            if fresh_answer is not None and int(fresh_answer.get("status", 0)) in (400, 404):
                return None, None
            row = self._ok(fresh_answer, "managedDevice")
            if str(row.get("id", "")).lower() != device.id.lower():
                return None, None
            fresh = Device.from_graph(row)
            if (fresh.user_id, fresh.azure_ad_device_id) != (device.user_id, device.azure_ad_device_id):
                return await self._check(requester_id, fresh)  # the scope requests depended on these: ask again
            device = fresh

        requester_groups: set[str] = set()
        device_groups: set[str] = set()
        entra_roles: set[str] = set()
        for rid, answer in answers.items():
            if rid.startswith("me"):
                requester_groups.update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
            elif rid.startswith(("pu", "dv")):
                device_groups.update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
            elif rid == "entra":
                rows = await self._collect(answer, "transitiveRoleAssignments", ENTRA_ROLES_HEADERS)
                entra_roles.update(str(r.get("roleDefinitionId")) for r in rows)
            elif rid == "devobj":
                rows = self._ok(answer, "devices").get("value", [])
                match = [r for r in rows if str(r.get("deviceId", "")).lower() == device.azure_ad_device_id.lower()]
                device_object = str(match[0]["id"]) if len(match) == 1 else None
                if len(self._device_objects) > 10_000:  # bounded: ids are immutable, the cache is a convenience
                    self._device_objects.clear()
                self._device_objects[device.azure_ad_device_id] = device_object

        facts = Facts(
            roles=catalog.roles,
            assignments=catalog.assignments,
            requester_groups=frozenset(requester_groups),
            device_tags=device.effective_scope_tags,
            device_has_primary_user=bool(device.user_id),
            device_scope_groups=frozenset(device_groups),
            entra_role_ids=frozenset(entra_roles),
            entra_roles_allowed=s.entra_admin_roles_allowed,
            admin_role_ids=frozenset(s.entra_admin_role_ids),
        )
        decision = decide(facts)
        needs_device_groups = (
            not decision.allowed and device_object and "devobj" in answers and _device_scope_pending(facts)
        )
        if needs_device_groups:
            # Second round trip, only when the device object's own membership can still change the answer.
            second = await self._graph.batch(
                [
                    self._check_groups(f"dv{i}", f"/devices/{device_object}", c)
                    for i, c in enumerate(_chunks(scope_groups))
                ],
                version="beta",
            )
            for answer in second.values():
                device_groups.update(self._ok(answer, "checkMemberGroups", allow_404=True).get("value", []))
            facts.device_scope_groups = frozenset(device_groups)
            decision = decide(facts)
        return device, decision

    @staticmethod
    def _entra_roles_request(requester_id: str) -> dict[str, Any]:
        return {
            "id": "entra",
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
            self._check_groups(f"me{i}", f"/users/{requester_id}", chunk)
            for i, chunk in enumerate(_chunks(g for a in readers for g in a.members))
        ]
        if self._settings.entra_admin_roles_allowed:
            requests.append(self._entra_roles_request(requester_id))
        answers: dict[str, Any] = {}
        for i in range(0, len(requests), CHUNK):
            answers.update(await self._graph.batch(requests[i : i + CHUNK], version="beta"))
        for rid, answer in answers.items():
            if rid == "entra":
                rows = await self._collect(answer, "transitiveRoleAssignments", ENTRA_ROLES_HEADERS)
                held = {str(r.get("roleDefinitionId")).lower() for r in rows}
                if held & {r.lower() for r in self._settings.entra_admin_role_ids}:
                    return True
            elif self._ok(answer, rid, allow_404=True).get("value"):
                return True
        return False
