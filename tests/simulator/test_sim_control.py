"""Auth, permissions, faults, throttling, latency, $batch, the HTTP control API and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulator import Simulator
from simulator.testing import running_simulator

DEVICES = "/beta/deviceManagement/managedDevices"
ALEX = "00000000-0000-0000-0000-0000000000020"


def chrome_ids(sim: Simulator, n: int) -> list[str]:
    active = [
        d["id"] for d in sim.state.devices.values() if d["deviceType"] == "chromeOS" and not d["deviceActionResults"]
    ]
    return active[:n]


@pytest.mark.asyncio
async def test_request_ids_on_every_response(graph: httpx.AsyncClient) -> None:
    ok = await graph.get(f"/v1.0/users/{ALEX}", headers={"client-request-id": "my-correlation-id"})
    assert ok.headers["client-request-id"] == "my-correlation-id"
    assert ok.headers["request-id"]
    assert ok.json()["@odata.context"].endswith("/v1.0/$metadata#users/$entity")
    err = await graph.get("/v1.0/nowhere")
    assert err.status_code == 400
    error = err.json()["error"]
    assert error["message"] == "Resource not found for the segment 'nowhere'."
    assert error["innerError"]["request-id"] == err.headers["request-id"]
    assert error["innerError"]["client-request-id"] == err.headers["client-request-id"]
    assert error["innerError"]["date"]


@pytest.mark.asyncio
async def test_unauthenticated(sim: Simulator, make_client: Any) -> None:
    none = await make_client(token=None).get(DEVICES)
    assert none.status_code == 401
    assert none.json()["error"] == {
        "code": "InvalidAuthenticationToken",
        "message": "Access token is empty.",
        "innerError": none.json()["error"]["innerError"],
    }
    assert "WWW-Authenticate" in none.headers
    garbage = await make_client(token="not-a-token").get(DEVICES)
    assert garbage.status_code == 401
    client = make_client()
    assert (await client.get(DEVICES)).status_code == 200
    sim.expire_tokens()
    expired = await client.get(DEVICES)
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "Lifetime validation failed, the token is expired."
    short = make_client(token=sim.issue_token(ttl=0.1))
    await asyncio.sleep(0.15)
    assert (await short.get(DEVICES)).status_code == 401


@pytest.mark.asyncio
async def test_revoked_permissions_give_403(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.state.app_permissions.discard("DeviceManagementRBAC.Read.All")
    resp = await graph.get("/beta/deviceManagement/roleAssignments")
    assert resp.status_code == 403
    error = resp.json()["error"]
    assert error["code"] == "Forbidden"
    message = json.loads(error["message"])["Message"]  # Intune's JSON-in-a-string envelope
    assert message.startswith("Application is not authorized to perform this operation.")
    assert "DeviceManagementRBAC.Read.All" in message
    sim.control.intune_error_envelope = False
    plain = (await graph.get("/beta/deviceManagement/roleDefinitions")).json()["error"]["message"]
    assert plain.startswith("Application is not authorized") and "DeviceManagementRBAC.Read.All" in plain
    sim.state.revoke({"DeviceManagementManagedDevices.PrivilegedOperations.All"})
    [device] = chrome_ids(sim, 1)
    resp = await graph.post(f"{DEVICES}/{device}/deprovision", json={"deprovisionReason": "retiring_device"})
    assert resp.status_code == 403
    assert "PrivilegedOperations.All" in resp.json()["error"]["message"]
    sim.state.grant({"DeviceManagementManagedDevices.ReadWrite.All"})  # the alternative gate
    resp = await graph.post(f"{DEVICES}/{device}/deprovision", json={"deprovisionReason": "retiring_device"})
    assert resp.status_code == 204
    sim.state.revoke({"Directory.Read.All", "GroupMember.Read.All"})
    resp = await graph.post(f"/v1.0/users/{ALEX}/checkMemberGroups", json={"groupIds": []})
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "Authorization_RequestDenied"


@pytest.mark.asyncio
async def test_revoke_permissions_constructor_option() -> None:
    async with running_simulator(revoke_permissions={"DeviceManagementRBAC.Read.All"}) as sim:
        assert "DeviceManagementRBAC.Read.All" not in sim.state.app_permissions
        async with httpx.AsyncClient(
            verify=sim.ssl_context(), headers={"Authorization": f"Bearer {sim.issue_token()}"}
        ) as c:
            assert (await c.get(f"{sim.base_url}/beta/deviceManagement/roleScopeTags")).status_code == 403
            assert (await c.get(f"{sim.base_url}{DEVICES}")).status_code == 200


@pytest.mark.asyncio
async def test_faults_are_queued_and_consumed_in_order(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.add_fault(method="GET", path=r"managedDevices", status=503, count=2)
    sim.control.add_fault(method="GET", path=r"managedDevices", status=429, retry_after=1.5)
    statuses = [(await graph.get(DEVICES, params={"$top": "1"})).status_code for _ in range(4)]
    assert statuses == [503, 503, 429, 200]
    throttled = next(c for c in sim.calls if c.status == 429)
    assert throttled.fault
    sim.control.add_fault(method="GET", path=r"managedDevices", status=429, retry_after=2.128)
    resp = await graph.get(DEVICES)
    assert resp.headers["Retry-After"] == "2.128"
    error = resp.json()["error"]
    assert error["code"] == "TooManyRequests" and error["innerError"]["status"] == "429"
    sim.control.add_fault(method="POST", path=r"/deprovision$", status=500)
    assert (await graph.get(DEVICES, params={"$top": "1"})).status_code == 200  # method and path must match


@pytest.mark.asyncio
async def test_drop_before_and_after_apply(sim: Simulator, graph: httpx.AsyncClient) -> None:
    first, second = chrome_ids(sim, 2)
    body = {"deprovisionReason": "same_model_replacement"}
    sim.control.add_fault(method="POST", path=r"/deprovision$", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await graph.post(f"{DEVICES}/{first}/deprovision", json=body)
    assert sim.deprovision_posts() == []
    assert sim.state.devices[first]["deviceActionResults"] == []
    sim.control.add_fault(method="POST", path=r"/deprovision$", drop=True, after_apply=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await graph.post(f"{DEVICES}/{second}/deprovision", json=body)
    assert [c.path.split("/")[-2] for c in sim.deprovision_posts()] == [second]
    assert sim.state.devices[second]["deviceActionResults"][0]["actionState"] == "pending"
    retry = await graph.post(f"{DEVICES}/{second}/deprovision", json=body)
    assert retry.status_code == 400  # the client retried an action that already happened
    sim.control.add_fault(method="POST", path=r"/deprovision$", status=504, after_apply=True)
    resp = await graph.post(f"{DEVICES}/{first}/deprovision", json=body)
    assert resp.status_code == 504
    assert len(sim.deprovision_posts(first)) == 1


@pytest.mark.asyncio
async def test_delay_fault_and_latency(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.add_fault(method="GET", path=r"/users/", delay=0.3)
    start = time.monotonic()
    assert (await graph.get(f"/v1.0/users/{ALEX}")).status_code == 200
    assert time.monotonic() - start >= 0.3
    sim.control.latency = 0.2
    start = time.monotonic()
    await graph.get(f"/v1.0/users/{ALEX}")
    assert time.monotonic() - start >= 0.2
    batch = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{ALEX}"} for i in range(5)]}
    start = time.monotonic()
    await graph.post("/v1.0/$batch", json=batch)
    assert 0.2 <= time.monotonic() - start < 0.9  # latency counted once for the whole batch


@pytest.mark.asyncio
async def test_write_limit(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.write_limit = (2, 0.5)
    ids = chrome_ids(sim, 4)
    body = {"deprovisionReason": "retiring_device"}
    statuses = [(await graph.post(f"{DEVICES}/{i}/deprovision", json=body)).status_code for i in ids[:2]]
    throttled = await graph.post(f"{DEVICES}/{ids[2]}/deprovision", json=body)
    assert statuses == [204, 204] and throttled.status_code == 429
    wait = float(throttled.headers["Retry-After"])
    assert 0 < wait <= 0.5
    assert (await graph.get(DEVICES, params={"$top": "1"})).status_code == 200  # reads are not limited
    await asyncio.sleep(wait + 0.05)
    assert (await graph.post(f"{DEVICES}/{ids[2]}/deprovision", json=body)).status_code == 204
    assert len(sim.deprovision_posts()) == 3


@pytest.mark.asyncio
async def test_batch(sim: Simulator, graph: httpx.AsyncClient) -> None:
    sim.control.add_fault(method="POST", path=r"/users/[^/]+/checkMemberGroups$", status=429, retry_after=3)
    batch: dict[str, list[dict[str, Any]]] = {
        "requests": [
            {"id": "me", "method": "GET", "url": f"/users/{ALEX}?$select=id,displayName"},
            {
                "id": "groups",
                "method": "POST",
                "url": f"users/{ALEX}/checkMemberGroups",
                "headers": {"Content-Type": "application/json"},
                "body": {"groupIds": []},
            },
            {"id": "after", "method": "GET", "url": f"/users/{ALEX}", "dependsOn": ["groups"]},
            {"id": "nope", "method": "GET", "url": "/deviceManagement/managedDevices/not-a-guid"},
            {
                "id": "nobody",
                "method": "POST",
                "url": f"/users/{ALEX}/getMemberGroups",
                "body": {"securityEnabledOnly": True},
            },
        ]
    }
    resp = await graph.post("/v1.0/$batch", json=batch)
    assert resp.status_code == 200
    out = {r["id"]: r for r in resp.json()["responses"]}
    assert [r["id"] for r in resp.json()["responses"]] != [r["id"] for r in batch["requests"]]  # any order
    assert out["me"]["status"] == 200 and set(out["me"]["body"]) == {"@odata.context", "id", "displayName"}
    assert out["groups"]["status"] == 429 and out["groups"]["headers"]["Retry-After"] == "3"
    assert out["after"]["status"] == 424
    assert out["nope"]["status"] == 400
    assert out["nobody"]["status"] == 400  # body without Content-Type
    top = [c for c in sim.calls if c.batch_id is None]
    subs = [c for c in sim.calls if c.batch_id is not None]
    assert [c.path for c in top] == ["/v1.0/$batch"]
    assert {c.path for c in subs} == {
        f"/v1.0/users/{ALEX}",
        f"/v1.0/users/{ALEX}/checkMemberGroups",
        "/v1.0/deviceManagement/managedDevices/not-a-guid",
    }
    assert sim.round_trips() == top
    beta = await graph.post(
        "/beta/$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/deviceManagement/roleScopeTags"}]}
    )
    assert beta.json()["responses"][0]["status"] == 200
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": f"/users/{ALEX}"} for i in range(21)]}
    assert (await graph.post("/v1.0/$batch", json=too_many)).status_code == 400
    assert (await graph.post("/v1.0/$batch", json={"requests": "x"})).status_code == 400


@pytest.mark.asyncio
async def test_http_control_api(sim: Simulator, graph: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url, verify=sim.ssl_context()) as control:
        resp = await control.post(
            "/_sim/control",
            json={
                "latency": 0.01,
                "ignore_filters": True,
                "write_limit": [5, 10],
                "faults": [{"method": "GET", "path": "managedDevices", "status": 503, "count": 1}],
            },
        )
        assert resp.status_code == 200
        assert sim.control.latency == 0.01 and sim.control.ignore_filters and sim.control.write_limit == (5, 10.0)
        assert (await graph.get(DEVICES)).status_code == 503
        everything = (await graph.get(DEVICES, params={"$filter": "serialNumber eq 'x'"})).json()["value"]
        assert len(everything) == 5  # filter ignored, first page
        calls = (await control.get("/_sim/calls")).json()
        assert [c["status"] for c in calls] == [503, 200]
        assert (await control.get("/_sim/calls", params={"since": "1"})).json() == calls[1:]
        stats = (await control.get("/_sim/stats")).json()
        assert stats["by_path"] == {f"GET {DEVICES}": 2} and stats["round_trips"] == 2
        assert stats["token_requests"] == 0
        resp = await control.post("/_sim/control", json={"reset": True, "revoke_permissions": ["User.Read.All"]})
        assert resp.json()["latency"] == 0 and not sim.control.ignore_filters and sim.calls == []
        assert "User.Read.All" not in resp.json()["app_permissions"]
        assert (await control.post("/_sim/control", json={"faults": [{"status": 418}]})).status_code == 400
        assert (await control.get("/_sim/nothing")).status_code == 404


def test_cli_runs_and_writes_an_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "sim.env"
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-m", "simulator", "--port", "0", "--page-size", "7", "--latency-ms", "5"]
    with subprocess.Popen(
        [*argv, "--env-file", str(env_file)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                lines.append(line)
                if line.startswith("ready ") or not line:
                    break
            assert lines[-1].startswith("ready https://127.0.0.1:"), lines
            values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
            assert set(values) == {
                "AZURE_TENANT_ID",
                "AZURE_CLIENT_ID",
                "AZURE_CLIENT_SECRET",
                "AZURE_AUTHORITY_HOST",
                "GRAPH_BASE_URL",
                "BOTFRAMEWORK_OPENID_METADATA",
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
            }
            assert values["AZURE_TENANT_ID"] == "00000000-0000-0000-0000-0000000000001"
            assert lines[-1].split()[1] == values["GRAPH_BASE_URL"]
            with httpx.Client(verify=_ctx(values["SSL_CERT_FILE"])) as client:
                resp = client.get(f"{values['GRAPH_BASE_URL']}/_sim/control")
            assert resp.json()["page_size"] == 7 and resp.json()["latency"] == 0.005
            ca = values["SSL_CERT_FILE"]
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert not Path(ca).exists()  # the throw-away CA is removed on exit


def _ctx(cafile: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=cafile)
