"""The authorization rule (graph-intune.md §14), branch by branch, against the simulated tenant.

Every check here is a real :class:`RbacChecker` making real Graph calls over HTTPS to the simulator
(tokens from msal, ``$batch``, ``checkMemberGroups``, ``transitiveRoleAssignments``). Synthetic cases add
their own user, groups, role, assignment and device to ``sim.state`` so that nothing else in the demo tenant
can grant the right by accident; the demo users are then checked on concrete demo devices.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from bot.devices import Device
from bot.errors import GraphError, RbacUnavailable
from bot.graph import GraphClient, MsalTokenSource
from bot.rbac import Decision, DenyReason, RbacChecker
from bot.settings import GLOBAL_ADMINISTRATOR, INTUNE_ADMINISTRATOR
from simulator import Simulator, TenantState
from simulator.testing import running_simulator
from tests.harness import ADELE, ALEX, ISAIAH, LYNNE, MEGAN, PATTI, User, settings_for

RETIRE = "Microsoft.Intune_RemoteTasks_Retire"
READ = "Microsoft.Intune_ManagedDevices_Read"
OTHER = "Microsoft.Intune_Organization_Read"
LEGACY_RETIRE = "Microsoft.Intune/RemoteTasks/Retire"
LEGACY_READ = "Microsoft.Intune/ManagedDevices/Read"
GLOBAL_READER = "f2ef992c-3afb-46b9-b7cf-a126ee74c451"

# Demo tenant ids (simulator/seeds/demo.yaml).
HELPDESK_OPERATORS = "b9155c07-315c-5251-83a0-4b3c4801f5a1"
HELPDESK_TIER2 = "4a6dc02d-6367-5e58-84a3-2c5774772b7d"
DEVICE_ADMINS = "ad9ee3c8-99d6-5a85-9894-f832a175a958"
RMS_CHROMEBOOKS = "28fc8622-2333-5063-9878-cb445f1f4413"
INTUNE_ADMINS_GROUP = "8a16f674-5199-5fa0-8c1b-5444cdc4dccf"
NESTOR = "44751623-22ea-55d3-9744-7a8260535d38"  # Global Administrator (direct)
DIEGO = "5fd71eb0-b385-5b22-a33b-48d132c0a98f"  # legacy slash-form role
GRADY = "4d4f9395-5296-5613-afbf-d388ef4da923"  # Retire without Read
LEE = "028232c8-fe91-5c1c-9b59-026b717749c5"  # '*' minus Retire
JOHANNA = "c4aca65a-4c95-5ec7-ae52-75661d2acd6c"  # Policy and Profile manager
LIDIA = "276c4891-a760-5496-a2e3-8c52106dd3b0"  # Help Desk Operator on allLicensedUsers
PRADEEP = "b7a165a9-3d85-5e2f-b4d7-7d0857fb1e95"  # School Administrator, Lakeview Staff (users) + tag 3


async def _no_sleep(_seconds: float) -> None:
    """Retry waits are not what these tests measure."""


CheckerFactory = Callable[..., RbacChecker]

# One simulator for the module (starting one costs ~0.2 s); every test gets a fresh tenant and fresh knobs.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_sim() -> AsyncIterator[Simulator]:
    async with running_simulator(page_size=5) as simulator:
        yield simulator


@pytest_asyncio.fixture(loop_scope="module")
async def sim(module_sim: Simulator) -> Simulator:
    """Same as the suite's ``sim`` (page size 5), but with the tenant rebuilt from the seed per test."""
    module_sim.reset_state()
    module_sim.control.reset()
    module_sim.page_size = 5
    return module_sim


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tokens(module_sim: Simulator) -> MsalTokenSource:
    """One msal token source for the module (tokens outlive :meth:`Simulator.reset_state`)."""
    settings = settings_for(module_sim, "sqlite+aiosqlite:///:memory:")
    return MsalTokenSource(settings, settings.graph_resource)


@pytest_asyncio.fixture(loop_scope="module")
async def make_checker(sim: Simulator, tokens: MsalTokenSource) -> AsyncIterator[CheckerFactory]:
    """``make_checker(ENTRA_ADMIN_ROLES_ALLOWED="false")`` — a fresh checker (cold caches) on the simulator."""
    graphs: list[GraphClient] = []

    def factory(**env: str) -> RbacChecker:
        settings = settings_for(sim, "sqlite+aiosqlite:///:memory:", **env)
        graph = GraphClient(settings, tokens, GraphClient.build_http(settings), sleep=_no_sleep)
        graphs.append(graph)
        return RbacChecker(settings, graph)

    yield factory
    for graph in graphs:
        await graph._http.aclose()


