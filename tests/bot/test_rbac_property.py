"""Property: the bot's decision equals a brute-force reading of graph-intune.md §14 on random small tenants.

The reference evaluator below is written from the rule text alone and imports nothing from :mod:`bot.rbac`
except to *call* the implementation under test. Tenants are random: role definitions with random allowed /
not-allowed sets (including ``"*"``, legacy slash spellings, either of ``permissions`` / ``rolePermissions``),
assignments with random members, scope type, scope groups and tags, nested (even cyclic) groups, a device with
random tags, primary user and scope memberships, and random Entra roles.

1. :func:`bot.rbac.decide` on :class:`Facts` built from the tenant (300 examples).
2. The full :class:`RbacChecker` over HTTPS against a simulator holding the same tenant (40 examples).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.devices import Device
from bot.graph import GraphClient, MsalTokenSource
from bot.rbac import Decision, DenyReason, Facts, RbacChecker, RoleAssignment, RoleDefinition, can_read, decide
from simulator import Simulator
from simulator.testing import running_simulator
from tests.harness import settings_for

# -- the rule's vocabulary (§6, §8, §14), spelled out here on purpose -----------------------------------

RETIRE = "Microsoft.Intune_RemoteTasks_Retire"
READ = "Microsoft.Intune_ManagedDevices_Read"
OTHER = "Microsoft.Intune_Organization_Read"
STAR = "*"
LEGACY = {RETIRE: "Microsoft.Intune/RemoteTasks/Retire", READ: "Microsoft.Intune/ManagedDevices/Read"}
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
INTUNE_ADMIN = "3a2c62db-5318-420d-8d74-23affee5d9d5"
GLOBAL_READER = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"
SOME_ROLE = "729827e3-9c14-49f7-bb1b-9608f156bbb8"
SCOPE_TYPES = ("allDevices", "allDevicesAndLicensedUsers", "allLicensedUsers", "resourceScope", "unknownFutureValue")
MISSING_ROLE = "99999999-9999-4999-8999-999999999999"


def gid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012x}"


REQUESTER = "00000000-0000-4000-9000-000000000001"
PRIMARY_USER = "00000000-0000-4000-9000-000000000002"
DEVICE_OBJECT = "00000000-0000-4000-a000-000000000001"
AZURE_DEVICE_ID = "00000000-0000-4000-b000-000000000001"


# -- random tenants ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    groups: tuple[str, ...]
    parents: Mapping[str, frozenset[str]]  # object id → groups it is a direct member of
    roles: tuple[dict[str, Any], ...]  # raw Graph roleDefinition rows
    assignments: tuple[dict[str, Any], ...]  # raw Graph roleAssignment rows + "roleDefinitionId"
    device_tags: tuple[str, ...]
    has_primary_user: bool
    has_device_object: bool
    entra_roles: tuple[tuple[str, str], ...]  # (principal id, role definition id)
    admin_role_ids: frozenset[str]
    entra_roles_allowed: bool


BOOL = st.booleans()
RARELY = st.integers(0, 3)
SCOPE_TYPE = st.sampled_from(SCOPE_TYPES)
ENTRA_ROLE = st.sampled_from((GLOBAL_ADMIN, INTUNE_ADMIN, GLOBAL_READER, SOME_ROLE))
WHERE = st.sampled_from(("both", "permissions", "rolePermissions", "split"))
ACTIONS = (RETIRE, READ, STAR, OTHER)


def pick(draw: st.DrawFn, pool: Iterable[str], max_size: int | None = None, *, likely: bool = False) -> list[str]:
    """A random subset of ``pool`` (in pool order), at most ``max_size`` long; ``likely``: each item 3 in 4.

    Drawing from shared strategies keeps generation cheap (no new strategy objects per draw).
    """
    chosen = [x for x in pool if (draw(RARELY) > 0 if likely else draw(BOOL))]
    return chosen[:max_size] if max_size is not None else chosen


def draw_role(draw: st.DrawFn, index: int) -> dict[str, Any]:
    # Biased towards roles that matter: Retire and Read are each present 3 times in 4.
    allowed = [a for a in (RETIRE, READ) if draw(RARELY) > 0]
    allowed += [a for a, keep in ((STAR, draw(RARELY) == 0), (OTHER, draw(BOOL))) if keep]
    not_allowed = pick(draw, ACTIONS, 2) if draw(RARELY) == 0 else []
    legacy = [a for a in allowed if a in LEGACY and draw(BOOL)]  # these go to actions[] in slash form
    modern = [a for a in allowed if a not in legacy]
    where = draw(WHERE)
    perm = {
        "actions": [LEGACY[a] for a in legacy],
        "resourceActions": [{"allowedResourceActions": modern, "notAllowedResourceActions": not_allowed}],
    }
    row: dict[str, Any] = {"id": f"00000000-0000-4000-c000-{index:012x}", "displayName": f"Role {index}"}
    if where == "split":  # allowed in one list, forbidden in the other
        row["permissions"] = [{**perm, "resourceActions": [{"allowedResourceActions": modern}]}]
        row["rolePermissions"] = [{"resourceActions": [{"notAllowedResourceActions": not_allowed}]}]
    else:
        row["permissions"] = [perm] if where in ("both", "permissions") else []
        row["rolePermissions"] = [perm] if where in ("both", "rolePermissions") else []
    return row


@st.composite
def tenants(draw: st.DrawFn) -> Tenant:
    groups = tuple(gid(i) for i in range(draw(st.integers(1, 6))))
    parents: dict[str, frozenset[str]] = {}
    for g in groups:
        parents[g] = frozenset(pick(draw, [x for x in groups if x != g], 2))  # nesting; cycles allowed
    parents[REQUESTER] = frozenset(pick(draw, groups, 3, likely=True))
    for obj in (PRIMARY_USER, DEVICE_OBJECT):
        parents[obj] = frozenset(pick(draw, groups, 3))
    roles = tuple(draw_role(draw, i) for i in range(draw(st.integers(1, 4))))
    role_ids = [r["id"] for r in roles] + [MISSING_ROLE]
    assignments = []
    for i in range(draw(st.integers(1, 4))):
        scope_groups = pick(draw, groups, 3)
        assignments.append(
            {
                "id": f"00000000-0000-4000-d000-{i:012x}",
                "displayName": f"Assignment {i}",
                "roleDefinitionId": role_ids[draw(st.integers(0, len(role_ids) - 1))],
                "members": pick(draw, groups, 3),
                "scopeType": draw(SCOPE_TYPE),
                "resourceScopes": scope_groups,
                "scopeMembers": scope_groups,
                "roleScopeTagIds": pick(draw, ("0", "1", "2")),
            }
        )
    principals = (REQUESTER, *groups)
    entra_roles = tuple(
        (principals[draw(st.integers(0, len(principals) - 1))], draw(ENTRA_ROLE))
        for _ in range(draw(st.integers(0, 2)))
    )
    admin_ids = frozenset(pick(draw, (GLOBAL_ADMIN, INTUNE_ADMIN, GLOBAL_READER))) or frozenset(
        {GLOBAL_ADMIN, INTUNE_ADMIN}
    )
    return Tenant(
        groups=groups,
        parents=parents,
        roles=roles,
        assignments=tuple(assignments),
        device_tags=() if draw(RARELY) == 0 else tuple(pick(draw, ("0", "1", "2", "3"))),  # untagged: 1 in 4+
        has_primary_user=draw(BOOL),
        has_device_object=draw(BOOL),
        entra_roles=entra_roles,
        admin_role_ids=admin_ids,
        entra_roles_allowed=draw(BOOL),
    )


# -- the reference: §14 read literally ------------------------------------------------------------------


def transitive_groups(t: Tenant, obj: str) -> set[str]:
    """Every group ``obj`` belongs to directly or through nested groups."""
    seen: set[str] = set()
    todo = list(t.parents.get(obj, ()))
    while todo:
        g = todo.pop()
        if g not in seen:
            seen.add(g)
            todo.extend(t.parents.get(g, ()))
    return seen


def requester_groups(t: Tenant) -> set[str]:
    return transitive_groups(t, REQUESTER)


def device_side_groups(t: Tenant) -> set[str]:
    """Groups D's Entra device object or D's primary user is a transitive member of."""
    out: set[str] = set()
    if t.has_device_object:
        out |= transitive_groups(t, DEVICE_OBJECT)
    if t.has_primary_user:
        out |= transitive_groups(t, PRIMARY_USER)
    return out


def entra_roles_held(t: Tenant) -> set[str]:
    principals = {REQUESTER} | requester_groups(t)
    return {role for principal, role in t.entra_roles if principal in principals}


def role_actions(row: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(allowed, not allowed) from both ``permissions`` and ``rolePermissions``, both spellings."""
    allowed: set[str] = set()
    forbidden: set[str] = set()
    for key in ("permissions", "rolePermissions"):
        for perm in row.get(key) or []:
            allowed |= {a.replace("/", "_") for a in perm.get("actions") or []}
            for ra in perm.get("resourceActions") or []:
                allowed |= {a.replace("/", "_") for a in ra.get("allowedResourceActions") or []}
                forbidden |= {a.replace("/", "_") for a in ra.get("notAllowedResourceActions") or []}
    return allowed, forbidden


