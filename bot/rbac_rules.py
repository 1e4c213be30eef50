"""The rule of who may deprovision (and read) a device, as Intune decides it (graph-intune.md §14, §16).

Value types and pure functions only: :func:`decide` and :func:`can_read` over :class:`Facts` already fetched. The
fetching is :class:`bot.rbac.RbacChecker`'s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bot.decision import Decision, DenyReason

RETIRE = "Microsoft.Intune_RemoteTasks_Retire"
READ = "Microsoft.Intune_ManagedDevices_Read"
ALL_DEVICES_SCOPES = {"alldevices", "alldevicesandlicensedusers"}
LICENSED_USERS_SCOPE = "alllicensedusers"


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


def device_scope_pending(facts: Facts) -> bool:
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


def unsettled(access: Access) -> bool:
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
    """The tenant's Intune role definitions and assignments, and its scope tags' names (cached, see ``bot.rbac_catalog``)."""

    roles: dict[str, RoleDefinition]
    assignments: list[RoleAssignment]
    tag_names: dict[str, str]
    fetched_at: float = field(default_factory=time.monotonic)
