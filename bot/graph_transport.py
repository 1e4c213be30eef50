"""httpx's API over aiohttp's HTTP/1.1 client: the Graph client's transport (less than half httpcore's CPU per request).

:class:`AiohttpTransport` is an ``httpx.AsyncBaseTransport`` over one shared ``aiohttp.ClientSession``, so
``GraphClient`` keeps httpx's requests, auth flow, event hooks and typed exceptions. Written here instead of
adopting ``httpx-aiohttp``: its 0.2 maps every ``aiohttp.ClientConnectionError`` — a connection dropped *after*
the request went out included — to ``httpx.ConnectTimeout``, which would make a non-idempotent POST look safe to
re-send, and overriding that means replacing all of its code anyway.

What stays as it was with httpcore:

* Errors: :func:`httpx_error` keeps the one distinction the retry policy (:mod:`bot.graph_policy`) relies on —
  *never connected* (``ConnectError`` / ``ConnectTimeout``: retried, even for writes) versus *lost after the
  request started going out* (``ReadTimeout``, ``ReadError``, ``RemoteProtocolError``: a write's outcome is
  unknown). Anything unrecognised counts as "after", the safe side.
* Timeouts from the request's ``timeout`` extension: ``read`` → aiohttp's ``sock_read`` (the longest silence
  while waiting for or reading the answer), ``connect`` → ``sock_connect``, ``pool + connect`` → aiohttp's
  ``connect`` (waiting for a pooled connection plus opening one). aiohttp has no write timeout; Graph request
  bodies are a few hundred bytes, which the socket buffer takes at once.
* TLS: the caller's ``ssl.SSLContext`` (``bot.graph.ssl_context``: the system store or ``SSL_CERT_FILE``).
* Pooling: at most ``max_connections`` connections, idle ones kept ``keepalive_expiry`` seconds (aiohttp keeps
  every idle connection within that limit: ``max_keepalive_connections`` has no equivalent).
* The request line carries httpx's URL byte for byte (``encoded=True``: yarl would otherwise requote
  ``%27`` to ``'`` or ``%2F`` to ``/`` in an OData query).
* No hidden retries: every attempt is GraphClient's (aiohttp's re-send of a dropped GET is switched off).
* No redirects, no proxies from the environment, no cookie jar (httpx's own cookie handling stays in charge),
  no decompression here (httpx decodes ``Content-Encoding`` as before). The body is read whole: Graph answers
  are JSON, never streamed.
"""

from __future__ import annotations

import ssl

import aiohttp
import httpx
import yarl

__all__ = ["AiohttpTransport", "httpx_error"]


def httpx_error(exc: BaseException) -> type[httpx.TransportError]:
    """The httpx exception type for an aiohttp (or socket) failure: did the request possibly leave the process?"""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):  # pool wait or connect: nothing was sent
        return httpx.ConnectTimeout
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake or certificate: nothing sent
        return httpx.ConnectError
    if isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):  # sock_read: the request had gone out
        return httpx.ReadTimeout
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError  # closed or garbled after the request was (partly) written
    return httpx.ReadError  # ClientOSError, ClientPayloadError, resets while writing or reading, anything else


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One ``aiohttp.ClientSession`` (created on first use, inside the running loop) behind an ``httpx.AsyncClient``."""

    def __init__(self, *, verify: ssl.SSLContext, limits: httpx.Limits) -> None:
        self._ssl = verify
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            ssl=self._ssl,
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        # aiohttp silently re-sends an idempotent request once when the connection drops (meant for stale
        # keep-alive connections, but it fires on fresh ones too); retries are GraphClient's, counted and logged
        # there. No public switch: aiohttp's own test client turns it off the same way.
        self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        t = request.extensions.get("timeout", {})
        connect, pool = t.get("connect"), t.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=t.get("read"),
        )
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                yarl.URL(str(request.url), encoded=True),  # httpx's bytes as they are, not requoted
                headers=request.headers.multi_items(),
                data=body or None,
                allow_redirects=False,
                timeout=timeout,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, OSError) as exc:  # OSError covers TimeoutError
            raise httpx_error(exc)(f"{type(exc).__name__}: {exc}", request=request) from exc
        extensions = {"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("ascii", "replace")}
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=httpx.ByteStream(content),
            request=request,
            extensions=extensions,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