def is_allowed(allowed: set[str], action: str) -> bool:
    return action in allowed or "*" in allowed


def is_forbidden(forbidden: set[str], action: str) -> bool:
    return action in forbidden or "*" in forbidden  # "*" means every action (§6)


def clause_1(row: Mapping[str, Any] | None) -> bool:
    if row is None:
        return False
    allowed, forbidden = role_actions(row)
    return all(is_allowed(allowed, a) and not is_forbidden(forbidden, a) for a in (RETIRE, READ))


def clause_3(t: Tenant, a: Mapping[str, Any]) -> bool:
    scope = a["scopeType"]
    if scope in ("allDevices", "allDevicesAndLicensedUsers"):
        return True
    if scope == "allLicensedUsers":
        return t.has_primary_user
    if scope == "resourceScope":
        return bool(device_side_groups(t) & set(a["resourceScopes"]))
    return False


def clause_4(t: Tenant, a: Mapping[str, Any]) -> bool:
    tags = set(a["roleScopeTagIds"])
    return not tags or bool(tags & set(t.device_tags or ("0",)))


def role_of(t: Tenant, a: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((r for r in t.roles if r["id"] == a["roleDefinitionId"]), None)


def held(t: Tenant) -> list[dict[str, Any]]:
    """Assignments whose members contain a group the requester is in (clause 2)."""
    mine = requester_groups(t)
    return [a for a in t.assignments if mine & set(a["members"])]


def branch_a(t: Tenant) -> bool:
    return t.entra_roles_allowed and bool(entra_roles_held(t) & t.admin_role_ids)


def granting(t: Tenant) -> list[str]:
    return [a["id"] for a in held(t) if clause_1(role_of(t, a)) and clause_3(t, a) and clause_4(t, a)]


def reference_readable(t: Tenant) -> bool:
    """Least disclosure (§16): Entra branch, or a held assignment with Managed devices / Read covering the device."""

    def reads(row: Mapping[str, Any] | None) -> bool:
        if row is None:
            return False
        allowed, forbidden = role_actions(row)
        return is_allowed(allowed, READ) and not is_forbidden(forbidden, READ)

    return branch_a(t) or any(reads(role_of(t, a)) and clause_3(t, a) and clause_4(t, a) for a in held(t))


def reference_allows(t: Tenant) -> bool:
    return branch_a(t) or bool(granting(t))


def reference_reason(t: Tenant) -> DenyReason:
    """The reason of the held assignment that got furthest through the clauses."""
    rank = [
        DenyReason.NO_ROLE,
        DenyReason.NOT_ALLOWED,
        DenyReason.MISSING_READ,
        DenyReason.OUT_OF_SCOPE_GROUPS,
        DenyReason.OUT_OF_SCOPE_TAGS,
    ]
    best = 0
    for a in held(t):
        row = role_of(t, a)
        if row is None:
            continue
        allowed, forbidden = role_actions(row)
        retire_ok = is_allowed(allowed, RETIRE) and not is_forbidden(forbidden, RETIRE)
        if is_forbidden(forbidden, RETIRE) or (retire_ok and is_forbidden(forbidden, READ)):
            level = 1
        elif not retire_ok:
            level = 0
        elif not is_allowed(allowed, READ):
            level = 2
        elif not clause_3(t, a):
            level = 3
        else:
            level = 4  # clause 4 must be what failed: nothing was granted
        best = max(best, level)
    return rank[best]


def check_against_reference(t: Tenant, decision: Decision) -> None:
    expected = reference_allows(t)
    assert decision.allowed is expected, (decision, granting(t), branch_a(t))
    names = {row["displayName"] for a in held(t) if (row := role_of(t, a)) is not None}
    if decision.allowed:
        if branch_a(t):
            assert decision.basis == "entra_role"
            assert decision.entra_role_id in entra_roles_held(t) & t.admin_role_ids
        else:
            assert decision.basis == "intune_role"
            assert decision.assignment_id in granting(t)
            assert set(decision.roles_held) == names
        return
    assert decision.reason == reference_reason(t), decision
    assert set(decision.roles_held) == names
    assert decision.device_tags == (t.device_tags or ("0",))


# -- 1. decide() on Facts ------------------------------------------------------------------------------------


def facts_for(t: Tenant) -> Facts:
    roles = {r.id: r for r in (RoleDefinition.from_graph(row) for row in t.roles)}
    assignments = [RoleAssignment.from_graph(a, a["roleDefinitionId"]) for a in t.assignments]
    return Facts(
        roles=roles,
        assignments=assignments,
        requester_groups=frozenset(requester_groups(t)),
        device_tags=t.device_tags,  # possibly empty: decide() itself must read untagged as "0"
        device_has_primary_user=t.has_primary_user,
        device_scope_groups=frozenset(device_side_groups(t)),
        entra_role_ids=frozenset(entra_roles_held(t)),
        entra_roles_allowed=t.entra_roles_allowed,
        admin_role_ids=t.admin_role_ids,
    )


@settings(max_examples=300, deadline=None)
@given(tenants())
def test_decide_matches_the_reference(t: Tenant) -> None:
    facts = facts_for(t)
    check_against_reference(t, decide(facts))
    assert can_read(facts) is reference_readable(t)
    # Whoever may deprovision a device may also read it.
    assert not reference_allows(t) or can_read(facts)


@settings(max_examples=100, deadline=None)
@given(tenants(), st.randoms(use_true_random=False))
def test_decide_ignores_assignment_order(t: Tenant, rnd: Any) -> None:
    facts = facts_for(t)
    shuffled = list(facts.assignments)
    rnd.shuffle(shuffled)
    first, second = decide(facts), decide(Facts(**{**facts.__dict__, "assignments": shuffled}))
    assert (first.allowed, first.reason) == (second.allowed, second.reason)


def test_reference_sanity() -> None:
    """The reference itself, on hand-made tenants (so a broken reference cannot hide a broken rule)."""
    base = Tenant(
        groups=(gid(0), gid(1)),
        parents={REQUESTER: frozenset({gid(0)}), gid(0): frozenset({gid(1)}), DEVICE_OBJECT: frozenset({gid(1)})},
        roles=(
            {
                "id": "r",
                "displayName": "R",
                "permissions": [{"actions": [LEGACY[RETIRE]], "resourceActions": [{"allowedResourceActions": [READ]}]}],
            },
        ),
        assignments=(
            {
                "id": "a",
                "roleDefinitionId": "r",
                "members": [gid(1)],
                "scopeType": "resourceScope",
                "resourceScopes": [gid(1)],
                "roleScopeTagIds": ["0"],
            },
        ),
        device_tags=(),
        has_primary_user=False,
        has_device_object=True,
        entra_roles=(),
        admin_role_ids=frozenset({GLOBAL_ADMIN}),
        entra_roles_allowed=True,
    )
    assert reference_allows(base)
    assert not reference_allows(Tenant(**{**base.__dict__, "device_tags": ("1",)}))
    assert not reference_allows(Tenant(**{**base.__dict__, "has_device_object": False}))
    assert reference_reason(Tenant(**{**base.__dict__, "has_device_object": False})) == DenyReason.OUT_OF_SCOPE_GROUPS
    star_no = (
        {
            "id": "r",
            "displayName": "R",
            "rolePermissions": [
                {"resourceActions": [{"allowedResourceActions": [RETIRE, READ], "notAllowedResourceActions": [STAR]}]}
            ],
        },
    )
    assert not reference_allows(Tenant(**{**base.__dict__, "roles": star_no}))
    admin = Tenant(**{**base.__dict__, "assignments": (), "entra_roles": ((gid(1), GLOBAL_ADMIN),)})
    assert reference_allows(admin)
    assert not reference_allows(Tenant(**{**admin.__dict__, "entra_roles_allowed": False}))


# -- 2. the full checker against a simulator holding the generated tenant ------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig() -> AsyncIterator[tuple[Simulator, GraphClient]]:
    async with running_simulator(page_size=5) as sim:
        base = settings_for(sim, "sqlite+aiosqlite:///:memory:")
        graph = GraphClient(base, MsalTokenSource(base, base.graph_resource), GraphClient.build_http(base))
        try:
            yield sim, graph
        finally:
            await graph._http.aclose()


def load_tenant(sim: Simulator, t: Tenant) -> Device:
    """Replace the simulator's directory and Intune RBAC data with ``t``; return the device to check."""
    sim.reset_state()
    sim.control.reset()
    s = sim.state
    for collection in (
        s.users,
        s.groups,
        s.entra_devices,
        s.devices,
        s.role_definitions,
        s.role_assignments,
        s.directory_role_assignments,
    ):
        collection.clear()
    for uid in (REQUESTER, PRIMARY_USER):
        s.users[uid] = {"id": uid, "displayName": uid[-4:], "userPrincipalName": f"u{uid[-4:]}@contoso.edu"}
    members: dict[str, list[str]] = {g: [] for g in t.groups}
    for obj, direct in t.parents.items():
        if obj == DEVICE_OBJECT and not t.has_device_object:
            continue
        for g in sorted(direct):
            members[g].append(obj)
    for g in t.groups:
        s.groups[g] = {"id": g, "displayName": g[-4:], "securityEnabled": True, "members": members[g]}
    if t.has_device_object:
        s.entra_devices[DEVICE_OBJECT] = {"id": DEVICE_OBJECT, "deviceId": AZURE_DEVICE_ID, "displayName": "D"}
    for row in t.roles:
        s.role_definitions[row["id"]] = {"@odata.type": "#microsoft.graph.deviceAndAppManagementRoleDefinition", **row}
    for a in t.assignments:
        s.role_assignments[a["id"]] = dict(a)
    for principal, role in t.entra_roles:
        rid = str(uuid.uuid4())
        s.directory_role_assignments[rid] = {"id": rid, "principalId": principal, "roleDefinitionId": role}
    return Device.from_graph(
        {
            "id": "device",
            "deviceName": "D",
            "operatingSystem": "ChromeOS",
            "azureADDeviceId": AZURE_DEVICE_ID,
            "userId": PRIMARY_USER if t.has_primary_user else "",
            "roleScopeTagIds": list(t.device_tags),
        }
    )


@pytest.mark.asyncio(loop_scope="module")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=tenants())
async def test_checker_over_graph_matches_the_reference(rig: tuple[Simulator, GraphClient], t: Tenant) -> None:
    sim, graph = rig
    device = load_tenant(sim, t)
    env = {
        "ENTRA_ADMIN_ROLES_ALLOWED": str(t.entra_roles_allowed).lower(),
        "ENTRA_ADMIN_ROLE_IDS": ",".join(sorted(t.admin_role_ids)),
    }
    checker = RbacChecker(settings_for(sim, "sqlite+aiosqlite:///:memory:", **env), graph)
    before = graph.stats.calls
    access = await checker.access(REQUESTER, device)
    check_against_reference(t, access.decision)
    assert access.readable is reference_readable(t)
    # Cold: one catalogue $batch (no list reaches a second page here) + at most two for the check.
    assert graph.stats.calls - before <= 3
