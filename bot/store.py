"""Durable state: pending actions as a compare-and-set state machine, on SQLite or PostgreSQL.

States::

    requested ──confirm──▶ submitting ──204──▶ submitted ──Intune: done──▶ confirmed
        │  ╲                   │  ╲                  ╲──Intune: failed──▶ failed
        │   ╲─peer mode─▶ awaiting_approval ──approve──▶ submitting
        │                      │                 ╲──error──▶ failed ──retry (if Graph said "later")──▶ submitting
        ├──cancel──▶ cancelled  ├──reject──▶ cancelled  ╲──timeout, 5xx, dropped──▶ unknown ──Intune's record──▶
        ├──ttl──▶ expired       └──ttl──▶ expired                                    confirmed | failed
        └──a newer request for the device, or another one confirmed──▶ superseded

A device of a bulk request (bot.batches) starts in *queued* — written ahead when the request is confirmed, holding the
device — and the bulk runner claims it (*queued* → *submitting*) or a cancel releases it (*queued* → *cancelled*; a
throttled device waiting for its retry too, *failed* → *cancelled*); one not sent within ``ACTION_TTL`` of the
confirm expires (*queued* → *expired*).

*submitted* means Intune accepted the request (204); *confirmed* that Intune's own record says it was carried out.
An *unknown* write keeps its device locked until Intune's record (or an operator) settles it.

Every transition is one conditional ``UPDATE … WHERE id = ? AND version = ? AND state IN (…)``; the row's
``version`` increments, so two instances receiving the same click cannot both proceed. ``inflight_device`` is
a unique column set while an action is awaiting approval, submitting or submitted: the database itself refuses
a second action on the same device. The schema is managed by Alembic (``bot/migrations``), applied at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger("bot.store")

metadata = sa.MetaData()


class State(enum.StrEnum):
    """An action's state (the strings are what the database stores)."""

    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    CONFIRMED = "confirmed"
    SUPERSEDED = "superseded"
    QUEUED = "queued"  # one device of a confirmed bulk request, written ahead, waiting for the runner


REQUESTED = State.REQUESTED
AWAITING_APPROVAL = State.AWAITING_APPROVAL
SUBMITTING = State.SUBMITTING
SUBMITTED = State.SUBMITTED
FAILED = State.FAILED
UNKNOWN = State.UNKNOWN
CANCELLED = State.CANCELLED
EXPIRED = State.EXPIRED
CONFIRMED = State.CONFIRMED
SUPERSEDED = State.SUPERSEDED
QUEUED = State.QUEUED
STATES = tuple(State)
OPEN_STATES = (REQUESTED, AWAITING_APPROVAL)
#: States that hold the device: no second request can reach Graph (an unknown write included).
INFLIGHT_STATES = (AWAITING_APPROVAL, QUEUED, SUBMITTING, SUBMITTED, UNKNOWN, CONFIRMED)
#: States after which the bot sends nothing more for the action (it may still follow Intune's record).
FINAL_STATES = (SUBMITTED, UNKNOWN, CANCELLED, EXPIRED, CONFIRMED, SUPERSEDED)
#: States whose outcome the bot follows in Intune's own record until it settles (or the budget runs out).
TRACKED_STATES = (SUBMITTED, UNKNOWN)

#: The allowed transitions — the one table the workflow obeys.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    REQUESTED: (SUBMITTING, AWAITING_APPROVAL, CANCELLED, EXPIRED, FAILED, SUPERSEDED),
    AWAITING_APPROVAL: (SUBMITTING, CANCELLED, EXPIRED, FAILED),
    SUBMITTING: (SUBMITTED, FAILED, UNKNOWN),
    FAILED: (SUBMITTING, CANCELLED),  # retried; or a throttled device of a bulk request cancelled before its retry
    SUBMITTED: (CONFIRMED, FAILED),
    UNKNOWN: (SUBMITTED, CONFIRMED, FAILED),
    CANCELLED: (),
    EXPIRED: (),
    CONFIRMED: (),
    SUPERSEDED: (),
    QUEUED: (SUBMITTING, CANCELLED, EXPIRED),  # the bulk runner claims it; the request is cancelled; ACTION_TTL passed
}

