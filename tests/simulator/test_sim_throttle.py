"""Intune's per-app write budget (graph-intune.md §10): 429 + Retry-After, top level and inside `$batch`.

The window runs on the simulator clock; recovery is tested with ``advance_clock`` (no sleeping), so a slow
machine cannot make these tests flaky: only the budget's *count* decides, never how long requests take.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulator import INTUNE_WRITE_LIMIT, Simulator

DEVICES = "/beta/deviceManagement/managedDevices"
BODY = {"deprovisionReason": "retiring_device"}
ALEX = "00000000-0000-0000-0000-0000000000020"


def chromebooks(sim: Simulator) -> list[str]:
    return [
        d["id"] for d in sim.state.devices.values() if d["deviceType"] == "chromeOS" and not d["deviceActionResults"]
    ]


def deprovision_item(request_id: str, device_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "POST",
        "url": f"/deviceManagement/managedDevices/{device_id}/deprovision",
        "headers": {"Content-Type": "application/json"},
        "body": BODY,
    }


def assert_throttled(resp: httpx.Response, window: float) -> float:
    assert resp.status_code == 429
    wait = float(resp.headers["Retry-After"])  # seconds, fractional allowed
    assert 0 < wait <= window
    error = resp.json()["error"]
    assert error["code"] == "TooManyRequests" and error["message"] == "Please retry again later."
    inner = error["innerError"]
    assert (inner["code"], inner["message"], inner["status"]) == ("429", "Please retry after", "429")
    assert inner["request-id"] == resp.headers["request-id"] and inner["date"]
    return wait


@pytest.mark.asyncio
async def test_off_by_default_and_on_with_intune_numbers(sim: Simulator) -> None:
    assert sim.control.write_limit is None
    assert INTUNE_WRITE_LIMIT == (200, 20.0)
    async with httpx.AsyncClient(base_url=sim.base_url, verify=sim.ssl_context()) as control:
        assert (await control.post("/_sim/control", json={"write_limit": True})).json()["write_limit"] == [200, 20.0]
        assert sim.control.write_limit == INTUNE_WRITE_LIMIT
        assert (await control.post("/_sim/control", json={"write_limit": [3, 0.25]})).json()["write_limit"] == [3, 0.25]
        assert (await control.post("/_sim/control", json={"write_limit": None})).json()["write_limit"] is None
        await control.post("/_sim/control", json={"write_limit": True})
        assert (await control.post("/_sim/control", json={"reset": True})).json()["write_limit"] is None


@pytest.mark.asyncio
async def test_budget_then_429_then_recovery_after_the_window(sim: Simulator, graph: httpx.AsyncClient) -> None:
    frozen = sim.control.now()
    sim.control.time_source = lambda: frozen
    sim.control.write_limit = (3, 60.0)
    sim.control.action_completion_delay = 0
    ids = chromebooks(sim)[:5]
    for device_id in ids[:3]:
        assert (await graph.post(f"{DEVICES}/{device_id}/deprovision", json=BODY)).status_code == 204
    audits = len(sim.state.remote_action_audits)
    throttled = await graph.post(f"{DEVICES}/{ids[3]}/deprovision", json=BODY)
    wait = assert_throttled(throttled, 60.0)
    assert len(sim.state.remote_action_audits) == audits  # a throttled POST is not applied
    assert sim.state.devices[ids[3]]["deviceActionResults"] == []
    assert (await graph.get(DEVICES, params={"$top": "1"})).status_code == 200  # reads are not limited
    assert (await graph.post(f"/v1.0/users/{ALEX}/checkMemberGroups", json={"groupIds": []})).status_code == 200
    assert (await graph.post(f"{DEVICES}/{ids[3]}/disable")).status_code == 429  # every device action counts
    assert wait == 60.0  # time is frozen: the oldest write leaves the window in exactly 60 s
    sim.advance_clock(59.875)
    assert throttled.headers["Retry-After"] == "60"
    again = await graph.post(f"{DEVICES}/{ids[3]}/deprovision", json=BODY)
    assert_throttled(again, 1.0)
    assert again.headers["Retry-After"] == "0.125"  # fractional seconds
    sim.advance_clock(0.125)
    for device_id in ids[3:5]:
        assert (await graph.post(f"{DEVICES}/{device_id}/deprovision", json=BODY)).status_code == 204
    assert len(sim.deprovision_posts()) == 5


@pytest.mark.asyncio
async def test_refused_writes_count_too(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.write_limit = (2, 60.0)
    [device_id] = chromebooks(sim)[:1]
    assert (await graph.post(f"{DEVICES}/{device_id}/deprovision", json={})).status_code == 400
    assert (await graph.post(f"{DEVICES}/{device_id}/deprovision", json={"deprovisionReason": "x"})).status_code == 400
    assert_throttled(await graph.post(f"{DEVICES}/{device_id}/deprovision", json=BODY), 60.0)


@pytest.mark.asyncio
async def test_intune_budget_of_200_through_batches(sim: Simulator, graph: httpx.AsyncClient) -> None:
    """The real numbers: 200 writes per 20 s, counted per sub-request, the 201st refused inside the batch."""
    frozen = sim.control.now()
    sim.control.time_source = lambda: frozen  # 200 requests may take a while on a busy machine: stop time
    sim.control.write_limit = INTUNE_WRITE_LIMIT
    sim.control.action_outcome = "never"  # keep every device pending: a repeat is a 400, which still counts
    [device_id] = chromebooks(sim)[:1]
    statuses: list[int] = []
    for batch in range(10):
        items = [deprovision_item(f"{batch}-{i}", device_id) for i in range(20)]
        resp = await graph.post("/beta/$batch", json={"requests": items})
        assert resp.status_code == 200
        statuses += [r["status"] for r in resp.json()["responses"]]
    assert sorted(statuses) == [204] + [400] * 199
    resp = await graph.post("/beta/$batch", json={"requests": [deprovision_item("last", device_id)]})
    [item] = resp.json()["responses"]
    assert item["status"] == 429 and item["headers"]["Retry-After"] == "20"
    assert item["body"]["error"]["code"] == "TooManyRequests"
    sim.advance_clock(20.0)
    resp = await graph.post(f"{DEVICES}/{device_id}/deprovision", json=BODY)
    assert resp.status_code == 400  # the budget is back; the device is still pending from the first POST


@pytest.mark.asyncio
async def test_batch_sub_requests_throttled_inside_the_batch(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.write_limit = (3, 60.0)
    sim.control.action_completion_delay = 0
    ids = chromebooks(sim)[:5]
    audits = len(sim.state.remote_action_audits)
    items: list[dict[str, Any]] = [deprovision_item(f"d{i}", device_id) for i, device_id in enumerate(ids)]
    items.append({"id": "read", "method": "GET", "url": f"/deviceManagement/managedDevices/{ids[4]}?$select=id"})
    items.append(
        {"id": "after", "method": "GET", "url": f"/deviceManagement/managedDevices/{ids[4]}", "dependsOn": ["d4"]}
    )
    resp = await graph.post("/beta/$batch", json={"requests": items})
    assert resp.status_code == 200  # the batch itself is never throttled by the write budget
    out = {r["id"]: r for r in resp.json()["responses"]}
    assert [out[f"d{i}"]["status"] for i in range(5)] == [204, 204, 204, 429, 429]
    for key in ("d3", "d4"):
        assert 0 < float(out[key]["headers"]["Retry-After"]) <= 60
        assert out[key]["body"]["error"]["code"] == "TooManyRequests"
    assert out["read"]["status"] == 200
    assert out["after"]["status"] == 424
    assert len(sim.state.remote_action_audits) == audits + 3
    throttled = [c for c in sim.calls if c.batch_id is not None and c.status == 429]
    assert len(throttled) == 2 and not any(c.fault for c in throttled)
    assert_throttled(await graph.post(f"{DEVICES}/{ids[3]}/deprovision", json=BODY), 60.0)  # top level shares it
    sim.advance_clock(60.0)
    resp = await graph.post("/beta/$batch", json={"requests": [deprovision_item("again", ids[3])]})
    assert resp.json()["responses"][0]["status"] == 204
