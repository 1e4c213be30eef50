"""Entra sign-in: MSAL 1.39 against the simulator over real TLS."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import httpx
import msal
import pytest
import requests

from simulator import Simulator, load_seed
from simulator.testing import msal_app, running_simulator

GRAPH_SCOPE = ["https://graph.microsoft.com/.default"]


def _session(sim: Simulator) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.verify = sim.ca_path
    return session


@pytest.mark.asyncio
async def test_msal_gets_and_caches_a_token(sim: Simulator) -> None:
    app = await asyncio.to_thread(msal_app, sim)
    first = await asyncio.to_thread(app.acquire_token_for_client, scopes=GRAPH_SCOPE)
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 3599
    second = await asyncio.to_thread(app.acquire_token_for_client, scopes=GRAPH_SCOPE)
    assert second["access_token"] == first["access_token"]
    assert second["token_source"] == "cache"
    assert len(sim.token_requests) == 1
    request = sim.token_requests[0]
    assert (request.client_id, request.scope, request.grant_type, request.status) == (
        sim.client_id,
        "https://graph.microsoft.com/.default",
        "client_credentials",
        200,
    )
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sim.ca_path)) as client:
        resp = await client.get(
            f"{sim.base_url}/v1.0/users/{sim.state.users['00000000-0000-0000-0000-0000000000020']['id']}",
            headers={"Authorization": f"Bearer {first['access_token']}"},
        )
    assert resp.status_code == 200
    assert resp.json()["displayName"] == "Alex Wilber"


@pytest.mark.asyncio
async def test_discovery_document(sim: Simulator) -> None:
    async with httpx.AsyncClient(verify=sim.ssl_context()) as client:
        for path in ("/v2.0/.well-known/openid-configuration", "/.well-known/openid-configuration"):
            doc = (await client.get(f"{sim.authority}{path}")).json()
            assert doc["token_endpoint"] == f"{sim.authority}/oauth2/v2.0/token"
            assert doc["issuer"] == f"{sim.authority}/v2.0"
            assert doc["authorization_endpoint"].startswith(sim.authority)
        resp = await client.get(f"{sim.base_url}/not-a-tenant/v2.0/.well-known/openid-configuration")
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_tenant"


@pytest.mark.asyncio
async def test_wrong_secret_unknown_client_and_wrong_tenant(sim: Simulator) -> None:
    bad = await asyncio.to_thread(msal_app, sim, client_credential="wrong")
    result = await asyncio.to_thread(bad.acquire_token_for_client, scopes=GRAPH_SCOPE)
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"]

    def unknown_client() -> dict[str, object]:
        app = msal.ConfidentialClientApplication(
            "99999999-9999-9999-9999-999999999999",
            client_credential=sim.client_secret,
            authority=sim.authority,
            instance_discovery=False,
            http_client=_session(sim),
        )
        result: dict[str, object] = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
        return result

    result = await asyncio.to_thread(unknown_client)
    assert result["error"] == "unauthorized_client"
    assert "AADSTS700016" in str(result["error_description"])

    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        await asyncio.to_thread(msal_app, sim, authority=f"{sim.base_url}/some-other-tenant")

    async with httpx.AsyncClient(verify=sim.ssl_context()) as client:
        form = {
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "scope": "https://graph.microsoft.com/.default",
        }
        resp = await client.post(f"{sim.base_url}/wrong-tenant/oauth2/v2.0/token", data=form)
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_request"
        assert "AADSTS90002" in resp.json()["error_description"]
        resp = await client.post(f"{sim.authority}/oauth2/v2.0/token", data={**form, "scope": "User.Read"})
        assert resp.status_code == 400
        assert resp.json()["error"] == "invalid_scope"
        assert resp.headers["x-ms-request-id"]
        other = await client.post(f"{sim.authority}/oauth2/v2.0/token", data={**form, "scope": "api://other/.default"})
        assert other.status_code == 200
        graph = await client.get(
            f"{sim.base_url}/v1.0/users/AlexW@contoso.edu",
            headers={"Authorization": f"Bearer {other.json()['access_token']}"},
        )
        assert graph.status_code == 401  # a token for another resource does not open Graph
    assert [r.status for r in sim.token_requests] == [401, 400, 400, 400, 200]


@pytest.mark.asyncio
async def test_token_audience_is_remembered(sim: Simulator) -> None:
    app = await asyncio.to_thread(msal_app, sim)
    bot = await asyncio.to_thread(app.acquire_token_for_client, scopes=["https://api.botframework.com/.default"])
    assert "access_token" in bot
    async with httpx.AsyncClient(verify=sim.ssl_context()) as client:
        resp = await client.get(
            f"{sim.base_url}/v1.0/users/AlexW@contoso.edu",
            headers={"Authorization": f"Bearer {bot['access_token']}"},
        )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "audience" in resp.json()["error"]["message"]


@pytest.mark.asyncio
async def test_token_ttl_and_expiry(sim: Simulator) -> None:
    sim.control.token_ttl = 120
    app = await asyncio.to_thread(msal_app, sim)
    result = await asyncio.to_thread(app.acquire_token_for_client, scopes=GRAPH_SCOPE)
    assert result["expires_in"] == 120
    sim.expire_tokens()
    async with httpx.AsyncClient(verify=sim.ssl_context()) as client:
        resp = await client.get(
            f"{sim.base_url}/v1.0/users/AlexW@contoso.edu",
            headers={"Authorization": f"Bearer {result['access_token']}"},
        )
    assert resp.status_code == 401
    assert resp.json()["error"]["message"] == "Lifetime validation failed, the token is expired."


def _jwt(claims: dict[str, str]) -> str:
    def enc(part: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")

    return f"{enc({'alg': 'RS256', 'typ': 'JWT'})}.{enc(claims)}.c2ln"


@pytest.mark.asyncio
async def test_client_assertion_when_the_seed_lists_a_certificate() -> None:
    seed = load_seed(None)
    seed["app"]["certificate_thumbprint"] = "A1B2C3D4E5F6"
    async with running_simulator(seed=seed) as sim, httpx.AsyncClient(verify=sim.ssl_context()) as client:
        form = {
            "grant_type": "client_credentials",
            "client_id": sim.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "scope": "https://graph.microsoft.com/.default",
        }
        good = _jwt({"iss": sim.client_id, "sub": sim.client_id, "aud": "x"})
        resp = await client.post(f"{sim.authority}/oauth2/v2.0/token", data={**form, "client_assertion": good})
        assert resp.status_code == 200, resp.text
        other = _jwt({"iss": "someone-else", "sub": "someone-else"})
        resp = await client.post(f"{sim.authority}/oauth2/v2.0/token", data={**form, "client_assertion": other})
        assert resp.status_code == 401
        assert resp.json()["error"] == "invalid_client"


@pytest.mark.asyncio
async def test_blocking_msal_on_the_loop_with_a_threaded_simulator() -> None:
    """MSAL called synchronously on the test's own loop works when the simulator runs in a thread."""
    async with running_simulator(in_thread=True) as sim:
        app = msal_app(sim)  # blocking discovery right on the event loop
        result = app.acquire_token_for_client(scopes=GRAPH_SCOPE)
        assert "access_token" in result
        assert len(sim.token_requests) == 1
