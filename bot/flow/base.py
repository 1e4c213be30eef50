"""What every room of the conversation shares: who and where, replies, the notifier seam, the dependencies."""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot import messages as m
from bot.audit import Actor, AuditLog, Entry
from bot.devices import DeviceDirectory
from bot.errors import GraphError, RbacUnavailable
from bot.graph import GraphClient
from bot.logs import safe
from bot.rbac import RbacChecker
from bot.settings import Settings
from bot.store import Action, Store

log = logging.getLogger("bot.workflow")

ACTION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
USER_ID_RE = re.compile(r"^[0-9A-Fa-f-]{30,40}$")


def new_id() -> str:
    """A fresh id for an action, a bulk request or a selection: 24 URL-safe characters (144 random bits) that never
    start with ``-`` — an id an operator pastes into ``app.py actions resolve <id>`` must not read as an option."""
    while True:
        candidate = secrets.token_urlsafe(18)
        if not candidate.startswith("-"):
            return candidate


MAX_COMMENT = 500


class Viewer(enum.StrEnum):
    """Who is looking at a request's card (each sees their own view)."""

    REQUESTER = "requester"  # may confirm, cancel, retry
    APPROVER = "approver"  # may approve or reject
    OTHER = "other"  # read-only


@dataclass(frozen=True)
class Requester:
    aad_id: str
    name: str
    mri: str
    tenant_id: str

    @property
    def actor(self) -> Actor:
        return Actor(self.aad_id, self.name)


@dataclass(frozen=True)
class Conversation:
    id: str
    type: str
    reference: dict[str, Any]

    @property
    def is_group(self) -> bool:
        return self.type in ("groupChat", "channel")


@dataclass(frozen=True)
class Member:
    aad_id: str
    mri: str
    name: str


@dataclass
class Reply:
    """One outgoing message: text or a card; ``action_id``/``selection_id``/``batch_id`` ask for the sent message's id."""

    text: str | None = None
    card: dict[str, Any] | None = None
    action_id: str | None = None
    selection_id: str | None = None
    batch_id: str | None = None


@dataclass
class InvokeAnswer:
    card: dict[str, Any] | None = None
    message: str | None = None
    error: tuple[int, str, str] | None = None  # (status, code, message)


class Notifier(Protocol):
    """Proactive messaging, implemented over the Agents SDK in :mod:`bot.teams`."""

    async def update(self, reference: dict[str, Any], activity_id: str, card: dict[str, Any]) -> bool: ...

    async def send(
        self,
        reference: dict[str, Any],
        *,
        text: str | None = None,
        card: dict[str, Any] | None = None,
        mentions: list[Member] | None = None,
    ) -> str | None: ...

    async def members(self, reference: dict[str, Any]) -> list[Member]: ...


def no_checkpoint(_point: str) -> None:
    """Production: nothing happens at the named points of a submission (tests inject a crash here)."""


@dataclass
class Deps:
    """The services the rooms use, and the background tasks they start (awaited at shutdown)."""

    settings: Settings
    store: Store
    audit: AuditLog
    graph: GraphClient
    devices: DeviceDirectory
    rbac: RbacChecker
    notifier: Notifier | None = None
    clock: Callable[[], float] = time.time
    checkpoint: Callable[[str], None] = no_checkpoint
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def change(
        self, action: Action, state: str, *entries: Entry, record_anyway: bool = False, **changes: Any
    ) -> Action | None:
        """Move ``action`` to ``state`` (compare-and-set) with its audit ``entries`` in the same transaction.

        ``None`` when another click or instance changed the action first; the entries are then recorded anyway
        with ``record_anyway`` (what happened at Graph is on record whoever settles the action).
        """
        then = self.audit.then(*entries) if entries else None
        updated = await self.store.transition(action, state, then=then, **changes)
        if updated is None and record_anyway:
            for entry in entries:
                await self.audit.record_entry(entry)
        return updated

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def unavailable(exc: RbacUnavailable | GraphError) -> str:
    """Log a dependency failure (no secrets: status, code and request id only) and say so to the user."""
    if isinstance(exc, RbacUnavailable):
        log.warning("rbac unavailable", extra={"error": safe(exc)})
        return m.rbac_unavailable()
    log.warning("graph error", extra={"status": exc.status, "code": exc.code, "request_id": exc.request_id})
    return m.graph_unavailable()


def base_conversation(conversation_id: str) -> str:
    """A channel thread's id without its ``;messageid=…`` suffix."""
    return conversation_id.split(";", 1)[0].lower()
