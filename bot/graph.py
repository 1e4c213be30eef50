"""The one seam to Microsoft Graph: a small, typed, resilient HTTP client over one shared ``httpx.AsyncClient``.

A call goes through small stages, the way httpx itself is built::

    GraphClient.get / post / deprovision / list_all / batch
      └── _request          one RetryBudget: sleep and try again while the budget and the Failure allow
            └── _send       one httpx send with BearerAuth (bot.graph_auth): token, one refresh after 401
                  └── hooks     per round trip: GraphStats and one log line
            └── classify    pure: response → None | Failure(typed error, retryable)   (bot.graph_policy)

* Tokens: :mod:`bot.graph_auth` (msal, off the event loop, cached about an hour).
* Retries and errors: :mod:`bot.graph_policy` — 429 / 503 + ``Retry-After`` honoured (capped, total wait
  bounded), other 5xx and connection errors backed off with full jitter for reads only; a write (the
  deprovision POST) is retried only when Graph certainly did not process it, otherwise
  :class:`~bot.errors.OutcomeUnknown` — never re-sent blindly.
* One log line per round trip; no tokens, no query values beyond a capped, sanitised path.
* The transport is built in exactly one place, :meth:`GraphClient.build_http`: httpx over aiohttp
  (:mod:`bot.graph_transport`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.errors import GraphError
from bot.graph_auth import BearerAuth, MsalTokenSource, TokenSource
from bot.graph_policy import Failure, RetryBudget, classify, parse_retry_after, transport_failure
from bot.graph_transport import AiohttpTransport
from bot.logs import safe
from bot.settings import Settings

__all__ = [
    "BATCH_LIMIT",
    "GraphClient",
    "GraphResponse",
    "GraphStats",
    "MsalTokenSource",
    "TokenSource",
    "odata_string",
    "ssl_context",
]

log = logging.getLogger("bot.graph")

BATCH_LIMIT = 20
_ID_IN_PATH = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12,14}")
_STARTED = "bot.graph.started"  # request extension: perf_counter() when the round trip began


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Trust the system store, or the CA bundle named by ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return ssl.create_default_context()


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


class GraphClient:
    """Typed async access to Microsoft Graph over one shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenSource,
        http: httpx.AsyncClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_attempts: int = 4,
    ) -> None:
        self._settings = settings
        self._auth = BearerAuth(tokens)
        self._http = http
        self._sleep = sleep
        self._max_attempts = max_attempts
        self.stats = GraphStats()
        # Every round trip (a 401 and its retry are two) is counted and logged once, below auth and retries.
        http.event_hooks["request"].append(self._on_request)
        http.event_hooks["response"].append(self._on_response)

    async def aclose(self) -> None:
        """Close the shared HTTP client (process shutdown)."""
        await self._http.aclose()

    @staticmethod
    def build_http(settings: Settings) -> httpx.AsyncClient:
        """httpx's API over aiohttp's connection pool (:mod:`bot.graph_transport`: same timeouts, TLS and errors)."""
        timeout = httpx.Timeout(connect=5.0, read=settings.graph_timeout, write=10.0, pool=5.0)
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=60)
        return httpx.AsyncClient(
            base_url=settings.graph_base_url,
            timeout=timeout,
            transport=AiohttpTransport(verify=ssl_context(settings.ca_file), limits=limits),
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
        return await self.rest_of(await self.get(path, params, headers=headers), max_items=max_items, headers=headers)

    async def rest_of(
        self, body: Any, *, max_items: int = 5000, headers: Mapping[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """A list answer's items with its further pages (e.g. a ``$batch`` sub-answer's); return (items, truncated)."""
        items: list[dict[str, Any]] = []
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
        budget = RetryBudget(2, self._settings.graph_max_retry_wait, self._settings.graph_retry_after_cap)
        while True:
            response = await self.post(f"/{version}/$batch", {"requests": pending})
            throttled: list[str] = []
            retry_after = 0.0
            for item in response.body.get("responses", []):
                results[str(item.get("id"))] = item
                if item.get("status") == 429:
                    headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
                    retry_after = max(retry_after, parse_retry_after(headers.get("retry-after")) or 1.0)
                    throttled.append(str(item.get("id")))
            delay = budget.next_delay(retry_after) if throttled else None
            if delay is None:
                return results
            await self._sleep(delay)
            pending = [r for r in pending if str(r["id"]) in throttled]

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

    # -- the stages of one call ------------------------------------------------------------------------

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
        crid = client_request_id or str(uuid.uuid4())
        request_headers = {"client-request-id": crid, "return-client-request-id": "true", **(headers or {})}
        budget = self._budget()
        while True:
            request = self._http.build_request(method, path, params=params, json=json_body, headers=request_headers)
            outcome = await self._send(request, idempotent=idempotent, client_request_id=crid)
            if isinstance(outcome, GraphResponse):
                return outcome
            failure = outcome
            delay = budget.next_delay(failure.retry_after) if failure.retryable else None
            if delay is None:
                raise failure.error
            await self._sleep(delay)

    async def _send(
        self, request: httpx.Request, *, idempotent: bool, client_request_id: str
    ) -> GraphResponse | Failure:
        """One authenticated send (two round trips after a 401): the response, or what went wrong."""
        try:
            response = await self._http.send(request, auth=self._auth)
        except httpx.TransportError as exc:
            self._log(request, None, error=type(exc).__name__)
            return transport_failure(exc, idempotent=idempotent, client_request_id=client_request_id)
        failure = classify(response, idempotent=idempotent, client_request_id=client_request_id)
        if failure is not None:
            return failure
        body: Any = None
        if response.content and "json" in response.headers.get("content-type", ""):
            body = response.json()
        headers = response.headers
        return GraphResponse(
            response.status_code, body, headers.get("request-id"), headers.get("client-request-id"), dict(headers)
        )

    def _budget(self) -> RetryBudget:
        s = self._settings
        return RetryBudget(self._max_attempts, s.graph_max_retry_wait, s.graph_retry_after_cap)

    # -- per round trip (httpx event hooks) ----------------------------------------------------------------

    async def _on_request(self, request: httpx.Request) -> None:
        request.extensions[_STARTED] = time.perf_counter()
        self.stats.record(request.url.path)

    async def _on_response(self, response: httpx.Response) -> None:
        self._log(response.request, response.status_code, request_id=response.headers.get("request-id"))

    @staticmethod
    def _log(
        request: httpx.Request, status: int | None, *, request_id: str | None = None, error: str | None = None
    ) -> None:
        started = request.extensions.get(_STARTED, time.perf_counter())
        extra: dict[str, Any] = {
            "method": request.method,
            "path": safe(request.url.path, 160),
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