def demo_device(sim: Simulator, name: str) -> Device:
    rows = [d for d in sim.state.devices.values() if d["deviceName"] == name]
    assert len(rows) == 1, name
    return Device.from_graph(rows[0])


def entra_object_of(sim: Simulator, device: Device) -> str:
    return next(oid for oid, d in sim.state.entra_devices.items() if d["deviceId"] == device.azure_ad_device_id)


# -- building synthetic tenants inside the demo one -----------------------------------------------------


def _id() -> str:
    return str(uuid.uuid4())


@dataclass
class Builder:
    """Adds directory and Intune objects to the running simulator's tenant."""

    sim: Simulator

    @property
    def state(self) -> TenantState:
        return self.sim.state

    def user(self, name: str = "Test User") -> str:
        uid = _id()
        self.state.users[uid] = {
            "id": uid,
            "displayName": name,
            "userPrincipalName": f"{uid[:8]}@contoso.edu",
            "mail": f"{uid[:8]}@contoso.edu",
        }
        return uid

    def group(self, *members: str, role_assignable: bool = False) -> str:
        gid = _id()
        self.state.groups[gid] = {
            "id": gid,
            "displayName": f"group {gid[:8]}",
            "description": None,
            "groupTypes": [],
            "mailEnabled": False,
            "mailNickname": gid[:8],
            "securityEnabled": True,
            "isAssignableToRole": role_assignable or None,
            "members": list(members),
        }
        return gid

    def nest(self, member: str, depth: int) -> str:
        """A chain of ``depth`` groups above ``member`` (depth 1 = one group containing it); returns the top."""
        top = member
        for _ in range(depth):
            top = self.group(top)
        return top

    def role(
        self,
        allowed: tuple[str, ...] = (),
        not_allowed: tuple[str, ...] = (),
        actions: tuple[str, ...] = (),
        *,
        where: str = "both",
        name: str = "Test role",
    ) -> str:
        rid = _id()
        perms = [
            {
                "actions": list(actions),
                "resourceActions": [
                    {"allowedResourceActions": list(allowed), "notAllowedResourceActions": list(not_allowed)}
                ],
            }
        ]
        self.state.role_definitions[rid] = {
            "@odata.type": "#microsoft.graph.deviceAndAppManagementRoleDefinition",
            "id": rid,
            "displayName": name,
            "description": "",
            "permissions": perms if where in ("both", "permissions") else [],
            "rolePermissions": perms if where in ("both", "rolePermissions") else [],
            "isBuiltInRoleDefinition": False,
            "isBuiltIn": False,
            "roleScopeTagIds": ["0"],
        }
        return rid

    def assignment(
        self,
        role_id: str,
        members: tuple[str, ...],
        scope_type: str | None = "allDevices",
        scope_groups: tuple[str, ...] = (),
        tags: tuple[str, ...] = (),
        *,
        name: str = "Test assignment",
    ) -> str:
        aid = _id()
        row: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.deviceAndAppManagementRoleAssignment",
            "id": aid,
            "displayName": name,
            "description": "",
            "scopeMembers": list(scope_groups),
            "resourceScopes": list(scope_groups),
            "members": list(members),
            "roleScopeTagIds": list(tags),
            "roleDefinitionId": role_id,
        }
        if scope_type is not None:
            row["scopeType"] = scope_type
        self.state.role_assignments[aid] = row
        return aid

    def device(
        self, tags: tuple[str, ...] = (), primary_user: str = "", *, entra_object: bool = True
    ) -> tuple[Device, str]:
        """A ChromeOS managed device (and its Entra device object); returns (device, entra object id)."""
        did, azure_id, oid = _id(), _id(), _id()
        if entra_object:
            self.state.entra_devices[oid] = {
                "id": oid,
                "deviceId": azure_id,
                "displayName": f"TEST-{did[:6]}",
                "operatingSystem": "ChromeOS",
                "operatingSystemVersion": "126",
                "accountEnabled": True,
                "trustType": "Workplace",
                "isManaged": True,
            }
        row = {
            "id": did,
            "deviceName": f"TEST-{did[:6]}",
            "serialNumber": did[:10].upper(),
            "operatingSystem": "ChromeOS",
            "deviceType": "chromeOS",
            "azureADDeviceId": azure_id,
            "userId": primary_user,
            "roleScopeTagIds": list(tags),
        }
        return Device.from_graph(row), oid

    def directory_role(self, principal: str, role_definition_id: str) -> str:
        rid = _id()
        self.state.directory_role_assignments[rid] = {
            "id": rid,
            "principalId": principal,
            "roleDefinitionId": role_definition_id,
            "directoryScopeId": "/",
        }
        return rid


