"""Durable state of bulk requests (``deprovision`` + a list): one ``batches`` row, and one action row per device.

A batch::

    requested ──confirm──▶ running ──every device sent or settled──▶ finished
        │   ╲──peer mode──▶ awaiting_approval ──approve──▶ running
        ├──cancel──▶ cancelled ◀──cancel (devices not yet sent)── running
        └──ttl──▶ expired         awaiting_approval ──reject / withdraw / ttl──▶ cancelled | expired

The classified list (what the summary card shows) lives in ``items_json``; the card carries only the batch id.
When a batch starts, every device still free gets its own action row in *queued* (which holds the device, like
any in-flight state) in the **same transaction** as the batch's compare-and-set — so a crash resumes and two
confirmations (or two instances) can never write the rows twice. The runner then claims each row by
compare-and-set (*queued* → *submitting*, with a lease) before its POST; from there the single-device machinery
(reconciliation of stale *submitting* rows, completion tracking) applies to each row unchanged.

A cancel moves the batch and every device not sent yet (*queued*, or *failed* and waiting for a throttled retry) to
*cancelled* in one transaction, and a claim needs the batch still *running*: nothing is sent once a cancel has
committed. The runner's lease names its owner; only that runner renews or releases it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store import FAILED, INFLIGHT_STATES, QUEUED, Action, Conversed, RowsThen, Store, actions, metadata

REQUESTED = "requested"
AWAITING_APPROVAL = "awaiting_approval"
RUNNING = "running"
FINISHED = "finished"
CANCELLED = "cancelled"
EXPIRED = "expired"
OPEN = (REQUESTED, AWAITING_APPROVAL)
#: The allowed transitions of a batch.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    REQUESTED: (RUNNING, AWAITING_APPROVAL, CANCELLED, EXPIRED),
    AWAITING_APPROVAL: (RUNNING, CANCELLED, EXPIRED),
    RUNNING: (FINISHED, CANCELLED),
    CANCELLED: (FINISHED,),  # a run cancelled midway finishes when its devices already sent have settled
    FINISHED: (),
    EXPIRED: (),
}

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(24), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("requester_id", sa.String(64), nullable=False, index=True),
    sa.Column("requester_name", sa.String(256), nullable=False, default=""),
    sa.Column("requester_mri", sa.String(256), nullable=False, default=""),
    sa.Column("conversation_id", sa.String(512), nullable=False, default=""),
    sa.Column("conversation_type", sa.String(32), nullable=False, default="personal"),
    sa.Column("conversation_ref", sa.Text, nullable=False, default="{}"),
    sa.Column("card_activity_id", sa.String(256)),
    sa.Column("items_json", sa.Text, nullable=False, default="[]"),
    sa.Column("reason", sa.String(64)),
    sa.Column("preset_reason", sa.String(64)),
    sa.Column("approver_id", sa.String(64)),
    sa.Column("approver_name", sa.String(256)),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float),  # the instance running it owns it until then (renewed as it goes)
    sa.Column("lease_owner", sa.String(64)),  # which runner holds that lease (only it renews or releases it)
    sa.Column("finished_at", sa.Float),
    # Peer mode: the eligible approvers among the conversation's members (Teams MRIs, JSON), the approval channel post.
    sa.Column("approver_mris", sa.Text, nullable=False, default="[]"),
    sa.Column("approval_ref", sa.Text),
    sa.Column("approval_activity_id", sa.String(256)),
)


@dataclass
class Batch(Conversed):
    id: str
    tenant_id: str
    state: str
    requester_id: str
    created_at: float
    updated_at: float
    expires_at: float
    version: int = 1
    requester_name: str = ""
    requester_mri: str = ""
    conversation_id: str = ""
    conversation_type: str = "personal"
    conversation_ref: str = "{}"
    card_activity_id: str | None = None
    items_json: str = "[]"
    reason: str | None = None
    preset_reason: str | None = None
    approver_id: str | None = None
    approver_name: str | None = None
    comment: str | None = None
    lease_until: float | None = None
    lease_owner: str | None = None
    finished_at: float | None = None
    approver_mris: str = "[]"
    approval_ref: str | None = None
    approval_activity_id: str | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = json.loads(self.items_json or "[]")
        return data

    def expired(self, now: float) -> bool:
        return self.state in OPEN and now >= self.expires_at


_FIELDS = {f.name for f in fields(Batch)}


def _changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The batch columns among ``changes`` that a move may set (its state and version are the move's own)."""
    return {k: v for k, v in changes.items() if k in _FIELDS and k not in ("state", "version")}


