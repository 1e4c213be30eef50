"""Append-only, hash-chained audit trail.

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's own canonical JSON, and rows are
numbered without gaps (``seq``). :func:`verify` recomputes the chain, so an edited, inserted or deleted row
(anywhere but the very end) is detected. Appends from several instances race on ``seq`` (primary key): the
loser re-reads the head and tries again, so the chain never forks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from bot.store import Action, Store, audit_events, serialise_writers

log = logging.getLogger("bot.audit")

GENESIS = "0" * 64
EVENTS = (
    "requested",
    "denied",
    "confirmed",
    "approved",
    "rejected",
    "submitted",
    "succeeded",
    "failed",
    "unknown",
    "cancelled",
    "expired",
)
_HASHED = (
    "seq",
    "ts",
    "event",
    "action_id",
    "actor_id",
    "actor_name",
    "device_id",
    "device_name",
    "device_serial",
    "reason",
    "conversation_id",
    "details",
)


EXPORT_FORMATS = ("csv", "jsonl")
_AUDIT_APPEND_LOCK = 7_272_002


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(moment: datetime) -> str:
    """The one text form of ``ts``: UTC, millisecond precision — fixed width, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def normalise_since(since: str | None) -> str | None:
    """``--since`` as the stored ``ts`` text form, so the comparison is by time, not by spelling.

    Accepts an ISO date (``2026-11-01``: midnight UTC) or timestamp, with ``Z``, an offset, or none (UTC).
    """
    if since is None or not since.strip():
        return None
    try:
        moment = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ValueError(f"since: expected an ISO date or timestamp such as 2026-11-01, got {since!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _stamp(moment)


@dataclass(frozen=True)
class Actor:
    id: str
    name: str = ""


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    canonical = json.dumps({k: row.get(k) for k in _HASHED}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + "\n" + canonical).encode()).hexdigest()


class AuditLog:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def record(
        self,
        event: str,
        *,
        actor: Actor | None,
        action: Action | None = None,
        device: dict[str, Any] | None = None,
        reason: str | None = None,
        conversation_id: str | None = None,
        **details: Any,
    ) -> int:
        """Append one event; returns its sequence number."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        device = device or (action.device if action else {})
        row: dict[str, Any] = {
            "ts": _now(),
            "event": event,
            "action_id": action.id if action else None,
            "actor_id": actor.id if actor else None,
            "actor_name": actor.name if actor else None,
            "device_id": device.get("id") or (action.device_id if action else None),
            "device_name": device.get("name") or (action.device_name if action else None),
            "device_serial": device.get("serial") or (action.device_serial if action else None),
            "reason": reason if reason is not None else (action.reason if action else None),
            "conversation_id": conversation_id or (action.conversation_id if action else None),
            "details": json.dumps({k: v for k, v in details.items() if v is not None}, sort_keys=True, default=str),
        }
        for _attempt in range(50):
            try:
                async with self._store.write() as conn:
                    # One appender at a time (across instances): read the head and insert under the same lock,
                    # so the chain never forks and appends don't pile up retrying on ``seq``.
                    await serialise_writers(conn, _AUDIT_APPEND_LOCK)
                    head = (
                        await conn.execute(
                            sa.select(audit_events.c.seq, audit_events.c.hash)
                            .order_by(audit_events.c.seq.desc())
                            .limit(1)
                        )
                    ).first()
                    seq = (head[0] + 1) if head else 1
                    prev = head[1] if head else GENESIS
                    full = {**row, "seq": seq, "prev_hash": prev}
                    full["hash"] = _digest(prev, full)
                    await conn.execute(audit_events.insert().values(**full))
            except IntegrityError:
                continue  # another writer took this seq (a database without the lock): re-read the head
            log.info(
                "audit",
                extra={"event": event, "seq": seq, "action": row["action_id"], "actor": row["actor_id"]},
            )
            return seq
        raise RuntimeError("could not append to the audit trail")

    async def rows(self, since: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Events in chain order; ``since`` (ISO date or timestamp, see :func:`normalise_since`) filters on ``ts``."""
        query = sa.select(audit_events).order_by(audit_events.c.seq)
        cutoff = normalise_since(since)
        if cutoff:
            query = query.where(audit_events.c.ts >= cutoff)
        async with self._store.engine.connect() as conn:
            result = await conn.stream(query)
            async for row in result.mappings():
                yield dict(row)

    async def for_action(self, action_id: str) -> list[dict[str, Any]]:
        async with self._store.engine.connect() as conn:
            result = await conn.execute(
                sa.select(audit_events).where(audit_events.c.action_id == action_id).order_by(audit_events.c.seq)
            )
            return [dict(r) for r in result.mappings()]

    async def verify(self) -> tuple[bool, list[str]]:
        """Recompute the chain; return (ok, problems)."""
        problems: list[str] = []
        prev, expected_seq = GENESIS, 1
        async for row in self.rows():
            seq = row["seq"]
            if seq != expected_seq:
                problems.append(f"row {expected_seq}: missing (next row is {seq}) — a row was deleted")
            if row["prev_hash"] != prev:
                problems.append(f"row {seq}: prev_hash does not match row {seq - 1} — rows were deleted or reordered")
            if _digest(row["prev_hash"], row) != row["hash"]:
                problems.append(f"row {seq}: contents do not match its hash — the row was edited")
            prev, expected_seq = row["hash"], seq + 1
        return not problems, problems

    async def export(self, fmt: str, since: str | None = None) -> str:
        """``csv`` or ``jsonl`` text of the events since ``since``; raises ValueError for a bad format or date."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(EXPORT_FORMATS)})")
        rows = [row async for row in self.rows(since)]
        if fmt == "jsonl":
            return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[c.name for c in audit_events.columns])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