# -- the truth table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One assignment held by a fresh requester, one fresh device; what §14 says about it."""

    allowed: tuple[str, ...] = (RETIRE, READ)
    not_allowed: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    where: str = "both"
    scope_type: str | None = "allDevices"
    tags: tuple[str, ...] = ()
    device_tags: tuple[str, ...] = ()
    primary_user: bool = False
    # Who is in the assignment's scope group: "object" (device), "user" (primary user), "" (nobody);
    # scope_depth > 1 puts them there through nested groups.
    in_scope: str = ""
    scope_depth: int = 1
    requester_depth: int = 1  # 1 = direct member of the assignment's member group; 0 = not a member
    entra_object: bool = True
    expect: DenyReason | None = None  # None = allowed


CASES: dict[str, Case] = {
    # clause 3 — scope type
    "allDevices": Case(scope_type="allDevices"),
    "allDevicesAndLicensedUsers": Case(scope_type="allDevicesAndLicensedUsers"),
    "allLicensedUsers/with primary user": Case(scope_type="allLicensedUsers", primary_user=True),
    "allLicensedUsers/without primary user": Case(scope_type="allLicensedUsers", expect=DenyReason.OUT_OF_SCOPE_GROUPS),
    "resourceScope/device object member": Case(scope_type="resourceScope", in_scope="object"),
    "resourceScope/device object nested member": Case(scope_type="resourceScope", in_scope="object", scope_depth=3),
    "resourceScope/primary user member": Case(scope_type="resourceScope", primary_user=True, in_scope="user"),
    "resourceScope/primary user nested member": Case(
        scope_type="resourceScope", primary_user=True, in_scope="user", scope_depth=2
    ),
    "resourceScope/neither in scope": Case(
        scope_type="resourceScope", primary_user=True, expect=DenyReason.OUT_OF_SCOPE_GROUPS
    ),
    "resourceScope/no Entra device object": Case(
        scope_type="resourceScope", entra_object=False, expect=DenyReason.OUT_OF_SCOPE_GROUPS
    ),
    "scopeType omitted = resourceScope": Case(scope_type=None, in_scope="object"),
    "scopeType omitted, not in scope": Case(scope_type=None, expect=DenyReason.OUT_OF_SCOPE_GROUPS),
    "unknownFutureValue/device in the groups": Case(
        scope_type="unknownFutureValue", in_scope="object", expect=DenyReason.OUT_OF_SCOPE_GROUPS
    ),
    "unknownFutureValue/primary user in the groups": Case(
        scope_type="unknownFutureValue", primary_user=True, in_scope="user", expect=DenyReason.OUT_OF_SCOPE_GROUPS
    ),
    # clause 4 — scope tags
    "no assignment tags, tagged device": Case(device_tags=("3",)),
    "no assignment tags, untagged device": Case(),
    "shared tag": Case(tags=("1",), device_tags=("1",)),
    "one of several tags shared": Case(tags=("2", "3"), device_tags=("1", "3")),
    "no shared tag": Case(tags=("1",), device_tags=("2",), expect=DenyReason.OUT_OF_SCOPE_TAGS),
    "untagged device counts as 0": Case(tags=("0",)),
    "untagged device vs tag 1": Case(tags=("1",), expect=DenyReason.OUT_OF_SCOPE_TAGS),
    "tagged device is not 0": Case(tags=("0",), device_tags=("1",), expect=DenyReason.OUT_OF_SCOPE_TAGS),
    "tags and resourceScope both hold": Case(
        scope_type="resourceScope", in_scope="object", tags=("2",), device_tags=("2",)
    ),
    "in scope groups but not tags": Case(
        scope_type="resourceScope",
        in_scope="object",
        tags=("1",),
        device_tags=("2",),
        expect=DenyReason.OUT_OF_SCOPE_TAGS,
    ),
    # clause 2 — membership
    "requester nested two deep": Case(requester_depth=2),
    "requester nested four deep": Case(requester_depth=4),
    "requester not a member": Case(requester_depth=0, expect=DenyReason.NO_ROLE),
    # clause 1 — actions
    "star allows all": Case(allowed=("*",)),
    "star with Retire notAllowed": Case(allowed=("*",), not_allowed=(RETIRE,), expect=DenyReason.NOT_ALLOWED),
    "star with Read notAllowed": Case(allowed=("*",), not_allowed=(READ,), expect=DenyReason.NOT_ALLOWED),
    "Retire allowed and notAllowed": Case(not_allowed=(RETIRE,), expect=DenyReason.NOT_ALLOWED),
    "Read allowed and notAllowed": Case(not_allowed=(READ,), expect=DenyReason.NOT_ALLOWED),
    "star notAllowed forbids everything": Case(not_allowed=("*",), expect=DenyReason.NOT_ALLOWED),
    "unrelated notAllowed is harmless": Case(not_allowed=(OTHER,)),
    "Retire without Read": Case(allowed=(RETIRE, OTHER), expect=DenyReason.MISSING_READ),
    "Read without Retire": Case(allowed=(READ, OTHER), expect=DenyReason.NO_ROLE),
    "neither action": Case(allowed=(OTHER,), expect=DenyReason.NO_ROLE),
    "no permissions at all": Case(allowed=(), expect=DenyReason.NO_ROLE),
    "legacy slash names": Case(allowed=(), actions=(LEGACY_RETIRE, LEGACY_READ)),
    "legacy Retire + new Read": Case(allowed=(READ,), actions=(LEGACY_RETIRE,)),
    "legacy Retire only": Case(allowed=(), actions=(LEGACY_RETIRE,), expect=DenyReason.MISSING_READ),
    "legacy Read forbidden by new name": Case(
        allowed=(RETIRE,), actions=(LEGACY_READ,), not_allowed=(READ,), expect=DenyReason.NOT_ALLOWED
    ),
    "permissions only (beta)": Case(where="permissions"),
    "rolePermissions only (v1.0 shape)": Case(where="rolePermissions"),
    "notAllowed in rolePermissions only still wins": Case(
        where="split", not_allowed=(RETIRE,), expect=DenyReason.NOT_ALLOWED
    ),
}


