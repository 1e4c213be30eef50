"""Directory (users, groups, Entra devices, directory roles) and Intune RBAC routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator import Simulator

ALEX = "00000000-0000-0000-0000-0000000000020"
MEGAN = "00000000-0000-0000-0000-0000000000021"
ISAIAH = "00000000-0000-0000-0000-0000000000023"
PATTI = "00000000-0000-0000-0000-0000000000024"
LYNNE = "00000000-0000-0000-0000-0000000000025"
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
INTUNE_ADMIN = "3a2c62db-5318-420d-8d74-23affee5d9d5"
HELP_DESK = "9e0cc482-82df-4ab2-a24c-0c23a3f52e1e"


def group_id(sim: Simulator, name: str) -> str:
    [gid] = [g["id"] for g in sim.state.groups.values() if g["displayName"] == name]
    return gid


def user_id(sim: Simulator, upn_prefix: str) -> str:
    [uid] = [u["id"] for u in sim.state.users.values() if u["userPrincipalName"].startswith(upn_prefix + "@")]
    return uid


@pytest.mark.asyncio
async def test_check_member_groups_is_transitive(sim: Simulator, graph: httpx.AsyncClient) -> None:
    device_admins = group_id(sim, "Device Admins")  # Isaiah is in it only through "Helpdesk Tier 2"
    helpdesk = group_id(sim, "Intune Helpdesk Operators")
    resp = await graph.post(f"/v1.0/users/{ISAIAH}/checkMemberGroups", json={"groupIds": [helpdesk, device_admins]})
    assert resp.status_code == 200
    assert resp.json()["value"] == [device_admins]
    resp = await graph.post(f"/v1.0/users/{ALEX}/checkMemberGroups", json={"groupIds": [helpdesk, device_admins]})
    assert resp.json()["value"] == [helpdesk]
    too_many = [f"00000000-0000-0000-0000-{i:012d}" for i in range(21)]
    resp = await graph.post(f"/v1.0/users/{ALEX}/checkMemberGroups", json={"groupIds": too_many})
    assert resp.status_code == 400 and "more than 20" in resp.json()["error"]["message"]
    resp = await graph.post("/v1.0/users/nobody@contoso.edu/checkMemberGroups", json={"groupIds": [helpdesk]})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "Request_ResourceNotFound"


@pytest.mark.asyncio
async def test_get_member_groups_and_transitive_member_of(sim: Simulator, graph: httpx.AsyncClient) -> None:
    expected = {group_id(sim, "Helpdesk Tier 2"), group_id(sim, "Device Admins")}
    resp = await graph.post(f"/v1.0/users/{ISAIAH}/getMemberGroups", json={"securityEnabledOnly": True})
    assert set(resp.json()["value"]) == expected
    everything = await graph.post(f"/v1.0/users/{ISAIAH}/getMemberGroups", json={"securityEnabledOnly": False})
    assert set(everything.json()["value"]) == expected | {group_id(sim, "All Staff")}
    assert (await graph.post(f"/v1.0/users/{ISAIAH}/getMemberGroups", json={})).status_code == 400
    ids: list[str] = []
    url: str | None = f"/v1.0/users/{ISAIAH}/transitiveMemberOf/microsoft.graph.group"
    params: dict[str, str] | None = {"$select": "id,displayName", "$top": "2"}
    while url:
        body = (await graph.get(url, params=params)).json()
        assert body["@odata.context"].endswith("#groups(id,displayName)")
        ids += [g["id"] for g in body["value"]]
        url, params = body.get("@odata.nextLink"), None
    assert set(ids) == expected | {group_id(sim, "All Staff")}
    plain = (await graph.get(f"/v1.0/users/{ISAIAH}/transitiveMemberOf")).json()
    assert plain["value"][0]["@odata.type"] == "#microsoft.graph.group"


@pytest.mark.asyncio
async def test_user_lookup(graph: httpx.AsyncClient) -> None:
    by_id = (await graph.get(f"/v1.0/users/{MEGAN}", params={"$select": "id,displayName,userPrincipalName"})).json()
    assert by_id == {
        "@odata.context": by_id["@odata.context"],
        "id": MEGAN,
        "displayName": "Megan Bowen",
        "userPrincipalName": "MeganB@contoso.edu",
    }
    by_upn = (await graph.get("/v1.0/users/meganb@contoso.edu")).json()
    assert by_upn["id"] == MEGAN
    assert (await graph.get("/v1.0/users/ghost@contoso.edu")).status_code == 404


@pytest.mark.asyncio
async def test_entra_device_lookup_and_device_membership(sim: Simulator, graph: httpx.AsyncClient) -> None:
    [managed] = [d for d in sim.state.devices.values() if d["deviceName"] == "Chrome- 5CD3535YMN"]
    resp = await graph.get(
        "/v1.0/devices",
        params={"$filter": f"deviceId eq '{managed['azureADDeviceId']}'", "$select": "id,deviceId,displayName"},
    )
    [row] = resp.json()["value"]
    assert row["deviceId"] == managed["azureADDeviceId"] and row["id"] != row["deviceId"]
    assert set(row) == {"id", "deviceId", "displayName"}
    rms, nhs = group_id(sim, "RMS Chromebooks"), group_id(sim, "NHS Chromebooks")
    resp = await graph.post(f"/v1.0/devices/{row['id']}/checkMemberGroups", json={"groupIds": [nhs, rms]})
    assert resp.json()["value"] == [rms]
    resp = await graph.post(f"/v1.0/devices/{managed['azureADDeviceId']}/checkMemberGroups", json={"groupIds": [rms]})
    assert resp.status_code == 404  # the deviceId is not the object id
    resp = await graph.get("/v1.0/devices", params={"$filter": "trustType eq 'AzureAd'"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "Request_UnsupportedQuery"


@pytest.mark.asyncio
async def test_directory_roles_direct_and_transitive(sim: Simulator, make_client: Any) -> None:
    eventual = make_client(ConsistencyLevel="eventual")
    plain = make_client()
    url = "/beta/roleManagement/directory/transitiveRoleAssignments"
    resp = await eventual.get(url, params={"$count": "true", "$filter": f"principalId eq '{PATTI}'"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["@odata.count"] == 1
    [row] = body["value"]
    assert row["roleDefinitionId"] == INTUNE_ADMIN and row["directoryScopeId"] == "/"
    assert row["principalId"] == group_id(sim, "Intune Admins (role-assignable)")
    direct = await plain.get(
        "/v1.0/roleManagement/directory/roleAssignments", params={"$filter": f"principalId eq '{PATTI}'"}
    )
    assert direct.json()["value"] == []  # only visible transitively
    missing_header = await plain.get(url, params={"$count": "true", "$filter": f"principalId eq '{PATTI}'"})
    assert missing_header.status_code == 400
    nestor = user_id(sim, "NestorW")
    direct = await plain.get(
        "/v1.0/roleManagement/directory/roleAssignments", params={"$filter": f"principalId eq '{nestor}'"}
    )
    assert [r["roleDefinitionId"] for r in direct.json()["value"]] == [GLOBAL_ADMIN]
    lynne = await eventual.get(url, params={"$count": "true", "$filter": f"principalId eq '{LYNNE}'"})
    assert lynne.json() == {"@odata.context": lynne.json()["@odata.context"], "@odata.count": 0, "value": []}
    megan = await eventual.get(url, params={"$count": "true", "$filter": f"principalId eq '{MEGAN}'"})
    assert [r["roleDefinitionId"] for r in megan.json()["value"]] == ["f2ef992c-3afb-46b9-b7cf-a126ee74c451"]
    v1 = await eventual.get(
        "/v1.0/roleManagement/directory/transitiveRoleAssignments", params={"$filter": f"principalId eq '{PATTI}'"}
    )
    assert v1.status_code == 400


@pytest.mark.asyncio
async def test_role_definitions(graph: httpx.AsyncClient) -> None:
    rows: list[dict[str, Any]] = []
    url: str | None = "/beta/deviceManagement/roleDefinitions"
    while url:
        body = (await graph.get(url)).json()
        rows += body["value"]
        url = body.get("@odata.nextLink")
    by_name = {r["displayName"]: r for r in rows}
    helpdesk = by_name["Help Desk Operator"]
    assert helpdesk["id"] == HELP_DESK and helpdesk["isBuiltIn"] and helpdesk["isBuiltInRoleDefinition"]
    assert helpdesk["permissions"] == helpdesk["rolePermissions"]
    allowed = helpdesk["rolePermissions"][0]["resourceActions"][0]["allowedResourceActions"]
    assert {"Microsoft.Intune_RemoteTasks_Retire", "Microsoft.Intune_ManagedDevices_Read"} <= set(allowed)
    readonly = by_name["Read Only Operator"]["rolePermissions"][0]["resourceActions"][0]["allowedResourceActions"]
    assert all(a.endswith("_Read") for a in readonly)
    no_retire = by_name["No retire allowed"]["rolePermissions"][0]["resourceActions"][0]
    assert no_retire["allowedResourceActions"] == ["*"]
    assert no_retire["notAllowedResourceActions"] == ["Microsoft.Intune_RemoteTasks_Retire"]
    assert (
        "Microsoft.Intune/ManagedDevices/Read"
        in by_name["Legacy Device Retire (actions)"]["rolePermissions"][0]["actions"]
    )
    one = (await graph.get(f"/beta/deviceManagement/roleDefinitions/{HELP_DESK}")).json()
    assert one["displayName"] == "Help Desk Operator"
    v1 = (await graph.get(f"/v1.0/deviceManagement/roleDefinitions/{HELP_DESK}")).json()
    assert "permissions" not in v1 and "actions" not in v1["rolePermissions"][0]
    assert (await graph.get("/beta/deviceManagement/roleDefinitions/nope")).status_code == 404


@pytest.mark.asyncio
async def test_role_assignments(sim: Simulator, graph: httpx.AsyncClient) -> None:
    rows: list[dict[str, Any]] = []
    url: str | None = "/beta/deviceManagement/roleAssignments"
    params: dict[str, str] | None = {"$expand": "roleDefinition"}
    while url:
        body = (await graph.get(url, params=params)).json()
        rows += body["value"]
        url, params = body.get("@odata.nextLink"), None
    assert len(rows) == len(sim.state.role_assignments)
    assert {r["scopeType"] for r in rows} == {
        "allDevices",
        "allLicensedUsers",
        "allDevicesAndLicensedUsers",
        "resourceScope",
    }
    isaiah = next(r for r in rows if r["displayName"] == "Chromebook techs - Riverside")
    assert isaiah["roleDefinition"]["displayName"] == "Chromebook Retire Tech"
    assert isaiah["members"] == [group_id(sim, "Device Admins")]
    assert isaiah["resourceScopes"] == [group_id(sim, "RMS Chromebooks")]
    assert set(isaiah) >= {
        "id",
        "displayName",
        "description",
        "members",
        "scopeMembers",
        "resourceScopes",
        "scopeType",
        "roleScopeTagIds",
    }
    assert "roleDefinitionId" not in isaiah
    bare = (await graph.get("/beta/deviceManagement/roleAssignments")).json()["value"]
    assert all("roleDefinition" not in r for r in bare)
    one = (
        await graph.get(f"/beta/deviceManagement/roleAssignments/{isaiah['id']}", params={"$expand": "roleDefinition"})
    ).json()
    assert one["roleDefinition"]["id"] == isaiah["roleDefinition"]["id"]
    assert (await graph.get("/beta/deviceManagement/roleAssignments", params={"$expand": "members"})).status_code == 400
    nav = (await graph.get(f"/beta/deviceManagement/roleDefinitions/{HELP_DESK}/roleAssignments")).json()["value"]
    assert {r["displayName"] for r in nav} == {"Helpdesk - all devices", "Helpdesk - licensed users"}
    assert all("scopeType" not in r and r["members"] for r in nav)
    tags = (await graph.get("/beta/deviceManagement/roleScopeTags")).json()["value"]
    assert {t["id"]: t["displayName"] for t in tags}["0"] == "Default"
    assert set(tags[0]) == {"@odata.type", "id", "displayName", "description", "isBuiltIn"}


@pytest.mark.asyncio
async def test_state_edits_are_visible(sim: Simulator, graph: httpx.AsyncClient) -> None:
    device_admins = group_id(sim, "Device Admins")
    sim.state.groups[device_admins]["members"].clear()
    resp = await graph.post(f"/v1.0/users/{ISAIAH}/checkMemberGroups", json={"groupIds": [device_admins]})
    assert resp.json()["value"] == []
    ra = next(a for a in sim.state.role_assignments.values() if a["displayName"] == "Helpdesk - all devices")
    del sim.state.role_assignments[ra["id"]]
    assert (await graph.get(f"/beta/deviceManagement/roleAssignments/{ra['id']}")).status_code == 404
    sim.reset_state()
    assert ra["id"] in sim.state.role_assignments
