"""The simulated Bot Framework: OpenID metadata, signing keys with endorsements, channel tokens."""

from __future__ import annotations

import json

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from simulator import Simulator


async def fetch(sim: Simulator, url: str) -> httpx.Response:
    async with httpx.AsyncClient(verify=sim.ssl_context(), timeout=10) as client:
        return await client.get(url)


async def test_metadata_points_at_keys_that_verify_channel_tokens(sim: Simulator) -> None:
    assert sim.env()["BOTFRAMEWORK_OPENID_METADATA"] == sim.botframework_metadata_url
    metadata = (await fetch(sim, sim.botframework_metadata_url)).json()
    assert metadata["issuer"] == "https://api.botframework.com"
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = (await fetch(sim, metadata["jwks_uri"])).json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig"
    assert "msteams" in keys[0]["endorsements"]
    token = sim.channel_token(sim.client_id, "https://smba.trafficmanager.net/emea/")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["kid"] == keys[0]["kid"]
    public = RSAAlgorithm.from_jwk(json.dumps(keys[0]))
    assert isinstance(public, RSAPublicKey)  # a JWKS publishes public keys only
    claims = jwt.decode(token, public, algorithms=["RS256"], audience=sim.client_id)
    assert claims["iss"] == "https://api.botframework.com"
    assert claims["serviceurl"] == "https://smba.trafficmanager.net/emea/"
    assert claims["exp"] > claims["nbf"]
    assert sim.botframework.metadata_requests == 1 and sim.botframework.jwks_requests == 1


async def test_unpublished_keys_and_jwks_faults(sim: Simulator) -> None:
    hidden = sim.botframework.add_key(published=False)
    extra = sim.botframework.add_key(("webchat",))
    keys = (await fetch(sim, f"{sim.base_url}/botframework/v1/.well-known/keys")).json()["keys"]
    kids = {k["kid"] for k in keys}
    assert extra in kids and hidden not in kids
    assert next(k for k in keys if k["kid"] == extra)["endorsements"] == ["webchat"]
    sim.botframework.jwks_status = 503
    assert (await fetch(sim, f"{sim.base_url}/botframework/v1/.well-known/keys")).status_code == 503


def test_token_variants() -> None:
    sim = Simulator()
    no_exp = jwt.decode(sim.channel_token("app", None, exp=False), options={"verify_signature": False})
    assert "exp" not in no_exp and "serviceurl" not in no_exp
    custom = jwt.decode(
        sim.channel_token("app", "https://x/", issuer="https://evil", extra={"tid": "t"}),
        options={"verify_signature": False},
    )
    assert custom["iss"] == "https://evil" and custom["tid"] == "t"
