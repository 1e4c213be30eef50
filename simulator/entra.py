"""Entra ID (login.microsoftonline.com) stand-in: OIDC discovery and client-credentials tokens."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .control import TokenRequest
from .state import BOTFRAMEWORK_RESOURCE, GRAPH_APP_ID, GRAPH_RESOURCE

if TYPE_CHECKING:
    from .server import Simulator

AUDIENCES = {
    GRAPH_RESOURCE: "graph",
    GRAPH_APP_ID: "graph",
    "https://graph.microsoft.com/": "graph",
    BOTFRAMEWORK_RESOURCE: "botframework",
}
RESERVED_SCOPES = {"openid", "profile", "offline_access"}
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class IssuedToken:
    client_id: str
    audience: str
    scope: str
    expires_at: float


class EntraApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.tokens: dict[str, IssuedToken] = {}

    def _tenant_ok(self, tenant: str) -> bool:
        state = self.sim.state
        return tenant.casefold() in {state.tenant_id.casefold(), state.domain.casefold()}

    def openid_configuration(self, host: str, tenant: str) -> tuple[int, dict[str, Any]]:
        if not self._tenant_ok(tenant):
            return _aad_error(400, "invalid_tenant", 90002, _tenant_not_found(tenant))
        tid = self.sim.state.tenant_id
        base = f"https://{host}/{tid}"
        return 200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"https://{host}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"https://{host}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "tid", "oid"],
            "tenant_region_scope": "NA",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": host,
        }

    def token(self, tenant: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        status, body = self._token(tenant, form)
        self.sim.control.token_requests.append(
            TokenRequest(
                client_id=form.get("client_id", ""),
                scope=form.get("scope", ""),
                grant_type=form.get("grant_type", ""),
                tenant=tenant,
                status=status,
            )
        )
        return status, body

    def _token(self, tenant: str, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        state = self.sim.state
        if not self._tenant_ok(tenant):
            return _aad_error(400, "invalid_request", 90002, _tenant_not_found(tenant))
        grant = form.get("grant_type", "")
        if not grant:
            return _aad_error(400, "invalid_request", 900144, _missing("grant_type"))
        if grant != "client_credentials":
            return _aad_error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant}'.",
            )
        client_id = form.get("client_id", "")
        if not client_id:
            return _aad_error(400, "invalid_request", 900144, _missing("client_id"))
        if client_id.casefold() != state.client_id.casefold():
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{state.tenant_name}'. This can happen if the application has not been installed "
                "by the administrator of the tenant or consented to by any user in the tenant. "
                "You may have sent your authentication request to the wrong tenant.",
            )
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if secret is None and assertion is None:
            return _aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        if assertion is not None:
            if form.get("client_assertion_type") != JWT_BEARER:
                return _aad_error(400, "invalid_request", 900144, _missing("client_assertion_type"))
            if not state.certificate_thumbprint or not _assertion_ok(assertion, state.client_id):
                return _aad_error(
                    401,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation.",
                )
        elif not secrets.compare_digest(str(secret), state.client_secret):
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{state.client_id}'.",
            )
        scope = form.get("scope", "")
        resources = [s for s in scope.split() if s not in RESERVED_SCOPES]
        if not resources:
            return _aad_error(400, "invalid_request", 900144, _missing("scope"))
        if len(resources) != 1 or not resources[0].endswith("/.default"):
            return _aad_error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )
        resource = resources[0][: -len("/.default")]
        if not resource:
            return _aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {scope} is not valid.")
        # Any resource is accepted; only Graph-audience tokens open the Graph routes.
        audience = AUDIENCES.get(resource, resource)
        ttl = int(self.sim.control.token_ttl)
        token = "sim." + secrets.token_urlsafe(32)
        self.tokens[token] = IssuedToken(
            client_id=state.client_id,
            audience=audience,
            scope=resources[0],
            expires_at=time.time() + ttl,
        )
        return 200, {
            "token_type": "Bearer",
            "expires_in": ttl,
            "ext_expires_in": ttl,
            "access_token": token,
        }

    def issue(self, audience: str = "graph", ttl: float | None = None) -> str:
        """Mint a token directly (tests that do not care about MSAL)."""
        token = "sim." + secrets.token_urlsafe(32)
        life = self.sim.control.token_ttl if ttl is None else ttl
        self.tokens[token] = IssuedToken(
            self.sim.state.client_id, audience, f"{GRAPH_RESOURCE}/.default", time.time() + life
        )
        return token

    def expire_all(self) -> None:
        for token in self.tokens.values():
            token.expires_at = min(token.expires_at, time.time() - 1)


def _missing(name: str) -> str:
    return f"The request body must contain the following parameter: '{name}'."


def _tenant_not_found(tenant: str) -> str:
    return (
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant."
    )


def _aad_error(status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


def _assertion_ok(assertion: str, client_id: str) -> bool:
    """Well-formed JWT whose ``iss`` and ``sub`` are the client id (the signature is not checked)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return False
    return bool(claims.get("iss") == client_id and claims.get("sub") == client_id)
