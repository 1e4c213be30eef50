"""Intune managed devices: lookup, filters, $select, paging, deprovision and its follow-up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from simulator import Simulator
from simulator.testing import running_simulator

DEVICES = "/beta/deviceManagement/managedDevices"


def by_name(sim: Simulator, name: str) -> dict[str, Any]:
    [device] = [d for d in sim.state.devices.values() if d["deviceName"] == name]
    return device


def intune_message(resp: httpx.Response) -> str:
    """Intune puts a JSON string in error.message; return its human part."""
    message = str(resp.json()["error"]["message"])
    try:
        return str(json.loads(message)["Message"])
    except ValueError:
        return message


async def lookup(graph: httpx.AsyncClient, filter_: str, select: str = "id,deviceName,serialNumber") -> httpx.Response:
    return await graph.get(DEVICES, params={"$filter": filter_, "$select": select})


@pytest.mark.asyncio
async def test_filter_escaping_and_case_insensitive_match(sim: Simulator, graph: httpx.AsyncClient) -> None:
    resp = await lookup(graph, "deviceName eq 'o''brien-lab-01'")
    assert resp.status_code == 200
    assert [d["deviceName"] for d in resp.json()["value"]] == ["O'Brien-Lab-01"]
    resp = await lookup(graph, "serialNumber eq 'PF2K9&7+QZ'")  # & and + survive URL encoding
    assert [d["deviceName"] for d in resp.json()["value"]] == ["LES-RM12-04"]
    resp = await lookup(graph, "deviceName eq 'NHS-LIB-01'")
    rows = resp.json()["value"]
    assert len(rows) == 2 and rows[0]["serialNumber"] != rows[1]["serialNumber"]
    target = rows[0]
    resp = await lookup(graph, f"deviceName eq 'NHS-LIB-01' and serialNumber eq '{target['serialNumber']}'")
    assert resp.json()["value"] == [target]
    entra = by_name(sim, "LES-RM12-01")["azureADDeviceId"]
    resp = await lookup(graph, f"azureADDeviceId eq '{entra.upper()}' and deviceType eq 'chromeOS'")
    assert [d["deviceName"] for d in resp.json()["value"]] == ["LES-RM12-01"]
    assert (await lookup(graph, "serialNumber eq 'NOPE'")).json()["value"] == []


@pytest.mark.parametrize(
    "bad",
    [
        "deviceName ne 'x'",
        "deviceName eq 'a' or deviceName eq 'b'",
        "startswith(deviceName)",
        "startswith(notes, 'x')",
        "startswith(deviceName, 'NHS') or deviceName eq 'x'",
        "contains(deviceName, 'NHS')",
        "notes eq 'x'",
        "deviceName eq 'unbalanced",
        "deviceName eq 'O'Brien-Lab-01'",
        "deviceName eq NHS",
        "deviceName eq",
        "deviceName eq 'a' and",
        "",
    ],
)
@pytest.mark.asyncio
async def test_bad_filters_are_400(graph: httpx.AsyncClient, bad: str) -> None:
    resp = await lookup(graph, bad)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "BadRequest"
    assert resp.json()["error"]["message"].startswith("Invalid filter clause")


@pytest.mark.asyncio
async def test_startswith_on_device_name_and_serial(graph: httpx.AsyncClient) -> None:
    resp = await lookup(graph, "startswith(deviceName, 'nhs-cart3-0')")
    assert resp.status_code == 200, resp.text
    names = {row["deviceName"] for row in resp.json()["value"]}
    assert "NHS-CART3-01" in names and all(n.upper().startswith("NHS-CART3-0") for n in names)
    resp = await lookup(graph, "startswith(serialNumber, '5CD0832') and deviceName eq 'NHS-CART3-01'")
    assert [row["serialNumber"] for row in resp.json()["value"]] == ["5CD0832TGL"]
    resp = await graph.get(DEVICES, params={"$filter": "startswith(deviceName, 'NHS')", "$top": "5"})
    assert len(resp.json()["value"]) == 5


@pytest.mark.asyncio
async def test_ignore_filters_quirk_returns_the_whole_tenant_paged(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.ignore_filters = True
    seen: list[str] = []
    url: str | None = DEVICES
    params: dict[str, str] | None = {"$filter": "serialNumber eq 'PF2K9&7+QZ'", "$select": "id,serialNumber"}
    while url:
        body = (await graph.get(url, params=params)).json()
        assert len(body["value"]) <= 5
        seen += [d["id"] for d in body["value"]]
        url, params = body.get("@odata.nextLink"), None
    assert sorted(seen) == sorted(sim.state.devices)
    sim.control.ignore_filters = False
    resp = await lookup(graph, "totally bogus ( filter")
    assert resp.status_code == 400


@pytest.mark.asyncio
async def test_select_and_list_shape(graph: httpx.AsyncClient) -> None:
    resp = await graph.get(DEVICES, params={"$select": "deviceName,operatingSystem", "$top": "2"})
    body = resp.json()
    assert body["@odata.context"].endswith(
        "/beta/$metadata#deviceManagement/managedDevices(deviceName,operatingSystem)"
    )
    assert all(set(d) == {"id", "deviceName", "operatingSystem"} for d in body["value"])
    full = (await graph.get(DEVICES, params={"$top": "1"})).json()["value"][0]
    assert full["chromeOSDeviceInfo"] == []  # heavy property empty in lists
    assert full["@odata.type"] == "#microsoft.graph.managedDevice"
    for field in ("serialNumber", "azureADDeviceId", "roleScopeTagIds", "enrollmentProfileName", "deviceActionResults"):
        assert field in full
    resp = await graph.get(DEVICES, params={"$select": "deviceName,nonsense"})
    assert resp.status_code == 400
    assert "nonsense" in resp.json()["error"]["message"]
    resp = await graph.get(DEVICES, params={"$orderby": "deviceName"})
    assert resp.status_code == 400


@pytest.mark.asyncio
async def test_paging_with_next_link() -> None:
    async with (
        running_simulator(page_size=3) as sim,
        httpx.AsyncClient(verify=sim.ssl_context(), headers={"Authorization": f"Bearer {sim.issue_token()}"}) as graph,
    ):
        pages: list[list[dict[str, Any]]] = []
        url: str | None = f"{sim.base_url}{DEVICES}"
        params: dict[str, str] | None = {"$filter": "deviceType eq 'chromeOS'", "$select": "id,serialNumber"}
        while url:
            resp = await graph.get(url, params=params)
            assert resp.status_code == 200
            body = resp.json()
            pages.append(body["value"])
            url, params = body.get("@odata.nextLink"), None
            if url:
                assert url.startswith(f"{sim.base_url}{DEVICES}?") and "$skiptoken=" in url
        chrome = [d for d in sim.state.devices.values() if d["deviceType"] == "chromeOS"]
        assert sum(len(p) for p in pages) == len(chrome)
        assert all(len(p) == 3 for p in pages[:-1])
        assert {d["id"] for p in pages for d in p} == {d["id"] for d in chrome}
        top = (await graph.get(f"{sim.base_url}{DEVICES}", params={"$top": "2"})).json()
        assert len(top["value"]) == 2 and "@odata.nextLink" in top
        bad = await graph.get(f"{sim.base_url}{DEVICES}", params={"$skiptoken": "garbage"})
        assert bad.status_code == 400


@pytest.mark.asyncio
async def test_get_by_id(sim: Simulator, graph: httpx.AsyncClient) -> None:
    device = by_name(sim, "NHS-CART3-07")
    resp = await graph.get(
        f"{DEVICES}/{device['id']}", params={"$select": "id,chromeOSDeviceInfo,deviceActionResults,roleScopeTagIds"}
    )
    body = resp.json()
    assert body["@odata.context"].endswith(
        "managedDevices(id,chromeOSDeviceInfo,deviceActionResults,roleScopeTagIds)/$entity"
    )
    info = {p["name"]: p for p in body["chromeOSDeviceInfo"]}
    assert info["deviceStatus"]["value"] == "Active"
    assert set(info["deviceStatus"]) == {"name", "value", "valueType", "updatable"}
    assert body["roleScopeTagIds"] == ["1"]
    assert (await graph.get(f"{DEVICES}/not-a-guid")).status_code == 400
    missing = await graph.get(f"{DEVICES}/00000000-1111-2222-3333-444444444444")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"
    v1 = (await graph.get(f"/v1.0/deviceManagement/managedDevices/{device['id']}")).json()
    assert "chromeOSDeviceInfo" not in v1 and v1["serialNumber"] == device["serialNumber"]


async def deprovision(
    graph: httpx.AsyncClient, device_id: str, body: Any = None, version: str = "beta"
) -> httpx.Response:
    if body is None:
        body = {"deprovisionReason": "retiring_device"}
    return await graph.post(f"/{version}/deviceManagement/managedDevices/{device_id}/deprovision", json=body)


@pytest.mark.asyncio
async def test_deprovision_and_follow_up(sim: Simulator, graph: httpx.AsyncClient) -> None:
    device = by_name(sim, "NHS-CART3-07")
    resp = await deprovision(graph, device["id"])
    assert resp.status_code == 204 and resp.content == b""
    assert [c.body for c in sim.deprovision_posts(device["id"])] == [{"deprovisionReason": "retiring_device"}]
    fetched = (await graph.get(f"{DEVICES}/{device['id']}")).json()
    [result] = fetched["deviceActionResults"]
    assert (result["actionName"], result["actionState"]) == ("deprovision", "pending")
    again = await deprovision(graph, device["id"])
    assert again.status_code == 400 and "pending" in intune_message(again)
    await asyncio.sleep(0.3)
    fetched = (
        await graph.get(f"{DEVICES}/{device['id']}", params={"$select": "chromeOSDeviceInfo,deviceActionResults"})
    ).json()
    assert fetched["deviceActionResults"][0]["actionState"] == "done"
    info = {p["name"]: p["value"] for p in fetched["chromeOSDeviceInfo"]}
    assert info["deviceStatus"] == "Deprovisioned"
    assert fetched["deviceActionResults"][0]["lastUpdatedDateTime"] >= result["startDateTime"]
    assert sim.state.devices[device["id"]]["managementState"] == "managed"  # stays in Intune
    again = await deprovision(graph, device["id"])
    assert again.status_code == 400 and "already deprovisioned" in intune_message(again)
    assert len(sim.deprovision_posts()) == 1


@pytest.mark.asyncio
async def test_deprovision_validation(sim: Simulator, graph: httpx.AsyncClient) -> None:
    chrome = by_name(sim, "NHS-CART4-01")["id"]
    windows = by_name(sim, "NHS-OFFICE-PC01")["id"]
    url = f"{DEVICES}/{chrome}/deprovision"
    assert (await graph.post(url)).status_code == 400  # no body
    assert (
        await graph.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    ).status_code == 400
    assert (await deprovision(graph, chrome, {})).status_code == 400
    assert (await deprovision(graph, chrome, {"deprovisionReason": ""})).status_code == 400
    assert (
        await deprovision(graph, chrome, {"deprovisionReason": "DEPROVISION_REASON_RETIRING_DEVICE"})
    ).status_code == 400
    assert (await deprovision(graph, chrome, {"deprovisionReason": "retiring_device", "x": 1})).status_code == 400
    resp = await deprovision(graph, windows)
    assert resp.status_code == 400 and "ChromeOS" in intune_message(resp)
    assert (await deprovision(graph, "00000000-1111-2222-3333-444444444444")).status_code == 404
    v1 = await deprovision(graph, chrome, version="v1.0")
    assert v1.status_code == 400
    assert v1.json()["error"]["message"] == "Resource not found for the segment 'deprovision'."
    already = [d for d in sim.state.devices.values() if d["deviceActionResults"]]
    assert [r["actionState"] for d in already for r in d["deviceActionResults"]] == ["failed", "done"]
    already = already[1:]  # the seed's one deprovisioned device (the other one's deprovision failed)
    assert (await deprovision(graph, already[0]["id"])).status_code == 400
    assert sim.deprovision_posts() == []
    for reason in sim.state.accepted_deprovision_reasons:
        device = by_name(sim, f"NHS-CART3-0{sim.state.accepted_deprovision_reasons.index(reason) + 1}")
        assert (await deprovision(graph, device["id"], {"deprovisionReason": reason})).status_code == 204


@pytest.mark.asyncio
async def test_disable_and_reenable(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0
    device = by_name(sim, "RMS-LOANER-01")
    assert (await graph.post(f"{DEVICES}/{device['id']}/disable")).status_code == 204
    status = {p["name"]: p["value"] for p in sim.state.devices[device["id"]]["chromeOSDeviceInfo"]}["deviceStatus"]
    assert status == "Disabled"
    assert (await graph.post(f"{DEVICES}/{device['id']}/reenable")).status_code == 204
    names = [r["actionName"] for r in sim.state.devices[device["id"]]["deviceActionResults"]]
    assert names == ["disable", "reenable"]