actions = sa.Table(
    "actions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(24), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("requester_id", sa.String(64), nullable=False, index=True),
    sa.Column("requester_name", sa.String(256), nullable=False, default=""),
    sa.Column("requester_mri", sa.String(256), nullable=False, default=""),
    sa.Column("device_id", sa.String(64), nullable=False, index=True),
    sa.Column("device_name", sa.String(256), nullable=False, default=""),
    sa.Column("device_serial", sa.String(128), nullable=False, default=""),
    sa.Column("device_json", sa.Text, nullable=False, default="{}"),
    sa.Column("reason", sa.String(64)),
    sa.Column("preset_reason", sa.String(64)),
    sa.Column("approver_id", sa.String(64)),
    sa.Column("approver_name", sa.String(256)),
    sa.Column("comment", sa.Text),
    sa.Column("conversation_id", sa.String(512), nullable=False, default=""),
    sa.Column("conversation_type", sa.String(32), nullable=False, default="personal"),
    sa.Column("conversation_ref", sa.Text, nullable=False, default="{}"),
    sa.Column("card_activity_id", sa.String(256)),
    sa.Column("approval_ref", sa.Text),
    sa.Column("approval_activity_id", sa.String(256)),
    sa.Column("approver_mris", sa.Text, nullable=False, default="[]"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("lease_until", sa.Float),
    sa.Column("client_request_id", sa.String(64)),
    sa.Column("graph_request_id", sa.String(128)),
    sa.Column("error_code", sa.String(128)),
    sa.Column("error_message", sa.Text),
    sa.Column("retryable", sa.Boolean, nullable=False, default=False),
    sa.Column("decision_json", sa.Text, nullable=False, default="{}"),
    sa.Column("notified", sa.Boolean, nullable=False, default=False),
    sa.Column("inflight_device", sa.String(64), unique=True),
    sa.Column("next_check_at", sa.Float, index=True),
    sa.Column("checks", sa.Integer, nullable=False, default=0),
    sa.Column("intune_state", sa.String(32)),
    sa.Column("intune_detail", sa.Text),
    sa.Column("settled_at", sa.Float),
    sa.Column("batch_id", sa.String(64), index=True),  # the bulk request this device belongs to (bot.batches)
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("action_id", sa.String(64), index=True),
    sa.Column("actor_id", sa.String(64)),
    sa.Column("actor_name", sa.String(256)),
    sa.Column("device_id", sa.String(64), index=True),
    sa.Column("device_name", sa.String(256)),
    sa.Column("device_serial", sa.String(128)),
    sa.Column("reason", sa.String(64)),
    sa.Column("conversation_id", sa.String(512)),
    sa.Column("details", sa.Text, nullable=False, default="{}"),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # 1 = SHA-256 (rows written before AUDIT_KEY existed), 2 = HMAC-SHA256 with AUDIT_KEY (see bot.audit)
    sa.Column("hash_version", sa.Integer, nullable=False, server_default="1"),
)


#: Work done inside a state change's own write transaction, given the changed action — its audit events (see
#: :meth:`bot.audit.AuditLog.then`), so a state change and its audit entries commit together. It returns what to do
#: once that transaction has committed (log the audit lines).
InTransaction = Callable[[AsyncConnection, "Action"], Awaitable[Callable[[], None]]]
#: The same for a change of many actions at once (a bulk request's devices), given the actions it moved.
RowsThen = Callable[[AsyncConnection, "list[Action]"], Awaitable[Callable[[], None]]]


class DeviceBusy(Exception):
    """Another action already holds this device (awaiting approval, submitting or submitted)."""


class Conversed:
    """What a request kept in a conversation (an :class:`Action`, a bulk request's batch) reads from its columns."""

    conversation_ref: str
    conversation_type: str
    approver_mris: str
    approval_ref: str | None

    @property
    def reference(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.conversation_ref or "{}")
        return data

    @property
    def approvers(self) -> tuple[str, ...]:
        """Teams ids (MRIs) of the eligible approvers found among the conversation's members."""
        return tuple(json.loads(self.approver_mris or "[]"))

    @property
    def approval_reference(self) -> dict[str, Any] | None:
        """The conversation reference of the approval channel post, if one was made."""
        data: dict[str, Any] | None = json.loads(self.approval_ref) if self.approval_ref else None
        return data

    @property
    def is_group(self) -> bool:
        return self.conversation_type in ("groupChat", "channel")


@dataclass
class Action(Conversed):
    id: str
    tenant_id: str
    state: str
    requester_id: str
    device_id: str
    created_at: float
    updated_at: float
    expires_at: float
    version: int = 1
    requester_name: str = ""
    requester_mri: str = ""
    device_name: str = ""
    device_serial: str = ""
    device_json: str = "{}"
    reason: str | None = None
    preset_reason: str | None = None
    approver_id: str | None = None
    approver_name: str | None = None
    comment: str | None = None
    conversation_id: str = ""
    conversation_type: str = "personal"
    conversation_ref: str = "{}"
    card_activity_id: str | None = None
    approval_ref: str | None = None
    approval_activity_id: str | None = None
    approver_mris: str = "[]"
    lease_until: float | None = None
    client_request_id: str | None = None
    graph_request_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    decision_json: str = "{}"
    notified: bool = False
    inflight_device: str | None = None
    next_check_at: float | None = None  # when to read Intune's record next (None: not followed)
    checks: int = 0
    intune_state: str | None = None  # what Intune's record said last: pending | done | failed | not_confirmed
    intune_detail: str | None = None
    settled_at: float | None = None  # when Intune's record settled the outcome
    batch_id: str | None = None  # the bulk request this device belongs to (see bot.batches)

    @property
    def device(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.device_json or "{}")
        return data

    @classmethod
    def new(
        cls, *, device: dict[str, Any], reference: dict[str, Any], decision: dict[str, Any], **values: Any
    ) -> Action:
        """A new action from decoded values (the store keeps the device, reference and decision as JSON)."""
        return cls(
            device_name=str(device.get("name", "")),
            device_serial=str(device.get("serial", "")),
            device_id=str(device.get("id", "")),
            device_json=json.dumps(device),
            conversation_ref=json.dumps(reference),
            decision_json=json.dumps(decision),
            **values,
        )

    def expired(self, now: float) -> bool:
        return self.state in OPEN_STATES and now >= self.expires_at


_ACTION_FIELDS = {f.name for f in fields(Action)}


@dataclass
class Store:
    """Async access to the actions table; its engine and write queue serve bot.audit, batches and selections too."""

    engine: AsyncEngine
    url: str
    _closed: bool = field(default=False, repr=False)
    _write_lock: asyncio.Lock | None = field(default=None, repr=False)
    #: The audit chain's newest ``(seq, hash)`` as this process last committed it (SQLite only: kept under the
    #: write lock by :meth:`bot.audit.AuditLog.append`, dropped whenever a write transaction fails).
    audit_head: tuple[int, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # SQLite has one writer at a time: queue this process's writers in order instead of letting pooled
        # connections poll for the database lock (long tail latencies, "database is locked" under load).
        if self.url.startswith("sqlite"):
            self._write_lock = asyncio.Lock()

    @property
    def caches_audit_head(self) -> bool:
        """May :attr:`audit_head` be trusted without reading the table? Only behind this process's write queue."""
        return self._write_lock is not None

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (serialised in-process on SQLite; PostgreSQL relies on row locks / CAS)."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            try:
                async with self.engine.begin() as conn:
                    yield conn
            except BaseException:
                self.audit_head = None  # whatever this transaction appended was rolled back
                raise

    @classmethod
    async def open(cls, url: str, *, migrate: bool = True) -> Store:
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[-1].split("?", 1)[0]
            if path and path != ":memory:":
                await asyncio.to_thread(prepare_sqlite_file, Path(path))
            engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)

            @sa.event.listens_for(engine.sync_engine, "reset")
            def _reset(dbapi_connection: Any, _record: Any, state: Any) -> None:
                # The pool would roll back every connection handed back to it. After a commit (every write
                # transaction) there is nothing to roll back: SQLite's own rollback is then a no-op, but aiosqlite
                # still hands it to its worker thread and back. So the pool's reset is off (pool_reset_on_return)
                # and done here only when SQLite says a transaction is still open — a connection handed back after
                # an error or a cancelled turn is rolled back exactly as before. ``in_transaction`` reads the
                # sqlite3 connection's autocommit flag directly; nothing runs on that connection at check-in.
                if (
                    state.asyncio_safe
                    and not state.transaction_was_reset
                    and dbapi_connection.driver_connection.in_transaction
                ):
                    dbapi_connection.rollback()

            @sa.event.listens_for(engine.sync_engine, "connect")
            def _pragmas(dbapi_connection: Any, _record: Any) -> None:
                # journal_mode=WAL is a property of the file, set once by prepare_sqlite_file.
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()
        else:
            engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        store = cls(engine, url)
        if migrate:
            await store.migrate()
        return store

    async def migrate(self) -> None:
        from bot.migrations import upgrade

        # Alembic keeps its migration context in module globals: two upgrades interleaving in one process (two
        # databases opened at once, e.g. by tests or tools) would clobber each other's. The database-level locks in
        # ``upgrade`` serialise instances per database; this serialises one process's upgrades across databases.
        async with _migration_lock(), self.engine.begin() as conn:
            await conn.run_sync(upgrade)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.engine.dispose()

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            try:
                row = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).first()
            except Exception:
                return None
        return str(row[0]) if row else None

    # -- actions -----------------------------------------------------------------------------------------

    async def create(self, action: Action, *, then: InTransaction | None = None) -> Action:
        """Insert a new action; ``then`` (its audit events) runs in the same transaction."""
        values = {k: v for k, v in action.__dict__.items() if k in _ACTION_FIELDS}
        async with self.write() as conn:
            # The row as execution parameters: the same cached INSERT every time, no per-call statement build.
            await conn.execute(actions.insert(), values)
            committed = await then(conn, action) if then is not None else None
        if committed is not None:
            committed()
        return action

    async def get(self, action_id: str) -> Action | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(actions.select().where(actions.c.id == action_id))).mappings().first()
        return Action(**dict(row)) if row else None

    async def transition(
        self,
        action: Action,
        new_state: str,
        *,
        from_states: Iterable[str] | None = None,
        now: float | None = None,
        then: InTransaction | None = None,
        provided: sa.ColumnElement[bool] | None = None,
        **changes: Any,
    ) -> Action | None:
        """Compare-and-set: move ``action`` to ``new_state`` only if nobody changed it since it was read.

        Returns the updated action, or ``None`` when another click/instance won the race.
        Raises :class:`DeviceBusy` when the move would give the device a second in-flight action.
        ``then`` (the change's audit events) runs in the same transaction, only if the move happened.
        ``provided``: one more SQL condition the move needs (e.g. that the action's bulk request still runs).
        """
        if new_state not in TRANSITIONS:
            raise ValueError(f"unknown state {new_state!r}")
        allowed_from = tuple(from_states or (action.state,))
        for source in {action.state, *allowed_from}:
            if new_state not in TRANSITIONS.get(source, ()) and new_state != source:
                raise ValueError(f"transition {source} → {new_state} is not allowed")
        changes = {k: v for k, v in changes.items() if k in _ACTION_FIELDS}
        changes["inflight_device"] = action.device_id if new_state in INFLIGHT_STATES else None
        stamp = now if now is not None else time.time()
        statement = (
            actions.update()
            .where(
                actions.c.id == action.id,
                actions.c.version == action.version,
                actions.c.state.in_(allowed_from),
                *([provided] if provided is not None else []),
            )
            .values(state=new_state, version=action.version + 1, updated_at=stamp, **changes)
        )
        updated = Action(**{**action.__dict__, **changes})
        updated.state, updated.version, updated.updated_at = new_state, action.version + 1, stamp
        committed = None
        async with self.write() as conn:
            try:
                result = await conn.execute(statement)
            except IntegrityError as exc:
                raise DeviceBusy(action.device_id) from exc
            if result.rowcount != 1:
                return None
            if then is not None:
                committed = await then(conn, updated)
        if committed is not None:
            committed()
        return updated

    async def update_fields(self, action_id: str, **changes: Any) -> None:
        """Non-state bookkeeping (card message id, notified flag) — not part of the CAS protocol."""
        changes = {k: v for k, v in changes.items() if k in _ACTION_FIELDS and k not in ("state", "version")}
        async with self.write() as conn:
            await conn.execute(actions.update().where(actions.c.id == action_id).values(**changes))

    async def set_approvers(self, action_id: str, mris: list[str]) -> None:
        await self.update_fields(action_id, approver_mris=json.dumps(mris))

    async def set_approval_message(self, action_id: str, reference: dict[str, Any], activity_id: str | None) -> None:
        await self.update_fields(action_id, approval_ref=json.dumps(reference), approval_activity_id=activity_id)

    async def _select(self, *where: Any, order: Any = None, limit: int | None = None) -> list[Action]:
        query = actions.select().where(*where)
        if order is not None:
            query = query.order_by(order)
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Action(**dict(r)) for r in rows]

    async def due_for_expiry(self, now: float) -> list[Action]:
        return await self._select(actions.c.state.in_(OPEN_STATES), actions.c.expires_at <= now, limit=200)

    async def stale_submitting(self, now: float) -> list[Action]:
        return await self._select(
            actions.c.state == SUBMITTING,
            sa.or_(actions.c.lease_until.is_(None), actions.c.lease_until <= now),
            limit=200,
        )

    async def claim_notification(self, action_id: str, *, claimed: bool = True) -> bool:
        """Flip ``notified`` once (compare-and-set), so only one instance tells the requester."""
        async with self.write() as conn:
            result = await conn.execute(
                actions.update()
                .where(actions.c.id == action_id, actions.c.notified.is_(not claimed))
                .values(notified=claimed)
            )
        return bool(result.rowcount == 1)

    async def due_for_check(self, now: float, limit: int = 100) -> list[Action]:
        """Actions whose outcome is followed in Intune's record and whose next check is due."""
        return await self._select(
            actions.c.state.in_(TRACKED_STATES),
            actions.c.next_check_at.is_not(None),
            actions.c.next_check_at <= now,
            order=actions.c.next_check_at.asc(),
            limit=limit,
        )

    async def claim_check(self, action: Action, until: float) -> bool:
        """Compare-and-set on ``next_check_at``: exactly one instance reads Intune's record for this round."""
        async with self.write() as conn:
            result = await conn.execute(
                actions.update()
                .where(
                    actions.c.id == action.id,
                    actions.c.version == action.version,
                    actions.c.next_check_at == action.next_check_at,
                )
                .values(next_check_at=until)
            )
        return bool(result.rowcount == 1)

    async def unnotified(self) -> list[Action]:
        return await self._select(actions.c.state == UNKNOWN, actions.c.notified.is_(False), limit=200)

    async def inflight_for_device(self, device_id: str) -> Action | None:
        found = await self._select(actions.c.inflight_device == device_id, limit=1)
        return found[0] if found else None

    async def requested_for_device(
        self, device_id: str, *, except_id: str | None = None, created_before: float | None = None
    ) -> list[Action]:
        """The device's requests still waiting for their requester's confirmation (the ones a newer one supersedes)."""
        where = [actions.c.device_id == device_id, actions.c.state == REQUESTED]
        if except_id:
            where.append(actions.c.id != except_id)
        if created_before is not None:
            where.append(actions.c.created_at < created_before)
        return await self._select(*where, order=actions.c.created_at.asc(), limit=50)

    async def latest_for_device(self, device_id: str) -> Action | None:
        found = await self._select(actions.c.device_id == device_id, order=actions.c.created_at.desc(), limit=1)
        return found[0] if found else None

    async def history(
        self, *, device_id: str | None = None, requester_id: str | None = None, limit: int = 10
    ) -> list[Action]:
        where = []
        if device_id:
            where.append(actions.c.device_id == device_id)
        if requester_id:
            where.append(actions.c.requester_id == requester_id)
        return await self._select(*where, order=actions.c.created_at.desc(), limit=limit)

    async def awaiting_approval(self, tenant_id: str, limit: int = 20) -> list[Action]:
        return await self._select(
            actions.c.state == AWAITING_APPROVAL,
            actions.c.tenant_id == tenant_id,
            order=actions.c.created_at.asc(),
            limit=limit,
        )

    async def count(self, state: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(actions)
        if state:
            query = query.where(actions.c.state == state)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


_MIGRATION_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _migration_lock() -> asyncio.Lock:
    """One lock per event loop (an ``asyncio.Lock`` belongs to the loop it is first used on)."""
    loop = asyncio.get_running_loop()
    lock = _MIGRATION_LOCKS.get(loop)
    if lock is None:
        lock = _MIGRATION_LOCKS[loop] = asyncio.Lock()
    return lock


def prepare_sqlite_file(path: Path, *, wait: float = 30.0) -> None:
    """Create the database file owner-only (0600, directory 0700) and switch it to WAL, once, race-free.

    Switching the journal mode needs the file's exclusive lock, and SQLite answers "database is locked" at once —
    without its busy handler — when another connection (another process starting at the same moment) holds any
    lock. WAL mode persists in the file, so only the first open of a new file really changes anything; every
    open retries the switch, with a short backoff, until the mode reads back as WAL or ``wait`` seconds pass.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    deadline = time.monotonic() + wait
    delay = 0.005
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=wait)) as conn:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode and str(mode[0]).lower() == "wal":
                return
            raise sqlite3.OperationalError(f"journal_mode stayed {mode!r}")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


async def serialise_writers(conn: AsyncConnection, key: int) -> None:
    """Make the transaction just begun on ``conn`` the only writer holding ``key`` until it ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: ``BEGIN IMMEDIATE`` takes the database write lock up
    front (waiting up to the busy timeout), so what the transaction reads cannot change before it writes.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif conn.dialect.name == "sqlite":
        raw = await conn.get_raw_connection()
        if not getattr(raw.driver_connection, "in_transaction", True):
            await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def wait_for_database(url: str, attempts: int = 10) -> None:
    """Used by the CLI and tests: retry a connection briefly (PostgreSQL starting up)."""
    engine = create_async_engine(url)
    try:
        for attempt in range(attempts):
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
                return
            except Exception:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
