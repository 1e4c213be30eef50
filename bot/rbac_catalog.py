"""The tenant's role catalogue (Intune role definitions, assignments, scope-tag names), cached with a TTL.

One ``$batch`` round trip fills it; once the TTL has passed the stale copy is still served while one background
task fetches a new one (a failed refresh keeps the old copy; the next caller tries again).
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.errors import BotError, RbacUnavailable
from bot.graph import GraphClient
from bot.rbac_batch import collect
from bot.rbac_rules import Catalog, RoleAssignment, RoleDefinition

log = logging.getLogger("bot.rbac")

CATALOG_REQUESTS = [
    {"id": "defs", "method": "GET", "url": "/deviceManagement/roleDefinitions"},
    {"id": "assignments", "method": "GET", "url": "/deviceManagement/roleAssignments?$expand=roleDefinition"},
    {"id": "tags", "method": "GET", "url": "/deviceManagement/roleScopeTags?$select=id,displayName"},
]


class RoleCatalogue:
    """The cached :class:`Catalog`: :meth:`get` blocks only while there is none yet."""

    def __init__(self, graph: GraphClient, ttl: float) -> None:
        self._graph = graph
        self._ttl = ttl
        self._catalog: Catalog | None = None
        self._lock = asyncio.Lock()
        self._refresh_task: asyncio.Task[None] | None = None

    async def get(self) -> Catalog:
        cached = self._catalog
        if cached is not None:
            if time.monotonic() - cached.fetched_at >= self._ttl and (
                self._refresh_task is None or self._refresh_task.done()
            ):
                self._refresh_task = asyncio.create_task(self._background_refresh())
            return cached
        async with self._lock:
            if self._catalog is None:
                self._catalog = await self._fetch()
            return self._catalog

    async def _background_refresh(self) -> None:
        try:
            self._catalog = await self._fetch()
        except BotError as exc:  # keep serving the previous copy; the next request tries again
            log.warning("role catalogue refresh failed", extra={"error": type(exc).__name__})

    async def _fetch(self) -> Catalog:
        answers = await self._graph.batch([dict(r) for r in CATALOG_REQUESTS], version="beta")
        defs = await collect(self._graph, answers.get("defs"), "roleDefinitions")
        rows = await collect(self._graph, answers.get("assignments"), "roleAssignments")
        try:
            tags = await collect(self._graph, answers.get("tags"), "roleScopeTags")
        except RbacUnavailable:
            tags = []  # names are cosmetic
        roles = {r.id: r for r in (RoleDefinition.from_graph(d) for d in defs)}
        assignments = [
            RoleAssignment.from_graph(row, str((row.get("roleDefinition") or {}).get("id", ""))) for row in rows
        ]
        tag_names = {str(t.get("id")): str(t.get("displayName", "")) for t in tags}
        tag_names.setdefault("0", "Default")
        return Catalog(roles, assignments, tag_names)
