"""The demo seed: shape invariants, and the RBAC outcomes the README promises for each demo user.

The outcomes are computed here with an independent reading of graph-intune.md §14 over the simulator's
state, so a seed edit that silently changes a documented outcome fails this test.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from simulator import DEMO_SEED_PATH, Simulator, TenantState, build_state, load_seed

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RETIRE, READ = "Microsoft.Intune_RemoteTasks_Retire", "Microsoft.Intune_ManagedDevices_Read"
ENTRA_ADMIN_ROLES = {"62e90394-69f5-4237-9190-012177145e10", "3a2c62db-5318-420d-8d74-23affee5d9d5"}
P = "00000000-0000-0000-0000-00000000000"


@pytest.fixture(scope="module")
def state() -> TenantState:
    return build_state(load_seed(None))


def test_demo_seed_shape(state: TenantState) -> None:
    assert DEMO_SEED_PATH.name == "demo.yaml"
    assert state.tenant_id == "00000000-0000-0000-0000-0000000000001"
    assert state.client_id == "11111111-2222-3333-4444-555555555555"
    chrome = [d for d in state.devices.values() if d["deviceType"] == "chromeOS"]
    assert 66 <= len(chrome) <= 75  # 38 school devices + the 30-device Northside cart 7
    assert {d["operatingSystem"] for d in chrome} == {"ChromeOS", "Chrome OS"}
    assert all(d["managementAgent"] == "googleCloudDevicePolicyController" for d in chrome)
    assert {d["operatingSystem"] for d in state.devices.values()} >= {"Windows", "iOS"}
    names = Counter(d["deviceName"] for d in chrome)
    assert [n for n, c in names.items() if c > 1] == ["NHS-LIB-01"]
    assert "O'Brien-Lab-01" in names
    assert any(not d["roleScopeTagIds"] for d in chrome)
    assert any(d["userId"] for d in chrome) and any(not d["userId"] for d in chrome)
    for d in state.devices.values():
        assert GUID.match(d["id"]) and GUID.match(d["azureADDeviceId"])
    for e in state.entra_devices.values():
        assert GUID.match(e["id"]) and e["id"] != e["deviceId"]
    assert {d["azureADDeviceId"] for d in chrome} <= {e["deviceId"] for e in state.entra_devices.values()}
    assert [state.users[f"{P}{n}"]["displayName"] for n in range(20, 26)] == [
        "Alex Wilber",
        "Megan Bowen",
        "Adele Vance",
        "Isaiah Langer",
        "Patti Fernandez",
        "Lynne Robbins",
    ]
    assert {a["scopeType"] for a in state.role_assignments.values()} == {
        "allDevices",
        "allLicensedUsers",
        "allDevicesAndLicensedUsers",
        "resourceScope",
    }
    for a in state.role_assignments.values():
        assert a["roleDefinitionId"] in state.role_definitions
        assert all(m in state.groups for m in a["members"] + a["resourceScopes"])
    for g in state.groups.values():
        assert all(state.object_exists(m) for m in g["members"]), g["displayName"]
    nested = state.groups[next(g for g, v in state.groups.items() if v["displayName"] == "Device Admins")]
    assert all(m in state.groups for m in nested["members"])


def _actions(rd: dict[str, Any]) -> tuple[set[str], set[str]]:
    allowed: set[str] = set()
    denied: set[str] = set()
    for perm in rd.get("rolePermissions", []) + rd.get("permissions", []):
        allowed |= {a.replace("/", "_", 1).replace("/", "_") for a in perm.get("actions", [])}
        for ra in perm.get("resourceActions", []):
            allowed |= set(ra.get("allowedResourceActions", []))
            denied |= set(ra.get("notAllowedResourceActions", []))
    return allowed, denied


def may_deprovision(state: TenantState, user: str, device: dict[str, Any]) -> bool:
    """graph-intune.md §14, read independently of the bot."""
    groups = state.transitive_groups(user)
    if any(
        a["principalId"] in groups | {user} and a["roleDefinitionId"] in ENTRA_ADMIN_ROLES
        for a in state.directory_role_assignments.values()
    ):
        return True
    objects = [e["id"] for e in state.entra_devices.values() if e["deviceId"] == device["azureADDeviceId"]]
    in_scope_groups = set().union(*(state.transitive_groups(o) for o in objects)) if objects else set()
    if device["userId"]:
        in_scope_groups |= state.transitive_groups(device["userId"])
    tags = set(device["roleScopeTagIds"] or ["0"])
    for a in state.role_assignments.values():
        allowed, denied = _actions(state.role_definitions[a["roleDefinitionId"]])
        if not all((x in allowed or "*" in allowed) and x not in denied for x in (RETIRE, READ)):
            continue
        if not set(a["members"]) & groups:
            continue
        scope = a["scopeType"]
        if scope == "allLicensedUsers" and not device["userId"]:
            continue
        if scope == "resourceScope" and not set(a["resourceScopes"]) & in_scope_groups:
            continue
        if a["roleScopeTagIds"] and not set(a["roleScopeTagIds"]) & tags:
            continue
        return True
    return False


# (user, device name the README says they CAN deprovision or None, device name they CANNOT or None)
README_TABLE = [
    (f"{P}20", "NHS-CART3-07", None),  # Alex: Help Desk Operator, all devices
    (f"{P}21", None, "NHS-CART3-07"),  # Megan: Read Only Operator
    (f"{P}22", "NHS-CART3-07", "RMS-LOANER-01"),  # Adele: School Administrator, scope tag 1
    (f"{P}23", "RMS-LOANER-01", "NHS-CART3-07"),  # Isaiah: custom role via nested group, RMS scope group
    (f"{P}24", "LES-RM12-01", None),  # Patti: Entra Intune Administrator through a role-assignable group
    (f"{P}25", None, "NHS-CART3-07"),  # Lynne: nothing
    ("NestorW", "RMS-LOANER-01", None),  # Global Administrator, direct
    ("DiegoS", "LES-RM12-01", None),  # legacy actions[] slash-form custom role
    ("GradyA", None, "NHS-CART3-07"),  # Retire without Read
    ("LeeG", None, "NHS-CART3-07"),  # "*" minus Retire
    ("JohannaL", None, "NHS-CART3-07"),  # Policy and Profile manager
    ("LidiaH", "Chrome- 5CD3535YMN", "NHS-CART3-07"),  # allLicensedUsers: devices with a primary user
    ("PradeepG", "LES-STAFF-01", "LES-RM12-01"),  # resourceScope = user group Lakeview Staff, tag 3
]


def _user(state: TenantState, key: str) -> str:
    user = state.find_user(key) or state.find_user(f"{key}@contoso.edu")
    assert user is not None, key
    return str(user["id"])


@pytest.mark.parametrize(("who", "can", "cannot"), README_TABLE)
def test_readme_outcomes(state: TenantState, who: str, can: str | None, cannot: str | None) -> None:
    user = _user(state, who)
    by_name = {d["deviceName"]: d for d in state.devices.values() if d["deviceName"] != "NHS-LIB-01"}
    if can:
        assert may_deprovision(state, user, by_name[can])
    if cannot:
        assert not may_deprovision(state, user, by_name[cannot])


def test_outcome_counts_per_user(state: TenantState) -> None:
    """How many ChromeOS devices each demo user may deprovision (documented in the README)."""
    chrome = [d for d in state.devices.values() if d["deviceType"] == "chromeOS"]
    counts = {
        state.users[_user(state, w)]["displayName"]: sum(may_deprovision(state, _user(state, w), d) for d in chrome)
        for w, _, _ in README_TABLE
    }
    assert counts == {
        "Alex Wilber": 68,
        "Megan Bowen": 0,
        "Adele Vance": 44,
        "Isaiah Langer": 10,
        "Patti Fernandez": 68,
        "Lynne Robbins": 0,
        "Nestor Wilke": 68,
        "Diego Siciliani": 68,
        "Grady Archie": 0,
        "Lee Gu": 0,
        "Johanna Lorenz": 0,
        "Lidia Holloway": 12,
        "Pradeep Gupta": 4,
    }


@pytest.mark.asyncio
async def test_dict_seed_with_defaults() -> None:
    seed = {
        "tenant": {"id": "t1", "domain": "x.test"},
        "app": {"client_id": "c1", "client_secret": "s1"},
        "managed_devices": [{"id": "00000000-0000-0000-0000-00000000000a", "deviceName": "D1", "serialNumber": "S1"}],
    }
    sim = Simulator(seed=seed)
    device = sim.state.devices["00000000-0000-0000-0000-00000000000a"]
    assert device["deviceType"] == "chromeOS" and device["roleScopeTagIds"] == []
    assert {p["name"]: p["value"] for p in device["chromeOSDeviceInfo"]}["deviceStatus"] == "Active"
    assert "DeviceManagementRBAC.Read.All" in sim.state.app_permissions
    assert sim.state.accepted_deprovision_reasons[0] == "same_model_replacement"


def test_bulk_cart_seven(state: TenantState) -> None:
    """30 Chromebooks for the bulk demo: one OU, tag 1, distinct serials, all in Alex's and Adele's reach."""
    cart = [d for d in state.devices.values() if d["deviceName"].startswith("NHS-CART7-")]
    assert [d["deviceName"] for d in cart] == [f"NHS-CART7-{n:02d}" for n in range(1, 31)]
    serials = [d["serialNumber"] for d in state.devices.values()]
    assert len(set(serials)) == len(serials)
    nhs_group = next(g for g in state.groups.values() if g["displayName"] == "NHS Chromebooks")
    for d in cart:
        assert d["roleScopeTagIds"] == ["1"] and d["enrollmentProfileName"] == "/Students/Northside High/Cart 7"
        assert d["operatingSystem"] == "ChromeOS" and not d["userId"] and not d["deviceActionResults"]
        [entra] = [e for e in state.entra_devices.values() if e["deviceId"] == d["azureADDeviceId"]]
        assert entra["id"] in nhs_group["members"]
        assert may_deprovision(state, f"{P}20", d) and may_deprovision(state, f"{P}22", d)  # Alex, Adele
        assert not may_deprovision(state, f"{P}23", d)  # Isaiah: Riverside only
    assert {str(d["id"]) for d in cart}.isdisjoint(a["managedDeviceId"] for a in state.remote_action_audits.values())


def test_seeded_audit_rows_match_their_devices(state: TenantState) -> None:
    """A completed and a failed deprovision are already in Intune's record, consistent with the devices."""
    rows = list(state.remote_action_audits.values())
    assert [(r["deviceDisplayName"], r["action"], r["actionState"]) for r in rows] == [
        ("Chrome- PFSXKG0X", "deprovision", "done"),
        ("Chrome- 0LEPYMD", "deprovision", "failed"),
    ]
    for row in rows:
        device = state.devices[row["managedDeviceId"]]
        [record] = [r for r in device["deviceActionResults"] if r["actionName"] == "deprovision"]
        assert (record["actionState"], record["startDateTime"]) == (row["actionState"], row["requestDateTime"])
        status = {p["name"]: p["value"] for p in device["chromeOSDeviceInfo"]}["deviceStatus"]
        assert status == ("Deprovisioned" if row["actionState"] == "done" else "Active")
        assert row["deviceActionDetails"][0]["key"] == "deprovisionReason"
    assert rows[1]["initiatedByUserPrincipalName"] == state.client_id  # sent by this app, app-only
    assert any(d["key"] == "errorMessage" for d in rows[1]["deviceActionDetails"])