def build_case(sim: Simulator, case: Case) -> tuple[str, Device, dict[str, str]]:
    """Adds the case's objects to the tenant; returns (requester id, device, ids of role and assignment)."""
    b = Builder(sim)
    requester = b.user("Requester")
    admin_group = b.nest(requester, case.requester_depth) if case.requester_depth else b.group()
    user = b.user("Primary user") if case.primary_user else ""
    device, oid = b.device(case.device_tags, user, entra_object=case.entra_object)
    scope_groups: tuple[str, ...] = ()
    if case.scope_type in (None, "resourceScope", "unknownFutureValue"):
        inside = {"object": oid, "user": user}.get(case.in_scope)
        scope_groups = (b.nest(inside, case.scope_depth) if inside else b.group(b.user("Someone else")),)
    if case.where == "split":
        # Retire and Read allowed in ``permissions``; the prohibition only in ``rolePermissions``.
        role = b.role(case.allowed, (), case.actions, where="permissions")
        b.state.role_definitions[role]["rolePermissions"] = [
            {
                "actions": [],
                "resourceActions": [
                    {"allowedResourceActions": [], "notAllowedResourceActions": list(case.not_allowed)}
                ],
            }
        ]
    else:
        role = b.role(case.allowed, case.not_allowed, case.actions, where=case.where)
    assignment = b.assignment(role, (admin_group,), case.scope_type, scope_groups, case.tags)
    return requester, device, {"assignment": assignment, "role": role}


def assert_case(case: Case, decision: Decision, ids: dict[str, str]) -> None:
    assert decision.allowed is (case.expect is None), decision
    assert decision.reason == case.expect, decision
    if decision.allowed:
        assert decision.basis == "intune_role"
        assert (decision.assignment_id, decision.role_id) == (ids["assignment"], ids["role"])
    else:
        assert decision.device_tags == (case.device_tags or ("0",))
        if case.expect in (DenyReason.OUT_OF_SCOPE_GROUPS, DenyReason.OUT_OF_SCOPE_TAGS, DenyReason.MISSING_READ):
            assert decision.assignment_id == ids["assignment"]
            assert decision.assignment_tags == case.tags


@pytest.mark.parametrize("name", list(CASES))
async def test_truth_table(sim: Simulator, make_checker: CheckerFactory, name: str) -> None:
    case = CASES[name]
    requester, device, ids = build_case(sim, case)
    assert_case(case, await make_checker().check(requester, device), ids)


async def test_truth_table_all_rows_in_one_tenant(sim: Simulator, make_checker: CheckerFactory) -> None:
    """Every row side by side: one catalogue (many pages) holds them all, each requester gets only theirs."""
    built = [(case, *build_case(sim, case)) for case in CASES.values()]
    checker = make_checker()
    for case, requester, device, ids in built:
        assert_case(case, await checker.check(requester, device), ids)
    catalog = await checker.catalog()
    assert len(catalog.assignments) == len(sim.state.role_assignments)
    assert len(catalog.roles) == len(sim.state.role_definitions)


