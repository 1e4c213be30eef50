"""Intune's record of remote actions: remoteActionAudits, and the action lifecycle it shares with the device.

Lifecycle tests move the simulator clock (``sim.advance_clock``) instead of sleeping, so they do not depend on
how fast this machine is.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from simulator import Simulator
from simulator.testing import running_simulator

DEVICES = "/beta/deviceManagement/managedDevices"
AUDITS = "/beta/deviceManagement/remoteActionAudits"
BODY = {"deprovisionReason": "retiring_device"}
AUDIT_FIELDS = {
    "@odata.type",
    "id",
    "deviceDisplayName",
    "userName",
    "initiatedByUserPrincipalName",
    "action",
    "requestDateTime",
    "deviceOwnerUserPrincipalName",
    "deviceIMEI",
    "actionState",
    "managedDeviceId",
    "deviceActionDetails",
    "deviceActionCategory",
    "bulkDeviceActionId",
}


def fresh_chromebooks(sim: Simulator, n: int) -> list[str]:
    """ChromeOS devices with no remote action in their history and no audit row."""
    audited = {a["managedDeviceId"] for a in sim.state.remote_action_audits.values()}
    ids = [
        d["id"]
        for d in sim.state.devices.values()
        if d["deviceType"] == "chromeOS" and not d["deviceActionResults"] and d["id"] not in audited
    ]
    assert len(ids) >= n
    return ids[:n]


async def deprovision(graph: httpx.AsyncClient, device_id: str) -> httpx.Response:
    return await graph.post(f"{DEVICES}/{device_id}/deprovision", json=BODY)


async def audits_for(graph: httpx.AsyncClient, device_id: str) -> list[dict[str, Any]]:
    resp = await graph.get(AUDITS, params={"$filter": f"managedDeviceId eq '{device_id}' and action eq 'deprovision'"})
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, Any]] = resp.json()["value"]
    return rows


async def all_pages(graph: httpx.AsyncClient, url: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    resp = await graph.get(url, params=params)
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        rows.extend(body["value"])
        if "@odata.nextLink" not in body:
            return rows
        resp = await graph.get(body["@odata.nextLink"])


async def device_state(graph: httpx.AsyncClient, device_id: str) -> tuple[str, str]:
    """(deprovision actionState, chromeOSDeviceInfo deviceStatus) as Graph returns them."""
    resp = await graph.get(f"{DEVICES}/{device_id}", params={"$select": "id,chromeOSDeviceInfo,deviceActionResults"})
    body = resp.json()
    [record] = [r for r in body["deviceActionResults"] if r["actionName"] == "deprovision"]
    [status] = [p["value"] for p in body["chromeOSDeviceInfo"] if p["name"] == "deviceStatus"]
    return record["actionState"], status


@pytest.mark.asyncio
async def test_deprovision_writes_a_pending_audit_row_that_turns_done(sim: Simulator, graph: httpx.AsyncClient) -> None:
    frozen = sim.control.now()
    sim.control.time_source = lambda: frozen  # only advance_clock moves time: no dependence on machine speed
    sim.control.action_completion_delay = 30
    [device_id] = fresh_chromebooks(sim, 1)
    device = sim.state.devices[device_id]
    assert (await deprovision(graph, device_id)).status_code == 204
    [row] = await audits_for(graph, device_id)
    assert set(row) == AUDIT_FIELDS
    assert row["action"] == "deprovision" and row["actionState"] == "pending"
    assert row["managedDeviceId"] == device_id and row["deviceDisplayName"] == device["deviceName"]
    assert row["initiatedByUserPrincipalName"] == sim.client_id == row["userName"]  # app-only: the app id
    assert row["deviceOwnerUserPrincipalName"] == device["userPrincipalName"]
    assert row["deviceActionCategory"] == "single" and row["bulkDeviceActionId"] is None
    assert row["deviceActionDetails"] == [{"key": "deprovisionReason", "value": "retiring_device"}]
    record = sim.state.devices[device_id]["deviceActionResults"][0]
    assert row["requestDateTime"] == record["startDateTime"]
    assert await device_state(graph, device_id) == ("pending", "Active")
    sim.advance_clock(29.5)
    assert await device_state(graph, device_id) == ("pending", "Active")
    sim.advance_clock(0.5)
    assert await device_state(graph, device_id) == ("done", "Deprovisioned")
    [row] = await audits_for(graph, device_id)
    assert row["actionState"] == "done"
    single = await graph.get(f"{AUDITS}/{row['id']}", params={"$select": "id,actionState"})
    assert single.status_code == 200
    assert {k: v for k, v in single.json().items() if k != "@odata.context"} == {"id": row["id"], "actionState": "done"}
    assert (await graph.get(f"{AUDITS}/{device_id}")).status_code == 404


@pytest.mark.asyncio
async def test_completion_also_happens_on_its_own_in_real_time(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0.05
    [device_id] = fresh_chromebooks(sim, 1)
    assert (await deprovision(graph, device_id)).status_code == 204
    for _ in range(200):  # the timer applies it without any request; allow up to 10 s on a busy machine
        if sim.state.devices[device_id]["deviceActionResults"][0]["actionState"] == "done":
            break
        await asyncio.sleep(0.05)
    assert [a["actionState"] for a in sim.state.remote_action_audits.values() if a["managedDeviceId"] == device_id] == [
        "done"
    ]


@pytest.mark.asyncio
async def test_failed_outcome_per_device_with_error_detail(sim: Simulator, graph: httpx.AsyncClient) -> None:
    failing, fine = fresh_chromebooks(sim, 2)
    frozen = sim.control.now()
    sim.control.time_source = lambda: frozen
    sim.control.action_completion_delay = 10
    sim.control.set_device_outcome(failing, "failed", delay=5, error="Google says no")
    assert (await deprovision(graph, failing)).status_code == 204
    assert (await deprovision(graph, fine)).status_code == 204
    sim.advance_clock(5)
    assert await device_state(graph, failing) == ("failed", "Active")
    assert await device_state(graph, fine) == ("pending", "Active")  # the global 10 s still runs
    [row] = await audits_for(graph, failing)
    assert row["actionState"] == "failed"
    assert {"key": "errorMessage", "value": "Google says no"} in row["deviceActionDetails"]
    sim.advance_clock(5)
    assert await device_state(graph, fine) == ("done", "Deprovisioned")
    # a failed deprovision may be sent again: a second row, the device's record replaced
    sim.control.clear_device_outcome(failing)
    assert (await deprovision(graph, failing)).status_code == 204
    rows = await audits_for(graph, failing)
    assert [r["actionState"] for r in rows] == ["failed", "pending"]
    assert await device_state(graph, failing) == ("pending", "Active")
    sim.advance_clock(10)
    assert [r["actionState"] for r in await audits_for(graph, failing)] == ["failed", "done"]


@pytest.mark.asyncio
async def test_global_failed_outcome_uses_the_default_error(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_outcome = "failed"
    sim.control.action_completion_delay = 0
    [device_id] = fresh_chromebooks(sim, 1)
    assert (await deprovision(graph, device_id)).status_code == 204
    assert await device_state(graph, device_id) == ("failed", "Active")
    [row] = await audits_for(graph, device_id)
    [detail] = [d["value"] for d in row["deviceActionDetails"] if d["key"] == "errorMessage"]
    assert detail == sim.control.action_error and "Google" in detail


@pytest.mark.asyncio
async def test_never_stays_pending_until_finished_by_hand(sim: Simulator, graph: httpx.AsyncClient) -> None:
    first, second = fresh_chromebooks(sim, 2)
    sim.control.set_device_outcome(first, "never")
    sim.control.action_outcome = "never"
    assert (await deprovision(graph, first)).status_code == 204
    assert (await deprovision(graph, second)).status_code == 204
    sim.advance_clock(24 * 3600)
    assert await device_state(graph, first) == ("pending", "Active")
    assert (await deprovision(graph, first)).status_code == 400  # still pending: Intune refuses a repeat
    assert sim.finish_action(first) is True
    assert await device_state(graph, first) == ("done", "Deprovisioned")
    assert sim.finish_action(first) is False  # nothing pending any more
    assert sim.finish_action(second, outcome="failed", error="gave up") is True
    assert await device_state(graph, second) == ("failed", "Active")
    [row] = await audits_for(graph, second)
    assert {"key": "errorMessage", "value": "gave up"} in row["deviceActionDetails"]
    with pytest.raises(ValueError):
        sim.finish_action(second, outcome="never")


@pytest.mark.asyncio
async def test_disable_and_reenable_are_audited_too(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0
    [device_id] = fresh_chromebooks(sim, 1)
    assert (await graph.post(f"{DEVICES}/{device_id}/disable")).status_code == 204
    assert (await graph.post(f"{DEVICES}/{device_id}/reenable")).status_code == 204
    rows = await all_pages(graph, AUDITS, {"$filter": f"managedDeviceId eq '{device_id}'"})
    assert [(r["action"], r["actionState"], r["deviceActionDetails"]) for r in rows] == [
        ("disable", "done", []),
        ("reenable", "done", []),
    ]


@pytest.mark.asyncio
async def test_filter_honoured_rejected_and_ignored(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0
    a, b, *others = fresh_chromebooks(sim, 6)
    for device_id in (a, b, *others):
        assert (await deprovision(graph, device_id)).status_code == 204
    assert (await graph.post(f"{DEVICES}/{a}/disable")).status_code == 204
    rows = await all_pages(graph, AUDITS, {"$filter": f"managedDeviceId eq '{a.upper()}'"})
    assert {(r["managedDeviceId"], r["action"]) for r in rows} == {(a, "deprovision"), (a, "disable")}
    assert [r["action"] for r in await audits_for(graph, a)] == ["deprovision"]
    deprovisions = await all_pages(graph, AUDITS, {"$filter": "action eq 'deprovision'"})
    expected = [x["id"] for x in sim.state.remote_action_audits.values() if x["action"] == "deprovision"]
    assert [r["id"] for r in deprovisions] == expected and len(expected) >= 2
    for bad in ("managedDeviceId ne 'x'", "requestDateTime eq '2025-01-01'", "action eq 'a' or action eq 'b'"):
        resp = await graph.get(AUDITS, params={"$filter": bad})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "BadRequest", bad
    sim.control.ignore_filters = True  # the managedDevices quirk is a separate knob
    assert [r["managedDeviceId"] for r in await audits_for(graph, b)] == [b]
    sim.control.ignore_audit_filters = True  # the quirk: the whole collection comes back, paged
    everything = [r["id"] for r in sim.state.remote_action_audits.values()]
    assert len(everything) > sim.page_size
    assert [r["id"] for r in await all_pages(graph, AUDITS, {"$filter": f"managedDeviceId eq '{a}'"})] == everything
    assert [r["id"] for r in await all_pages(graph, AUDITS, {"$filter": "nonsense ("})] == everything


@pytest.mark.asyncio
async def test_paging_top_orderby_select_count(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0
    for i, device_id in enumerate(fresh_chromebooks(sim, 7)):
        sim.advance_clock(1)  # distinct request times
        assert (await deprovision(graph, device_id)).status_code == 204, i
    total = len(sim.state.remote_action_audits)
    first = await graph.get(AUDITS)
    assert len(first.json()["value"]) == sim.page_size == 5
    assert first.json()["@odata.nextLink"].startswith(f"{sim.base_url}{AUDITS}?")
    rows = await all_pages(graph, AUDITS)
    assert [r["id"] for r in rows] == list(sim.state.remote_action_audits)  # oldest first without $orderby
    newest = await all_pages(graph, AUDITS, {"$orderby": "requestDateTime desc", "$top": "2"})
    assert len(newest) == total
    times = [r["requestDateTime"] for r in newest]
    assert times == sorted(times, reverse=True)
    assert [r["id"] for r in newest] == [r["id"] for r in reversed(rows)]
    page = (await graph.get(AUDITS, params={"$orderby": "requestDateTime desc", "$top": "3"})).json()
    assert [r["id"] for r in page["value"]] == [r["id"] for r in newest[:3]]
    assert "@odata.nextLink" in page
    asc = await all_pages(graph, AUDITS, {"$orderby": "requestDateTime asc"})
    assert [r["id"] for r in asc] == [r["id"] for r in rows]
    for bad in ("deviceDisplayName", "requestDateTime sideways"):
        assert (await graph.get(AUDITS, params={"$orderby": bad})).status_code == 400
    picked = (await graph.get(AUDITS, params={"$select": "managedDeviceId,actionState", "$count": "true"})).json()
    assert picked["@odata.count"] == total
    assert set(picked["value"][0]) == {"id", "managedDeviceId", "actionState"}
    assert picked["@odata.context"].endswith("#deviceManagement/remoteActionAudits(managedDeviceId,actionState)")


@pytest.mark.asyncio
async def test_version_and_permissions(sim: Simulator, graph: httpx.AsyncClient) -> None:
    assert (await graph.get("/v1.0/deviceManagement/remoteActionAudits")).status_code == 400
    sim.state.revoke(
        {
            "DeviceManagementManagedDevices.Read.All",
            "DeviceManagementManagedDevices.ReadWrite.All",
            "DeviceManagementConfiguration.Read.All",
        }
    )
    resp = await graph.get(AUDITS)
    assert resp.status_code == 403
    assert "DeviceManagementConfiguration.Read.All" in json.loads(resp.json()["error"]["message"])["Message"]
    sim.state.grant({"DeviceManagementConfiguration.Read.All"})
    assert (await graph.get(AUDITS)).status_code == 200


@pytest.mark.asyncio
async def test_faults_after_apply_leave_a_row_faults_before_do_not(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 30
    before_500, before_drop, after_504, after_502, after_drop, after_500 = fresh_chromebooks(sim, 6)
    rows_before = len(sim.state.remote_action_audits)
    sim.control.add_fault("POST", "/deprovision$", 500)
    assert (await deprovision(graph, before_500)).status_code == 500
    sim.control.add_fault("POST", "/deprovision$", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await deprovision(graph, before_drop)
    assert len(sim.state.remote_action_audits) == rows_before
    assert await audits_for(graph, before_500) == [] and await audits_for(graph, before_drop) == []
    for device_id, status in ((after_504, 504), (after_502, 502), (after_500, 500)):
        sim.control.add_fault("POST", "/deprovision$", status, after_apply=True)
        assert (await deprovision(graph, device_id)).status_code == status
    sim.control.add_fault("POST", "/deprovision$", drop=True, after_apply=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await deprovision(graph, after_drop)
    for device_id in (after_504, after_502, after_drop, after_500):
        [row] = await audits_for(graph, device_id)
        assert row["actionState"] == "pending"
        assert await device_state(graph, device_id) == ("pending", "Active")
    sim.advance_clock(30)
    for device_id in (after_504, after_502, after_drop, after_500):
        assert [r["actionState"] for r in await audits_for(graph, device_id)] == ["done"]
    assert len(sim.state.remote_action_audits) == rows_before + 4
    # a refused POST (400: already done) writes nothing
    assert (await deprovision(graph, after_504)).status_code == 400
    assert len(sim.state.remote_action_audits) == rows_before + 4


@pytest.mark.asyncio
async def test_status_property_name_and_value_are_configurable(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.action_completion_delay = 0
    sim.control.chrome_status_property = "deprovisionStatus"
    sim.control.deprovisioned_status = "DEPROVISIONED"
    [device_id] = fresh_chromebooks(sim, 1)
    assert (await deprovision(graph, device_id)).status_code == 204
    body = (await graph.get(f"{DEVICES}/{device_id}", params={"$select": "id,chromeOSDeviceInfo"})).json()
    names = {p["name"]: p["value"] for p in body["chromeOSDeviceInfo"]}
    assert names["deprovisionStatus"] == "DEPROVISIONED" and "deviceStatus" not in names
    assert (await deprovision(graph, device_id)).status_code == 400  # already deprovisioned, either spelling
    sim.control.chrome_status_property = "deviceStatus"
    assert await device_state(graph, device_id) == ("done", "DEPROVISIONED")


@pytest.mark.asyncio
async def test_audit_initiator_knob(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.audit_initiated_by = "ChromeOS Deprovision Bot"
    [device_id] = fresh_chromebooks(sim, 1)
    assert (await deprovision(graph, device_id)).status_code == 204
    [row] = await audits_for(graph, device_id)
    assert row["initiatedByUserPrincipalName"] == row["userName"] == "ChromeOS Deprovision Bot"


@pytest.mark.asyncio
async def test_http_control_for_outcomes_clock_and_audits(sim: Simulator, graph: httpx.AsyncClient) -> None:
    failing, stuck, normal = fresh_chromebooks(sim, 3)
    async with httpx.AsyncClient(base_url=sim.base_url, verify=sim.ssl_context()) as control:
        resp = await control.post(
            "/_sim/control",
            json={
                "action_completion_delay": 60,
                "action_outcome": "done",
                "ignore_audit_filters": False,
                "audit_initiated_by": None,
                "device_outcomes": {
                    failing: {"outcome": "failed", "delay": 5, "error": "connector offline"},
                    stuck: {"outcome": "never"},
                },
            },
        )
        assert resp.status_code == 200, resp.text
        snap = resp.json()
        assert snap["device_outcomes"][failing] == {"outcome": "failed", "delay": 5.0, "error": "connector offline"}
        assert snap["action_outcome"] == "done" and snap["chrome_status_property"] == "deviceStatus"
        for device_id in (failing, stuck, normal):
            assert (await deprovision(graph, device_id)).status_code == 204
        resp = await control.post("/_sim/control", json={"advance_clock": 5})
        assert resp.json()["clock_offset"] == 5
        assert await device_state(graph, failing) == ("failed", "Active")
        await control.post("/_sim/control", json={"advance_clock": 55})
        assert await device_state(graph, normal) == ("done", "Deprovisioned")
        assert await device_state(graph, stuck) == ("pending", "Active")
        await control.post("/_sim/control", json={"finish_actions": [{"device_id": stuck, "outcome": "done"}]})
        assert await device_state(graph, stuck) == ("done", "Deprovisioned")
        audits = (await control.get("/_sim/audits")).json()
        assert {a["managedDeviceId"]: a["actionState"] for a in audits if a["managedDeviceId"] in (failing, stuck)} == {
            failing: "failed",
            stuck: "done",
        }
        resp = await control.post("/_sim/control", json={"device_outcomes": {failing: None}, "ignore_audit_filters": 1})
        assert resp.json()["device_outcomes"] == {stuck: {"outcome": "never", "delay": None, "error": None}}
        assert sim.control.ignore_audit_filters
        for bad in ({"action_outcome": "maybe"}, {"device_outcomes": {normal: {"outcome": "soon"}}}):
            assert (await control.post("/_sim/control", json=bad)).status_code == 400
        assert (await control.post("/_sim/control", json={"advance_clock": -1})).status_code == 400
        resp = await control.post("/_sim/control", json={"reset": True})
        assert resp.json()["device_outcomes"] == {} and resp.json()["clock_offset"] == 60  # time never goes back
        assert not sim.control.ignore_audit_filters


@pytest.mark.asyncio
async def test_clock_and_finish_from_another_thread() -> None:
    """With the simulator serving from its own thread, advance_clock/finish_action run on its loop."""
    async with running_simulator(in_thread=True) as sim:
        sim.control.action_completion_delay = 30
        first, second = fresh_chromebooks(sim, 2)
        sim.control.set_device_outcome(second, "never")
        async with httpx.AsyncClient(
            base_url=sim.base_url, verify=sim.ssl_context(), headers={"Authorization": f"Bearer {sim.issue_token()}"}
        ) as graph:
            for device_id in (first, second):
                assert (await deprovision(graph, device_id)).status_code == 204
            await asyncio.to_thread(sim.advance_clock, 30)
            assert await device_state(graph, first) == ("done", "Deprovisioned")
            assert await asyncio.to_thread(sim.finish_action, second, "deprovision", "failed") is True
            assert await device_state(graph, second) == ("failed", "Active")
            with pytest.raises(ValueError):
                sim.advance_clock(-1)
        assert sim.stats()["remote_action_audits"] == {"done": 2, "failed": 2}  # with the seed's two rows