@dataclass
class Started:
    """What :meth:`BatchStore.start` did: the batch as it now stands, the rows written, the devices found busy."""

    batch: Batch | None
    rows: list[Action] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


class BatchStore:
    """The ``batches`` table and the bulk queries on ``actions``, over the same engine as :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, batch: Batch, *, then: RowsThen | None = None) -> Batch:
        """Insert a new batch; ``then`` (its audit events, given no rows) runs in the same transaction."""
        values = {k: v for k, v in batch.__dict__.items() if k in _FIELDS}
        committed = None
        async with self.store.write() as conn:
            await conn.execute(batches.insert().values(**values))
            if then is not None:
                committed = await then(conn, [])
        if committed is not None:
            committed()
        return batch

    async def get(self, batch_id: str) -> Batch | None:
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(batches.select().where(batches.c.id == batch_id))).mappings().first()
        return Batch(**dict(row)) if row else None

    @staticmethod
    def _cas(batch: Batch, new_state: str, now: float, changes: dict[str, Any]) -> Any:
        if new_state != batch.state and new_state not in TRANSITIONS.get(batch.state, ()):
            raise ValueError(f"batch transition {batch.state} → {new_state} is not allowed")
        return (
            batches.update()
            .where(batches.c.id == batch.id, batches.c.version == batch.version, batches.c.state == batch.state)
            .values(state=new_state, version=batch.version + 1, updated_at=now, **changes)
        )

    @staticmethod
    def _moved(batch: Batch, new_state: str, now: float, changes: dict[str, Any]) -> Batch:
        updated = Batch(**{**batch.__dict__, **changes})
        updated.state, updated.version, updated.updated_at = new_state, batch.version + 1, now
        return updated

    async def transition(
        self, batch: Batch, new_state: str, *, then: RowsThen | None = None, **changes: Any
    ) -> Batch | None:
        """Compare-and-set on (id, version, state); ``None`` when someone else changed the batch first. ``then``
        (audit events) runs in the same transaction, given no rows, only if the move happened."""
        return await self._move(batch, new_state, changes, then)

    async def _move(
        self,
        batch: Batch,
        new_state: str,
        changes: dict[str, Any],
        then: RowsThen | None,
        rows: Callable[[AsyncConnection, float], Awaitable[list[Action]]] | None = None,
    ) -> Batch | None:
        """The compare-and-set of :meth:`transition` and :meth:`cancel`; ``rows`` (device rows moved with the batch)
        and then ``then`` (given those rows) run in the same transaction, only if the move happened."""
        changes = _changes(changes)
        now = time.time()
        committed = None
        async with self.store.write() as conn:
            result = await conn.execute(self._cas(batch, new_state, now, changes))
            if result.rowcount != 1:
                return None
            moved = await rows(conn, now) if rows is not None else []
            if then is not None:
                committed = await then(conn, moved)
        if committed is not None:
            committed()
        return self._moved(batch, new_state, now, changes)

    async def start(
        self, batch: Batch, new_state: str, rows: Sequence[Action], *, then: RowsThen | None = None, **changes: Any
    ) -> Started:
        """Move the batch (compare-and-set) and write the device rows ahead, in one transaction; ``then`` (their
        audit events, given the rows written) too.

        Devices that another action holds by now are left out and returned as ``busy``. A device taken between the
        read and the insert (a unique violation on ``inflight_device``) rolls everything back, and it is tried again.
        """
        changes = _changes(changes)
        for _attempt in range(5):
            now = time.time()
            try:
                async with self.store.write() as conn:
                    result = await conn.execute(self._cas(batch, new_state, now, changes))
                    if result.rowcount != 1:
                        return Started(None)
                    ids = [r.device_id for r in rows]
                    held = await conn.execute(
                        sa.select(actions.c.inflight_device).where(actions.c.inflight_device.in_(ids))
                    )
                    busy = {str(r[0]) for r in held}
                    free = [r for r in rows if r.device_id not in busy]
                    if free:
                        await conn.execute(actions.insert(), [_row(r) for r in free])
                    committed = await then(conn, free) if then is not None else None
            except IntegrityError:
                continue
            if committed is not None:
                committed()
            return Started(self._moved(batch, new_state, now, changes), free, sorted(busy))
        return Started(None)

    async def set_card(self, batch_id: str, activity_id: str) -> None:
        async with self.store.write() as conn:
            await conn.execute(batches.update().where(batches.c.id == batch_id).values(card_activity_id=activity_id))

    async def set_approvers(self, batch_id: str, mris: list[str]) -> None:
        async with self.store.write() as conn:
            await conn.execute(batches.update().where(batches.c.id == batch_id).values(approver_mris=json.dumps(mris)))

    async def set_approval_message(self, batch_id: str, reference: dict[str, Any], activity_id: str | None) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                batches.update()
                .where(batches.c.id == batch_id)
                .values(approval_ref=json.dumps(reference), approval_activity_id=activity_id)
            )

    async def set_items(self, batch_id: str, items: list[dict[str, Any]]) -> None:
        async with self.store.write() as conn:
            await conn.execute(batches.update().where(batches.c.id == batch_id).values(items_json=json.dumps(items)))

    async def rows(self, batch_id: str, *states: str) -> list[Action]:
        query = actions.select().where(actions.c.batch_id == batch_id)
        if states:
            query = query.where(actions.c.state.in_(states))
        async with self.store.engine.connect() as conn:
            found = (await conn.execute(query.order_by(actions.c.created_at, actions.c.device_name))).mappings().all()
        return [Action(**dict(r)) for r in found]

    @staticmethod
    def runs(batch_id: str) -> sa.ColumnElement[bool]:
        """SQL: the batch is still *running* — the condition of every claim of one of its devices (a device of a
        cancelled batch is never sent, whatever rows were left behind)."""
        return sa.exists().where(batches.c.id == batch_id, batches.c.state == RUNNING)

    async def cancel(self, batch: Batch, by: str, *, then: RowsThen | None = None, **changes: Any) -> Batch | None:
        """Cancel the batch (compare-and-set) and, in the **same transaction**, every device not sent yet (see
        :meth:`_cancel_rows`); ``then`` (their audit events) too. ``None`` when someone changed the batch first."""

        async def rows(conn: AsyncConnection, now: float) -> list[Action]:
            return await self._cancel_rows(conn, batch.id, by, now) if batch.state == RUNNING else []

        return await self._move(batch, CANCELLED, changes, then, rows)

    async def cancel_left(self, batch_id: str, by: str, *, then: RowsThen | None = None) -> list[Action]:
        """The devices a cancelled batch still holds back (see :meth:`_cancel_rows`) → *cancelled*."""
        committed = None
        async with self.store.write() as conn:
            rows = await self._cancel_rows(conn, batch_id, by, time.time())
            if rows and then is not None:
                committed = await then(conn, rows)
        if committed is not None:
            committed()
        return rows

    @staticmethod
    async def _cancel_rows(conn: AsyncConnection, batch_id: str, by: str, now: float) -> list[Action]:
        """Every device of the batch not claimed (*queued*) or waiting for a retry after Graph said "throttled"
        (*failed*, retryable) → *cancelled*, the device free; returns them as they now stand."""
        waiting = sa.or_(actions.c.state == QUEUED, sa.and_(actions.c.state == FAILED, actions.c.retryable.is_(True)))
        result = await conn.execute(
            actions.update()
            .where(actions.c.batch_id == batch_id, waiting)
            .values(
                state=CANCELLED, version=actions.c.version + 1, inflight_device=None, approver_name=by, updated_at=now
            )
            .returning(*actions.columns)
        )
        return [Action(**dict(r)) for r in result.mappings().all()]

    async def claim_run(self, batch: Batch, until: float, now: float, owner: str) -> bool:
        """The runner's lease: one runner (``owner``) runs a batch at a time (a crashed one's lease runs out)."""
        async with self.store.write() as conn:
            result = await conn.execute(
                batches.update()
                .where(
                    batches.c.id == batch.id,
                    batches.c.state.in_((RUNNING, CANCELLED)),
                    batches.c.finished_at.is_(None),
                    sa.or_(batches.c.lease_until.is_(None), batches.c.lease_until <= now),
                )
                .values(lease_until=until, lease_owner=owner)
            )
        return bool(result.rowcount == 1)

    async def renew(self, batch_id: str, until: float, owner: str) -> bool:
        """Move the lease's end (an end in the past hands the batch to the sweep) — only while ``owner`` holds it."""
        async with self.store.write() as conn:
            result = await conn.execute(
                batches.update()
                .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
                .values(lease_until=until)
            )
        return bool(result.rowcount == 1)

    async def due(self, now: float, limit: int = 50) -> tuple[list[Batch], list[Batch]]:
        """(open batches past their deadline, running batches whose runner's lease ran out)."""
        async with self.store.engine.connect() as conn:
            expired = (
                await conn.execute(
                    batches.select().where(batches.c.state.in_(OPEN), batches.c.expires_at <= now).limit(limit)
                )
            ).mappings()
            stale = (
                await conn.execute(
                    batches.select()
                    .where(
                        batches.c.state.in_((RUNNING, CANCELLED)),
                        batches.c.finished_at.is_(None),
                        sa.or_(batches.c.lease_until.is_(None), batches.c.lease_until <= now),
                    )
                    .limit(limit)
                )
            ).mappings()
            return [Batch(**dict(r)) for r in expired], [Batch(**dict(r)) for r in stale]

    async def inflight_for_devices(self, device_ids: Sequence[str]) -> dict[str, Action]:
        """The action holding each of ``device_ids`` (one query)."""
        if not device_ids:
            return {}
        async with self.store.engine.connect() as conn:
            found = (
                (await conn.execute(actions.select().where(actions.c.inflight_device.in_(list(device_ids)))))
                .mappings()
                .all()
            )
        return {str(r["inflight_device"]): Action(**dict(r)) for r in found}

    async def awaiting(self, tenant_id: str, limit: int = 20) -> list[Batch]:
        """Bulk requests waiting for a second person (``pending``)."""
        async with self.store.engine.connect() as conn:
            found = (
                (
                    await conn.execute(
                        batches.select()
                        .where(batches.c.state == AWAITING_APPROVAL, batches.c.tenant_id == tenant_id)
                        .order_by(batches.c.created_at.asc())
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [Batch(**dict(r)) for r in found]

    async def for_requester(self, requester_id: str, limit: int = 10) -> list[Batch]:
        async with self.store.engine.connect() as conn:
            found = (
                (
                    await conn.execute(
                        batches.select()
                        .where(batches.c.requester_id == requester_id)
                        .order_by(batches.c.created_at.desc())
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [Batch(**dict(r)) for r in found]


def _row(action: Action) -> dict[str, Any]:
    values = {k: v for k, v in action.__dict__.items() if k in {c.name for c in actions.columns}}
    values["inflight_device"] = action.device_id if action.state in INFLIGHT_STATES else None
    return values