# -- several assignments: which one decides, and the reason reported -----------------------------------


async def test_any_assignment_suffices_even_when_another_got_further(
    sim: Simulator, make_checker: CheckerFactory
) -> None:
    """Assignment A fails on tags (furthest), B is in scope only through the device object: B grants.

    The device object has not been resolved before (cold device cache), so its memberships need the
    second round trip; that must happen whatever the "furthest" deny reason of the first pass is.
    """
    b = Builder(sim)
    requester = b.user()
    admins = b.group(requester)
    role = b.role((RETIRE, READ))
    device, oid = b.device(("2",))
    b.assignment(role, (admins,), "allDevices", tags=("1",), name="A: wrong tag")
    grant = b.assignment(role, (admins,), "resourceScope", (b.group(oid),), name="B: device group")
    decision = await make_checker().check(requester, device)
    assert decision.allowed, decision
    assert decision.assignment_id == grant


async def test_deny_reason_is_the_furthest_assignment(sim: Simulator, make_checker: CheckerFactory) -> None:
    b = Builder(sim)
    requester = b.user()
    admins = b.group(requester)
    device, _ = b.device(("2",))
    b.assignment(b.role((RETIRE,)), (admins,), name="missing read")
    b.assignment(b.role((RETIRE, READ)), (admins,), "resourceScope", (b.group(),), name="out of groups")
    tags = b.assignment(b.role((RETIRE, READ), name="Tagged"), (admins,), tags=("1",), name="out of tags")
    b.assignment(b.role((READ,), name="Reader"), (admins,), name="reader")
    decision = await make_checker().check(requester, device)
    assert not decision.allowed
    assert decision.reason == DenyReason.OUT_OF_SCOPE_TAGS
    assert (decision.assignment_id, decision.role_name) == (tags, "Tagged")
    assert set(decision.roles_held) == {"Test role", "Tagged", "Reader"}


async def test_assignment_to_a_role_missing_from_the_catalogue_grants_nothing(
    sim: Simulator, make_checker: CheckerFactory
) -> None:
    b = Builder(sim)
    requester = b.user()
    device, _ = b.device()
    b.assignment("00000000-dead-beef-0000-000000000000", (b.group(requester),))
    decision = await make_checker().check(requester, device)
    assert (decision.allowed, decision.reason) == (False, DenyReason.NO_ROLE)


# -- (a) Entra admin roles ------------------------------------------------------------------------------


async def test_patti_is_allowed_by_the_entra_role_held_through_a_role_assignable_group(
    sim: Simulator, make_checker: CheckerFactory
) -> None:
    assert not any(a["principalId"] == PATTI.aad_id for a in sim.state.directory_role_assignments.values())
    assert sim.state.groups[INTUNE_ADMINS_GROUP]["isAssignableToRole"]
    decision = await make_checker().check(PATTI.aad_id, demo_device(sim, "NHS-CART3-01"))
    assert decision.allowed and decision.basis == "entra_role", decision
    assert decision.entra_role_id == INTUNE_ADMINISTRATOR
    entra_calls = [c for c in sim.calls if "/roleManagement/directory/" in c.path]
    assert [c.path for c in entra_calls] == ["/beta/roleManagement/directory/transitiveRoleAssignments"]
    assert entra_calls[0].headers.get("consistencylevel") == "eventual"


