"""Connector clients reused across turns (installed by :func:`bot.teams.build_agent`).

The stock ``RestChannelServiceClientFactory`` of Agents SDK 1.9 builds, for every turn (and for every proactive
``continue_conversation``), a new ``TeamsConnectorClient`` and a new ``UserTokenClient``, each with its own
``aiohttp.ClientSession``: every reply opens (and closes) a new TCP connection, each constructor calls
``get_product_info()`` — ``importlib.metadata.version("microsoft-agents-connector")``, a distribution that is not
installed, so ``sys.path`` is scanned on disk every time — and anonymous mode logs "App ID is not provided" at
WARNING on every turn.

:class:`PooledClientFactory` keeps **one** ``TCPConnector`` (keep-alive) for the process and caches the clients
themselves per ``(serviceUrl, token)`` (a small LRU: tokens rotate about hourly, and a client never sees another
token's requests), with ``close()`` a no-op per turn; the user-token client is cached the same way and never
contacted unless a sign-in flow uses it. Measured in ``bench/``: the stock echo bot goes from ~210 to ~570 turns/s
with it. Agentic and Copilot Studio (MCS) requests keep the stock path.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import aiohttp
from microsoft_agents.activity import RoleTypes
from microsoft_agents.hosting.core import ClaimsIdentity, RestChannelServiceClientFactory, TurnContext
from microsoft_agents.hosting.core.connector.client import UserTokenClient
from microsoft_agents.hosting.core.connector.teams import TeamsConnectorClient

MAX_CLIENTS = 64


class _PooledConnectorClient(TeamsConnectorClient):
    async def close(self) -> None:
        """Reused across turns: released by :meth:`PooledClientFactory.aclose`."""

    async def release(self) -> None:
        await super().close()


class _PooledUserTokenClient(UserTokenClient):
    async def close(self) -> None:
        """Reused across turns: released by :meth:`PooledClientFactory.aclose`."""

    async def release(self) -> None:
        await super().close()


class PooledClientFactory(RestChannelServiceClientFactory):
    """Connector and user-token clients cached per (endpoint, token) over one keep-alive connection pool."""

    def __init__(self, connection_manager: Any, **kwargs: Any) -> None:
        super().__init__(connection_manager, **kwargs)
        self._pool: aiohttp.TCPConnector | None = None
        self._clients: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def _session(self, base_url: str) -> aiohttp.ClientSession:
        if self._pool is None or self._pool.closed:
            self._pool = aiohttp.TCPConnector(limit=200, limit_per_host=100, keepalive_timeout=60, ttl_dns_cache=300)
        return aiohttp.ClientSession(base_url=base_url, connector=self._pool, connector_owner=False)

    async def _cached(self, key: tuple[str, str, str], build: Any) -> Any:
        client = self._clients.get(key)
        if client is not None and not client.client.closed:
            self._clients.move_to_end(key)
            return client
        client = build()
        self._clients[key] = client
        while len(self._clients) > MAX_CLIENTS:
            _, oldest = self._clients.popitem(last=False)
            await oldest.release()  # the session does not own the pool: connections stay open for others
        return client

    async def create_connector_client(
        self,
        context: TurnContext | None,
        claims_identity: ClaimsIdentity,
        service_url: str,
        audience: str,
        scopes: list[str] | None = None,
        use_anonymous: bool = False,
    ) -> Any:
        agentic = bool(context and context.activity.is_agentic_request())
        mcs = bool(
            context and context.activity.recipient and context.activity.recipient.role == RoleTypes.connector_user
        )
        if agentic or mcs or not service_url or not audience:
            return await super().create_connector_client(
                context, claims_identity, service_url, audience, scopes, use_anonymous
            )
        provider = (
            self._ANONYMOUS_TOKEN_PROVIDER
            if use_anonymous
            else self._connection_manager.get_token_provider(claims_identity, service_url)
        )
        token = await provider.get_access_token(audience, scopes or claims_identity.get_token_scope()) or ""
        endpoint = service_url if service_url.endswith("/") else service_url + "/"
        return await self._cached(
            ("connector", endpoint, token),
            lambda: _PooledConnectorClient(endpoint=endpoint, token=token, session=self._session(endpoint)),
        )

    async def create_user_token_client(
        self, context: TurnContext, claims_identity: ClaimsIdentity, use_anonymous: bool = False
    ) -> Any:
        if context.activity.is_agentic_request():
            return await super().create_user_token_client(context, claims_identity, use_anonymous)
        token = ""
        if not use_anonymous:
            provider = self._connection_manager.get_token_provider(claims_identity, self._token_service_endpoint)
            token = await provider.get_access_token(self._token_service_audience, claims_identity.get_token_scope())
        endpoint = self._token_service_endpoint
        app_id = claims_identity.get_app_id() or ""
        return await self._cached(
            ("user_token", f"{endpoint}|{app_id}", token or ""),
            lambda: _PooledUserTokenClient(
                app_id=app_id or None, endpoint=endpoint, token=token or "", session=self._session(endpoint)
            ),
        )

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.release()
        self._clients.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
