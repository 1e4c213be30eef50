"""The one seam to Microsoft Graph: tokens (msal) and a small, typed, resilient HTTP client (httpx).

* Tokens: client secret, certificate or managed identity — chosen by which settings are present. msal is
  blocking, so every msal call runs in a worker thread; the token is cached here and reused until five
  minutes before it expires, so a process asks Entra about once an hour. A 401 from Graph forces one fresh
  token and one retry.
* Retries: 429 and 503 honour ``Retry-After`` (capped, total wait bounded). Other 5xx and connection errors
  back off exponentially with full jitter — for reads only. A write (the deprovision POST) is retried only
  when Graph said it did not process it (429, or 503 with ``Retry-After``) or the connection was never made;
  after a timeout or a dropped connection its outcome is unknown and :class:`~bot.errors.OutcomeUnknown` is
  raised — the request is never re-sent blindly.
* Errors are typed (:mod:`bot.errors`) and carry status, Graph error code, message and ``request-id``.
* One log line per outbound call; no tokens, no query values beyond a capped, sanitised path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from bot.errors import GraphAuthError, GraphError, GraphThrottled, GraphUnavailable, OutcomeUnknown
from bot.logs import safe
from bot.settings import Settings

log = logging.getLogger("bot.graph")

GRAPH_SCOPE_SUFFIX = "/.default"
_MICROSOFT_AUTHORITY_HOSTS = (
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.de",
)
_REFRESH_MARGIN = 300.0  # seconds before expiry when a token is renewed
BATCH_LIMIT = 20
_ID_IN_PATH = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12,14}")


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Trust the system store, or the CA bundle named by ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()


class TokenSource(Protocol):
    async def token(self, *, force_refresh: bool = False) -> str: ...


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
            instance_discovery=host in _MICROSOFT_AUTHORITY_HOSTS,
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

    async def token(self, *, force_refresh: bool = False) -> str:
        now = time.monotonic()
        if not force_refresh and self._token and now < self._refresh_at:
            return self._token
        seen = self._token
        async with self._lock:
            now = time.monotonic()
            if not force_refresh and self._token and now < self._refresh_at:
                return self._token
            if force_refresh and self._token is not None and self._token != seen:
                # Another caller refreshed while this one waited for the lock: that token is fresh already.
                return self._token
            if force_refresh and self._app is not None and not self._settings.use_managed_identity:
                # Drop msal's own cached copy so the next call really goes to Entra.
                self._app = None
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
            self._token = str(result["access_token"])
            lifetime = float(result.get("expires_in", 3599))
            # Renew five minutes before expiry, or half-way through a token that lives less than ten minutes.
            self._refresh_at = time.monotonic() + lifetime - min(_REFRESH_MARGIN, lifetime / 2)
            log.info("token acquired", extra={"scope": self._scope, "source": result.get("token_source", "")})
            return self._token


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


@dataclass
class GraphResponse:
    status: int
    body: Any
    request_id: str | None
    client_request_id: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class GraphStats:
    """Counters for tests and benchmarks: top-level HTTP round trips to Graph."""

    calls: int = 0
    by_path: dict[str, int] = field(default_factory=dict)

    def record(self, path: str) -> None:
        self.calls += 1
        key = _ID_IN_PATH.sub("{id}", path.split("?")[0])  # bounded: one key per route, not per device
        self.by_path[key] = self.by_path.get(key, 0) + 1


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_from(response: httpx.Response) -> tuple[str, str]:
    code, message = "UnknownError", response.reason_phrase or ""
    try:
        body = response.json()
    except ValueError:
        return code, safe(response.text, 300)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        # Intune often wraps a JSON document in the message string (graph-intune.md §11).
        try:
            inner = json.loads(message)
            if isinstance(inner, dict) and inner.get("Message"):
                message = str(inner["Message"])
        except ValueError:
            pass
    return code, safe(message, 500)


class GraphClient:
    """Typed async access to Microsoft Graph over one shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenSource,
        http: httpx.AsyncClient,
        *,
        sleep: Any = asyncio.sleep,
        max_attempts: int = 4,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._http = http
        self._sleep = sleep
        self._max_attempts = max_attempts
        self.stats = GraphStats()

    async def aclose(self) -> None:
        """Close the shared HTTP client (process shutdown)."""
        await self._http.aclose()

    @staticmethod
    def build_http(settings: Settings) -> httpx.AsyncClient:
        timeout = httpx.Timeout(connect=5.0, read=settings.graph_timeout, write=10.0, pool=5.0)
        return httpx.AsyncClient(
            base_url=settings.graph_base_url,
            timeout=timeout,
            verify=ssl_context(settings.ca_file),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=60),
            headers={"Accept": "application/json", "User-Agent": "chromeos-deprovision-bot/0.1"},
            trust_env=False,
        )

    # -- public helpers ---------------------------------------------------------------------------------

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        response = await self._request("GET", path, params=params, headers=headers, idempotent=True)
        return response.body

    async def post(self, path: str, body: Any, *, idempotent: bool = True) -> GraphResponse:
        """POST for reads that happen to use POST (checkMemberGroups, $batch): safe to retry."""
        return await self._request("POST", path, json_body=body, idempotent=idempotent)

    async def list_all(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        max_items: int = 5000,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Follow ``@odata.nextLink`` verbatim; return (items, truncated)."""
        items: list[dict[str, Any]] = []
        body = await self.get(path, params, headers=headers)
        while True:
            items.extend(body.get("value", []))
            next_link = body.get("@odata.nextLink")
            if not next_link:
                return items, False
            if len(items) >= max_items:
                return items[:max_items], True
            if not self._same_origin(str(next_link)):
                # Following it would hand the bearer token to another host.
                raise GraphError(0, "UnexpectedNextLink", safe(str(next_link).split("?")[0], 160))
            body = (await self._request("GET", next_link, idempotent=True, headers=headers)).body

    def _same_origin(self, url: str) -> bool:
        target = httpx.URL(url)
        if not target.is_absolute_url:
            return True
        base = self._http.base_url
        return (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port)

    async def batch(self, requests: Sequence[Mapping[str, Any]], *, version: str = "v1.0") -> dict[str, Any]:
        """Send up to 20 sub-requests in one round trip; return ``{id: {status, body, headers}}``.

        Throttled sub-requests (429 inside the batch) are retried once, in a second batch, after their
        ``Retry-After``; other failures are returned for the caller to turn into errors.
        """
        if not requests:
            return {}
        if len(requests) > BATCH_LIMIT:
            raise ValueError("a Graph $batch holds at most 20 requests")
        pending = list(requests)
        results: dict[str, Any] = {}
        waited = 0.0
        for attempt in range(2):
            response = await self.post(f"/{version}/$batch", {"requests": pending})
            retry: list[Mapping[str, Any]] = []
            delay = 0.0
            for item in response.body.get("responses", []):
                if item.get("status") == 429:
                    headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
                    delay = max(delay, _parse_retry_after(headers.get("retry-after")) or 1.0)
                    retry.extend(r for r in pending if str(r["id"]) == str(item.get("id")))
                results[str(item.get("id"))] = item
            if not retry or attempt == 1:
                return results
            delay = min(delay, self._settings.graph_retry_after_cap)
            if waited + delay > self._settings.graph_max_retry_wait:
                return results
            waited += delay
            await self._sleep(delay)
            pending = retry
        return results

    async def deprovision(self, device_id: str, reason: str, *, client_request_id: str) -> GraphResponse:
        """``POST /beta/deviceManagement/managedDevices/{id}/deprovision``; 204 means accepted.

        Raises :class:`OutcomeUnknown` when the request may have reached Graph but no answer came back.
        """
        path = f"/beta/deviceManagement/managedDevices/{device_id}/deprovision"
        return await self._request(
            "POST",
            path,
            json_body={"deprovisionReason": reason},
            idempotent=False,
            client_request_id=client_request_id,
        )

    # -- the one request loop ---------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        client_request_id: str | None = None,
    ) -> GraphResponse:
        waited = 0.0
        refreshed = False
        fresh: str | None = None
        attempt = 0
        crid = client_request_id or str(uuid.uuid4())
        while True:
            attempt += 1
            token = fresh or await self._tokens.token(force_refresh=False)
            fresh = None
            request_headers = {
                "Authorization": f"Bearer {token}",
                "client-request-id": crid,
                "return-client-request-id": "true",
                **(headers or {}),
            }
            started = time.perf_counter()
            self.stats.record(path)
            try:
                response = await self._http.request(
                    method, path, params=params, json=json_body, headers=request_headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never left this process: safe to retry for reads and writes alike.
                self._log(method, path, None, started, None, error=type(exc).__name__)
                delay = self._backoff(attempt)
                if attempt >= self._max_attempts or waited + delay > self._settings.graph_max_retry_wait:
                    raise GraphUnavailable(0, "ConnectionFailed", type(exc).__name__, client_request_id=crid) from exc
                waited += delay
                await self._sleep(delay)
                continue
            except httpx.TransportError as exc:
                # Timeout while waiting for the answer, or the connection dropped mid-request.
                self._log(method, path, None, started, None, error=type(exc).__name__)
                if not idempotent:
                    raise OutcomeUnknown(type(exc).__name__, client_request_id=crid) from exc
                delay = self._backoff(attempt)
                if attempt >= self._max_attempts or waited + delay > self._settings.graph_max_retry_wait:
                    raise GraphUnavailable(0, "TransportError", type(exc).__name__, client_request_id=crid) from exc
                waited += delay
                await self._sleep(delay)
                continue

            request_id = response.headers.get("request-id")
            self._log(method, path, response.status_code, started, request_id)
            status = response.status_code
            if status < 400:
                body: Any = None
                if response.content and "json" in response.headers.get("content-type", ""):
                    body = response.json()
                return GraphResponse(
                    status,
                    body,
                    request_id,
                    response.headers.get("client-request-id"),
                    dict(response.headers),
                )

            code, message = _error_from(response)
            retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if status == 401 and not refreshed:
                refreshed = True
                current = await self._tokens.token()
                # Refresh only if nobody has replaced the rejected token yet (concurrent 401s share one refresh).
                fresh = current if current != token else await self._tokens.token(force_refresh=True)
                continue
            if status == 401:
                raise GraphAuthError(status, code, message, request_id=request_id, client_request_id=crid)
            not_processed = status == 429 or (status == 503 and retry_after is not None)
            if not idempotent and status >= 500 and not not_processed:
                # Only 429 and 503 + Retry-After say "not processed". Any other 5xx may come after Intune applied
                # the write: the outcome is unknown until Intune's own record says otherwise.
                raise OutcomeUnknown(f"HTTP {status} {code}", client_request_id=crid)
            retryable = not_processed or (idempotent and status in (500, 502, 503, 504))
            if retryable and attempt < self._max_attempts:
                if retry_after is not None:
                    delay = min(retry_after, self._settings.graph_retry_after_cap)
                else:
                    delay = self._backoff(attempt)
                if waited + delay <= self._settings.graph_max_retry_wait:
                    waited += delay
                    await self._sleep(delay)
                    continue
            error_type: type[GraphError] = GraphError
            if not_processed:
                error_type = GraphThrottled
            elif status >= 500:
                error_type = GraphUnavailable
            raise error_type(
                status,
                code,
                message,
                request_id=request_id,
                client_request_id=crid,
                retry_after=retry_after,
            )

    @staticmethod
    def _backoff(attempt: int) -> float:
        return random.uniform(0, min(8.0, 0.25 * (2 ** (attempt - 1))))  # full jitter

    @staticmethod
    def _log(
        method: str,
        path: str,
        status: int | None,
        started: float,
        request_id: str | None,
        *,
        error: str | None = None,
    ) -> None:
        extra: dict[str, Any] = {
            "method": method,
            "path": safe(path.split("?")[0], 160),
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "request_id": request_id,
        }
        if error:
            extra["error"] = error
        log.info("graph call", extra=extra)


def odata_string(value: str) -> str:
    """An OData string literal: single quotes doubled, wrapped in quotes (OData v4.01 URL conventions)."""
    return "'" + value.replace("'", "''") + "'"