async def test_entra_roles_switched_off_deny_patti(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker(ENTRA_ADMIN_ROLES_ALLOWED="false")
    before = len(sim.calls)
    decision = await checker.check(PATTI.aad_id, demo_device(sim, "NHS-CART3-01"))
    assert (decision.allowed, decision.reason) == (False, DenyReason.NO_ROLE)
    assert not any("transitiveRoleAssignments" in c.path for c in sim.calls[before:])
    # Nestor is a direct Global Administrator: switched off, that counts for nothing either.
    nestor = await checker.check(NESTOR, demo_device(sim, "NHS-CART3-01"))
    assert (nestor.allowed, nestor.reason) == (False, DenyReason.NO_ROLE)


async def test_direct_global_administrator_is_allowed(sim: Simulator, make_checker: CheckerFactory) -> None:
    decision = await make_checker().check(NESTOR, demo_device(sim, "Chrome- PFKP4A5R"))
    assert decision.allowed and decision.basis == "entra_role"
    assert decision.entra_role_id == GLOBAL_ADMINISTRATOR


async def test_other_entra_roles_do_not_count(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    megan = await checker.check(MEGAN.aad_id, demo_device(sim, "NHS-CART3-01"))  # Global Reader
    lynne = await checker.check(LYNNE.aad_id, demo_device(sim, "NHS-CART3-01"))  # Helpdesk Administrator
    assert not megan.allowed and not lynne.allowed


async def test_admin_role_list_is_configurable(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker(ENTRA_ADMIN_ROLE_IDS=GLOBAL_READER)
    megan = await checker.check(MEGAN.aad_id, demo_device(sim, "NHS-CART3-01"))
    patti = await checker.check(PATTI.aad_id, demo_device(sim, "NHS-CART3-01"))
    assert megan.allowed and megan.entra_role_id == GLOBAL_READER
    assert (patti.allowed, patti.reason) == (False, DenyReason.NO_ROLE)


async def test_entra_role_on_a_later_page_is_found(sim: Simulator, make_checker: CheckerFactory) -> None:
    """transitiveRoleAssignments is paged (page size 5 here): the admin role may be on page two."""
    b = Builder(sim)
    rows = sim.state.directory_role_assignments
    grant = next(k for k, v in rows.items() if v["principalId"] == INTUNE_ADMINS_GROUP)
    moved = rows.pop(grant)
    for _ in range(6):
        b.directory_role(PATTI.aad_id, GLOBAL_READER)
    rows[grant] = moved
    decision = await make_checker().check(PATTI.aad_id, demo_device(sim, "NHS-CART3-01"))
    assert decision.allowed and decision.basis == "entra_role", decision


async def test_entra_role_removed_between_checks_is_honoured(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    device = demo_device(sim, "NHS-CART3-01")
    assert (await checker.check(PATTI.aad_id, device)).allowed
    sim.state.groups[INTUNE_ADMINS_GROUP]["members"].remove(PATTI.aad_id)
    again = await checker.check(PATTI.aad_id, device)
    assert (again.allowed, again.reason) == (False, DenyReason.NO_ROLE)


# -- the demo users on concrete demo devices ------------------------------------------------------------


async def test_alex_is_allowed_on_every_device(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    for row in sim.state.devices.values():
        decision = await checker.check(ALEX.aad_id, Device.from_graph(row))
        assert decision.allowed, (row["deviceName"], decision)
        assert (decision.basis, decision.role_name, decision.assignment_name) == (
            "intune_role",
            "Help Desk Operator",
            "Helpdesk - all devices",
        )


async def test_megan_holds_read_only_operator_and_is_denied(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    for name in ("NHS-CART3-01", "RMS-LOANER-01", "Chrome- PFKP4A5R"):
        decision = await checker.check(MEGAN.aad_id, demo_device(sim, name))
        assert (decision.allowed, decision.reason) == (False, DenyReason.NO_ROLE)
        assert decision.roles_held == ("Read Only Operator",)
        assert decision.assignment_id == ""


async def test_adele_is_allowed_on_her_schools_tag_only(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    for name in ("NHS-CART3-01", "NHS-CART4-02", "O'Brien-Lab-01", "NHS-OFFICE-PC01"):
        decision = await checker.check(ADELE.aad_id, demo_device(sim, name))
        assert decision.allowed, (name, decision)
        assert (decision.role_name, decision.assignment_name) == ("School Administrator", "Northside school admins")
    for name, tags in (("RMS-LOANER-01", ("2",)), ("LES-STAFF-01", ("3",)), ("Chrome- PFKP4A5R", ("0",))):
        decision = await checker.check(ADELE.aad_id, demo_device(sim, name))
        assert (decision.allowed, decision.reason) == (False, DenyReason.OUT_OF_SCOPE_TAGS), name
        assert decision.device_tags == tags
        assert decision.assignment_tags == ("1",)
        assert decision.assignment_name == "Northside school admins"


async def test_isaiah_is_allowed_on_his_scope_groups_devices_only(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    scope = set(sim.state.groups[RMS_CHROMEBOOKS]["members"])
    inside = outside = 0
    for row in sim.state.devices.values():
        device = Device.from_graph(row)
        decision = await checker.check(ISAIAH.aad_id, device)
        in_group = any(
            oid in scope for oid, d in sim.state.entra_devices.items() if d["deviceId"] == device.azure_ad_device_id
        )
        if in_group:
            inside += 1
            assert decision.allowed, (row["deviceName"], decision)
            assert decision.assignment_name == "Chromebook techs - Riverside"
        else:
            outside += 1
            assert (decision.allowed, decision.reason) == (False, DenyReason.OUT_OF_SCOPE_GROUPS), row["deviceName"]
            assert decision.roles_held == ("Chromebook Retire Tech",)
    assert inside == 10 and outside > 10
    # RMS-TEACHER-LT01 carries the Riverside tag but is not in the scope group.
    teacher = await checker.check(ISAIAH.aad_id, demo_device(sim, "RMS-TEACHER-LT01"))
    assert teacher.reason == DenyReason.OUT_OF_SCOPE_GROUPS


async def test_patti_and_lynne(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    for name in ("NHS-CART3-01", "RMS-LOANER-01", "Chrome- PFKP4A5R", "LES-STAFF-01"):
        patti = await checker.check(PATTI.aad_id, demo_device(sim, name))
        assert patti.allowed and patti.basis == "entra_role"
        lynne = await checker.check(LYNNE.aad_id, demo_device(sim, name))
        assert (lynne.allowed, lynne.reason, lynne.roles_held) == (False, DenyReason.NO_ROLE, ())


@pytest.mark.parametrize(
    ("user", "device", "reason", "role_name"),
    [
        (DIEGO, "NHS-CART3-01", None, "Legacy Device Retire (actions)"),
        (GRADY, "NHS-CART3-01", DenyReason.MISSING_READ, "Retire without read"),
        (LEE, "NHS-CART3-01", DenyReason.NOT_ALLOWED, "No retire allowed"),
        (JOHANNA, "NHS-CART3-01", DenyReason.NO_ROLE, ""),
        (LIDIA, "Chrome- 5CD3535YMN", None, "Help Desk Operator"),  # has a primary user
        (LIDIA, "RMS-LOANER-01", DenyReason.OUT_OF_SCOPE_GROUPS, "Help Desk Operator"),  # has none
        (PRADEEP, "LES-STAFF-01", None, "School Administrator"),  # primary user in Lakeview Staff, tag 3
        (PRADEEP, "LES-RM12-01", DenyReason.OUT_OF_SCOPE_GROUPS, "School Administrator"),  # no primary user
        (PRADEEP, "Chrome- 5CD3535YMN", DenyReason.OUT_OF_SCOPE_GROUPS, "School Administrator"),
    ],
)
async def test_other_demo_staff(
    sim: Simulator,
    make_checker: CheckerFactory,
    user: str,
    device: str,
    reason: DenyReason | None,
    role_name: str,
) -> None:
    decision = await make_checker().check(user, demo_device(sim, device))
    assert (decision.allowed, decision.reason, decision.role_name) == (reason is None, reason, role_name), decision


# -- memberships are never cached -----------------------------------------------------------------------


async def test_membership_removed_between_two_checks_is_honoured(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    device = demo_device(sim, "NHS-CART3-01")
    assert (await checker.check(ALEX.aad_id, device)).allowed
    sim.state.groups[HELPDESK_OPERATORS]["members"].remove(ALEX.aad_id)
    again = await checker.check(ALEX.aad_id, device)
    assert (again.allowed, again.reason, again.roles_held) == (False, DenyReason.NO_ROLE, ())


async def test_nested_membership_removed_between_two_checks_is_honoured(
    sim: Simulator, make_checker: CheckerFactory
) -> None:
    checker = make_checker()
    device = demo_device(sim, "RMS-LOANER-01")
    assert (await checker.check(ISAIAH.aad_id, device)).allowed
    sim.state.groups[DEVICE_ADMINS]["members"].remove(HELPDESK_TIER2)
    again = await checker.check(ISAIAH.aad_id, device)
    assert (again.allowed, again.reason) == (False, DenyReason.NO_ROLE)


async def test_device_leaving_the_scope_group_is_honoured(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    device = demo_device(sim, "RMS-LOANER-01")
    assert (await checker.check(ISAIAH.aad_id, device)).allowed
    sim.state.groups[RMS_CHROMEBOOKS]["members"].remove(entra_object_of(sim, device))
    again = await checker.check(ISAIAH.aad_id, device)
    assert (again.allowed, again.reason) == (False, DenyReason.OUT_OF_SCOPE_GROUPS)


async def test_membership_added_between_two_checks_is_honoured(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    device = demo_device(sim, "NHS-CART3-01")
    assert not (await checker.check(LYNNE.aad_id, device)).allowed
    sim.state.groups[HELPDESK_OPERATORS]["members"].append(LYNNE.aad_id)
    assert (await checker.check(LYNNE.aad_id, device)).allowed


# -- fail closed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "device", "fault"),
    [
        (ALEX, "NHS-CART3-01", {"path": r"/users/[^/]+/checkMemberGroups$", "status": 500}),
        (ALEX, "NHS-CART3-01", {"path": r"/users/[^/]+/checkMemberGroups$", "status": 403}),
        (ALEX, "NHS-CART3-01", {"path": r"/users/[^/]+/checkMemberGroups$", "status": 429, "count": 10}),
        (ALEX, "NHS-CART3-01", {"path": r"/\$batch$", "status": 500, "count": 10}),
        (ALEX, "NHS-CART3-01", {"path": r"/\$batch$", "status": 503, "count": 10}),
        (ALEX, "NHS-CART3-01", {"path": r"/\$batch$", "drop": True, "count": 10}),
        (ALEX, "NHS-CART3-01", {"path": r"transitiveRoleAssignments$", "status": 503}),
        (ALEX, "NHS-CART3-01", {"path": r"roleDefinitions$", "status": 500}),
        (ALEX, "NHS-CART3-01", {"path": r"roleAssignments$", "status": 500, "count": 10}),
        (ISAIAH, "RMS-LOANER-01", {"path": r"^/beta/devices$", "status": 500}),
        (ISAIAH, "RMS-LOANER-01", {"path": r"/devices/[^/]+/checkMemberGroups$", "status": 500}),
        (ISAIAH, "Chrome- 5CD3535YMN", {"path": r"/users/[^/]+/checkMemberGroups$", "status": 500, "count": 2}),
    ],
)
async def test_graph_fault_fails_closed(
    sim: Simulator, make_checker: CheckerFactory, user: User, device: str, fault: dict[str, Any]
) -> None:
    checker = make_checker()
    sim.control.add_fault(**fault)
    with pytest.raises(RbacUnavailable) as caught:
        await checker.check(user.aad_id, demo_device(sim, device))
    assert isinstance(caught.value.cause, GraphError)
    sim.control.faults.clear()
    assert (await checker.check(user.aad_id, demo_device(sim, device))).allowed  # and recovers afterwards


async def test_missing_graph_permission_fails_closed(sim: Simulator, make_checker: CheckerFactory) -> None:
    sim.state.revoke({"GroupMember.Read.All", "Directory.Read.All"})
    with pytest.raises(RbacUnavailable):
        await make_checker().check(ALEX.aad_id, demo_device(sim, "NHS-CART3-01"))


async def test_warm_catalogue_still_fails_closed(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    device = demo_device(sim, "NHS-CART3-01")
    assert (await checker.check(ALEX.aad_id, device)).allowed
    sim.control.add_fault(path=r"/users/[^/]+/checkMemberGroups$", status=502)
    with pytest.raises(RbacUnavailable):
        await checker.check(ALEX.aad_id, device)


# -- the other two questions RbacChecker answers -----------------------------------------------------------


async def test_can_read_devices(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    assert await checker.can_read_devices(MEGAN.aad_id)  # Read Only Operator: Managed devices / Read
    assert await checker.can_read_devices(ISAIAH.aad_id)  # through the nested group
    assert await checker.can_read_devices(PATTI.aad_id)  # Entra Intune Administrator
    assert not await checker.can_read_devices(LYNNE.aad_id)
    assert not await checker.can_read_devices(GRADY)  # Retire without Read
    assert not await make_checker(ENTRA_ADMIN_ROLES_ALLOWED="false").can_read_devices(PATTI.aad_id)


async def test_is_group_member_is_transitive(sim: Simulator, make_checker: CheckerFactory) -> None:
    checker = make_checker()
    assert await checker.is_group_member(ISAIAH.aad_id, DEVICE_ADMINS)  # via Helpdesk Tier 2
    assert not await checker.is_group_member(LYNNE.aad_id, DEVICE_ADMINS)


async def test_prefix_wildcard_in_not_allowed_forbids_and_role_ids_compare_case_insensitively() -> None:
    from bot.rbac import READ, RETIRE, Facts, RoleAssignment, RoleDefinition, decide

    role = RoleDefinition("r", "Wide", frozenset({"*"}), frozenset({"Microsoft.Intune_RemoteTasks_*"}))
    assert role.forbids(RETIRE) and not role.forbids(READ)
    assignment = RoleAssignment("a", "A", "r", ("g",), "allDevices", (), ())
    facts = Facts({"r": role}, [assignment], frozenset({"g"}), ("0",), False, frozenset())
    assert not decide(facts).allowed
    admin = Facts(
        {},
        [],
        frozenset(),
        ("0",),
        False,
        frozenset(),
        entra_role_ids=frozenset({"62E90394-69F5-4237-9190-012177145E10"}),
        admin_role_ids=frozenset({"62e90394-69f5-4237-9190-012177145e10"}),
    )
    assert decide(admin).allowed
