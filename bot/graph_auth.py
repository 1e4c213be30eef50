"""Graph authentication: app-only tokens from msal, and the ``httpx.Auth`` that puts them on requests.

* :class:`MsalTokenSource` — client secret, certificate or managed identity, chosen by which settings are
  present. msal is blocking, so every msal call runs in a worker thread; the token is cached here and reused
  until five minutes before it expires, so a process asks Entra about once an hour.
* :class:`BearerAuth` — the httpx auth flow: the cached token on every request, and after a 401 one fresh
  token and one retry (concurrent 401s share one refresh).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bot.errors import GraphAuthError
from bot.logs import safe
from bot.settings import Settings

log = logging.getLogger("bot.graph")

GRAPH_SCOPE_SUFFIX = "/.default"
MICROSOFT_AUTHORITY_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
)
_REFRESH_MARGIN = 300.0  # seconds before expiry when a token is renewed


class TokenSource(Protocol):
    async def token(self, *, force_refresh: bool = False) -> str: ...


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer …`` from a :class:`TokenSource`; a 401 gets one fresh token and one retry.

    The retry is the same request (same ``client-request-id``): a 401 means Graph did not process it, so
    even the deprovision POST may be sent again. A second 401 is returned to the caller as it is.
    """

    def __init__(self, tokens: TokenSource) -> None:
        self._tokens = tokens

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        sent = await self._tokens.token()
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code != 401:
            return
        current = await self._tokens.token()
        # Refresh only if nobody has replaced the rejected token yet (concurrent 401s share one refresh).
        fresh = current if current != sent else await self._tokens.token(force_refresh=True)
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request


@dataclass
class TokenStats:
    requests: int = 0
    failures: int = 0


class MsalTokenSource:
    """App-only tokens for one resource, from msal, cached in memory, never fetched on the event loop."""

    def __init__(self, settings: Settings, resource: str) -> None:
        self._settings = settings
        self._scope = resource.rstrip("/") + GRAPH_SCOPE_SUFFIX
        self._resource = resource
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._app: Any = None
        self.stats = TokenStats()

    def _build(self) -> Any:
        import msal
        import requests

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would silently win over verify (graph-intune.md §1)
        session.verify = self._settings.ca_file or True
        s = self._settings
        if s.use_managed_identity:
            identity: Any = (
                msal.UserAssignedManagedIdentity(client_id=s.client_id)
                if s.client_id
                else msal.SystemAssignedManagedIdentity()
            )
            return msal.ManagedIdentityClient(identity, http_client=session)
        credential: Any
        credential = s.client_secret or _certificate_credential(s.client_certificate_path or "")
        host = s.authority_host.split(":")[0].lower()
        return msal.ConfidentialClientApplication(
            s.client_id,
            client_credential=credential,
            authority=s.authority,
            instance_discovery=host in MICROSOFT_AUTHORITY_HOSTS,
            http_client=session,
            token_cache=msal.TokenCache(),
        )

    def _acquire(self) -> dict[str, Any]:
        if self._app is None:
            self._app = self._build()
        if self._settings.use_managed_identity:
            result: dict[str, Any] = self._app.acquire_token_for_client(resource=self._resource)
        else:
            result = self._app.acquire_token_for_client(scopes=[self._scope])
        return result

    def _fresh(self) -> str | None:
        if self._token and time.monotonic() < self._refresh_at:
            return self._token
        return None

    async def token(self, *, force_refresh: bool = False) -> str:
        if not force_refresh and (cached := self._fresh()):
            return cached
        seen = self._token
        async with self._lock:
            if not force_refresh and (cached := self._fresh()):
                return cached
            if force_refresh and self._token is not None and self._token != seen:
                # Another caller refreshed while this one waited for the lock: that token is fresh already.
                return self._token
            if force_refresh and self._app is not None and not self._settings.use_managed_identity:
                # Drop msal's own cached copy so the next call really goes to Entra.
                self._app = None
            return self._store(await self._request())

    async def _request(self) -> dict[str, Any]:
        self.stats.requests += 1
        try:
            result = await asyncio.to_thread(self._acquire)
        except Exception as exc:
            self.stats.failures += 1
            log.warning("token request failed", extra={"error": safe(type(exc).__name__)})
            raise GraphAuthError(0, "token_request_failed", type(exc).__name__) from exc
        if "access_token" not in result:
            self.stats.failures += 1
            code = str(result.get("error", "unknown"))
            desc = safe(str(result.get("error_description", "")).split("\n")[0], 300)
            log.warning("token request refused", extra={"error": code, "detail": desc})
            raise GraphAuthError(401, code, desc)
        return result

    def _store(self, result: dict[str, Any]) -> str:
        token = str(result["access_token"])
        lifetime = float(result.get("expires_in", 3599))
        # Renew five minutes before expiry, or half-way through a token that lives less than ten minutes.
        self._token, self._refresh_at = token, time.monotonic() + lifetime - min(_REFRESH_MARGIN, lifetime / 2)
        log.info("token acquired", extra={"scope": self._scope, "source": result.get("token_source", "")})
        return token


def _certificate_credential(path: str) -> dict[str, str]:
    """A PEM file holding the private key and the certificate → msal's certificate credential."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    pem = open(path, encoding="ascii").read()  # noqa: SIM115 - read once at start-up
    start = pem.index("-----BEGIN CERTIFICATE-----")
    cert_pem = pem[start : pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return {
        "private_key": pem,
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - Entra's x5t is SHA-1 by definition
        "public_certificate": cert_pem,
    }
