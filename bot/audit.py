"""Append-only, keyed hash-chained audit trail.

Each row's ``hash`` is HMAC-SHA256, keyed with ``AUDIT_KEY``, over the previous row's hash and the row's own
canonical JSON, and rows are numbered without gaps (``seq``). :func:`AuditLog.check` recomputes the chain, so an
edited, inserted or deleted row is detected — and, because the hash is keyed, someone who can write to the
database but does not hold the key cannot recompute the chain after an edit. What the chain alone cannot show
is a trimmed tail: the *head* (``seq:hash`` of the newest row) is therefore published outside the database, in
every ``audit`` log line and by ``python app.py audit head``, and ``audit verify --head SEQ:HASH`` checks the
stored chain against a head published earlier.

Rows written before the key existed (``hash_version`` 1, plain SHA-256) are accepted only as the start of the
chain and only once a keyed row follows them (:meth:`AuditLog.seal` appends one at start-up).

Appends from several instances race on ``seq`` (primary key): the loser re-reads the head and tries again, so
the chain never forks.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store import Action, InTransaction, RowsThen, Store, audit_events, serialise_writers

log = logging.getLogger("bot.audit")

GENESIS = "0" * 64
#: ``hash_version`` values: plain SHA-256 (rows from before ``AUDIT_KEY``), HMAC-SHA256 keyed with ``AUDIT_KEY``.
HASH_UNKEYED = 1
HASH_HMAC = 2
EVENTS = (
    "requested",
    "denied",
    "confirmed",
    "approved",
    "rejected",
    "submitted",
    "succeeded",
    "completed",  # Intune's own record says the deprovision was carried out
    "not_confirmed",  # Intune did not report an outcome within COMPLETION_TIMEOUT
    "resolved",  # an operator settled an action (`app.py actions resolve`)
    "failed",
    "unknown",
    "cancelled",
    "expired",
    "superseded",  # a newer request for the device replaced it, or another request for it was confirmed
    "dropped",  # a device of a bulk request left out at its confirm or approval (changed, not approved, taken)
    "sealed",  # the first keyed row after rows written before AUDIT_KEY existed (see AuditLog.seal)
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
_HMAC_DOMAIN = b"deprovision-bot audit v2\n"
#: A CSV cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice and Google Sheets.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_HEAD_RE = re.compile(r"^(\d+):([0-9a-f]{64})$")
#: Where the development key lives for a database that is not a SQLite file (PostgreSQL).
DEV_KEY_FALLBACK = Path("data") / "audit-dev.key"


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


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps({k: row.get(k) for k in _HASHED}, sort_keys=True, separators=(",", ":"))


def _digest(prev_hash: str, row: dict[str, Any]) -> str:
    """``hash_version`` 1: unkeyed SHA-256 — anyone can recompute it (rows from before ``AUDIT_KEY``)."""
    return hashlib.sha256((prev_hash + "\n" + _canonical(row)).encode()).hexdigest()


def _mac(key: bytes, prev_hash: str, row: dict[str, Any]) -> str:
    """``hash_version`` 2: HMAC-SHA256 keyed with ``AUDIT_KEY``."""
    message = _HMAC_DOMAIN + (prev_hash + "\n" + _canonical(row)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# -- the key ------------------------------------------------------------------------------------------------


class AuditKeyMissing(Exception):
    """No ``AUDIT_KEY`` and no development key file to verify with."""


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL (``None`` for PostgreSQL or an in-memory database)."""
    if not database_url.startswith("sqlite"):
        return None
    path = database_url.split(":///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" and "://" not in path else None


def development_key_path(database_url: str) -> Path:
    """``<database file>.audit.key`` beside a SQLite file; ``./data/audit-dev.key`` otherwise."""
    path = sqlite_path(database_url)
    return path.with_name(path.name + ".audit.key") if path else DEV_KEY_FALLBACK


def load_audit_key(audit_key: str | None, database_url: str, *, create: bool = True) -> bytes:
    """``AUDIT_KEY`` as bytes, or — when it is not set (never in production) — the development key file.

    The development key is 32 random bytes (hex) in a file created owner-only (0600) beside the database; with
    ``create`` it is made on first use, race-free between processes. Blocking file work: call it in a thread
    from async code.
    """
    if audit_key:
        return audit_key.encode()
    path = development_key_path(database_url)
    if not path.is_file():
        if not create:
            raise AuditKeyMissing(f"AUDIT_KEY is not set and there is no development key at {path}")
        _create_key_file(path)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise AuditKeyMissing(f"the development key at {path} is empty or damaged; set AUDIT_KEY")
    log.warning(
        "AUDIT_KEY is not set: the audit trail is keyed with the development key in %s "
        "(for local use only; APP_ENV=production requires AUDIT_KEY)",
        path,
    )
    return key.encode()


def _create_key_file(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        # link() never replaces an existing file: the first process to get here wins, the others read its key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# -- heads and verification ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """The newest row of the chain: publish it outside the database to detect a trimmed or replaced chain."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def parse_head(text: str) -> Head:
    """``SEQ:HASH`` as printed by ``audit head`` and logged with every audit line."""
    match = _HEAD_RE.match(text.strip().lower())
    if not match:
        raise ValueError(f"head: expected SEQ:HASH (a row number, a colon, 64 hex digits), got {text!r}")
    return Head(int(match.group(1)), match.group(2))


@dataclass
class Verification:
    ok: bool
    problems: list[str]
    count: int = 0
    head: Head = field(default_factory=lambda: Head(0, GENESIS))
    unkeyed: int = 0


def _neutralise(value: Any) -> Any:
    """A CSV cell that a spreadsheet would run as a formula gets a leading ``'``."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


@dataclass(frozen=True)
class Entry:
    """An audit event not yet appended (see :meth:`AuditLog.entry`)."""

    event: str
    actor: Actor | None
    action: Action | None
    device: dict[str, Any] | None
    reason: str | None
    conversation_id: str | None
    details: dict[str, Any]


def _row(entry: Entry, changed: Action | None) -> dict[str, Any]:
    """The stored columns of ``entry`` except its place in the chain; ``changed`` stands in for a missing action."""
    action = entry.action or changed
    device = entry.device or (action.device if action else {})
    reason = entry.reason if entry.reason is not None else (action.reason if action else None)
    details = dict(entry.details)
    if action is not None and action.batch_id:
        details.setdefault("batch_id", action.batch_id)  # every device of a bulk request names its batch
    return {
        "ts": _now(),
        "event": entry.event,
        "action_id": action.id if action else None,
        "actor_id": entry.actor.id if entry.actor else None,
        "actor_name": entry.actor.name if entry.actor else None,
        "device_id": device.get("id") or (action.device_id if action else None),
        "device_name": device.get("name") or (action.device_name if action else None),
        "device_serial": device.get("serial") or (action.device_serial if action else None),
        "reason": reason,
        "conversation_id": entry.conversation_id or (action.conversation_id if action else None),
        "details": json.dumps({k: v for k, v in details.items() if v is not None}, sort_keys=True, default=str),
    }


def _chain(key: bytes, head: tuple[int, str], rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` numbered and keyed after ``head``."""
    seq, prev = head
    chained = []
    for row in rows:
        seq += 1
        full = {**row, "seq": seq, "prev_hash": prev, "hash_version": HASH_HMAC}
        full["hash"] = prev = _mac(key, prev, full)
        chained.append(full)
    return chained


def _guarded_insert() -> sa.Insert:
    """``INSERT … SELECT`` of one row that adds it only if the chain's newest ``hash`` is still its ``prev_hash``."""
    newest = sa.select(audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1).scalar_subquery()
    values = {c.name: sa.bindparam(c.name, type_=c.type) for c in audit_events.columns}
    row = sa.select(*values.values()).where(sa.func.coalesce(newest, GENESIS) == values["prev_hash"])
    return audit_events.insert().from_select(list(values), row)


_GUARDED_INSERT = _guarded_insert()


async def _read_head(conn: AsyncConnection) -> tuple[int, str]:
    row = (
        await conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.hash).order_by(audit_events.c.seq.desc()).limit(1)
        )
    ).first()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


class AuditLog:
    """The audit trail. ``key`` (from :func:`load_audit_key`) is needed to append and to verify, not to read."""

    def __init__(self, store: Store, key: bytes | None = None) -> None:
        self._store = store
        self._key = key

    def _require_key(self) -> bytes:
        if not self._key:
            raise RuntimeError("the audit key is needed to append to or verify the audit trail")
        return self._key

    def entry(
        self,
        event: str,
        *,
        actor: Actor | None,
        action: Action | None = None,
        device: dict[str, Any] | None = None,
        reason: str | None = None,
        conversation_id: str | None = None,
        **details: Any,
    ) -> Entry:
        """One event to append (by :meth:`record`, or with a state change: :meth:`then`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        return Entry(event, actor, action, device, reason, conversation_id, details)

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
        """Append one event in its own transaction; returns its sequence number."""
        entry = self.entry(
            event, actor=actor, action=action, device=device, reason=reason, conversation_id=conversation_id, **details
        )
        return await self.record_entry(entry)

    async def record_entry(self, entry: Entry) -> int:
        """Append ``entry`` (from :meth:`entry`) in its own transaction; returns its sequence number."""
        return int((await self.record_entries([entry]))[0]["seq"])

    async def record_entries(self, entries: Sequence[Entry]) -> list[dict[str, Any]]:
        """Append ``entries`` together in their own transaction; returns the rows."""
        for _attempt in range(50):
            try:
                async with self._store.write() as conn:
                    rows = await self.append(conn, entries)
            except IntegrityError:
                continue  # another writer took this seq (a database without the lock): re-read the head
            self.published(rows)
            return rows
        raise RuntimeError("could not append to the audit trail")

    def then(self, *entries: Entry) -> InTransaction:
        """``entries`` appended inside a state change's transaction (``Store.transition(..., then=...)``); an entry
        without an action is about the changed action. Their log lines follow the commit."""

        async def append(conn: AsyncConnection, action: Action) -> Callable[[], None]:
            rows = await self.append(conn, entries, action)
            return lambda: self.published(rows)

        return append

    def then_rows(self, entries_for: Callable[[list[Action]], Sequence[Entry]]) -> RowsThen:
        """Like :meth:`then`, for a change of many rows at once (a bulk request's devices): ``entries_for`` gets the
        rows the change moved, inside its transaction, and says what to append."""

        async def append(conn: AsyncConnection, rows: list[Action]) -> Callable[[], None]:
            appended = await self.append(conn, entries_for(rows))
            return lambda: self.published(appended)

        return append

    async def append(
        self, conn: AsyncConnection, entries: Sequence[Entry], action: Action | None = None
    ) -> list[dict[str, Any]]:
        """Append ``entries`` within the caller's write transaction (one INSERT for all of them); returns the rows.

        One appender at a time, across instances, so the chain never forks. On PostgreSQL the head is read under a
        transaction-scoped advisory lock, every time (another instance may have appended). On SQLite this
        process's writers are queued (``Store.write``), so the head it committed last is known
        (:attr:`Store.audit_head`) and not read before the INSERT; the INSERT itself checks it (each row is added
        only if the newest stored hash is its ``prev_hash``), so when another process appended meanwhile (``app.py
        actions resolve``) nothing is inserted and the head is read under the write lock and the rows chained
        again, within the same transaction. (No failing INSERT on purpose: aiosqlite leaves a failed statement's
        cursor to the garbage collector, whose finalizer can block the event loop on the connection's mutex while
        that connection waits for SQLite's lock.)
        """
        key = self._require_key()
        rows = [_row(item, action) for item in entries]
        if not rows:
            return []
        cached = self._store.caches_audit_head
        head = self._store.audit_head if cached else None
        for _attempt in range(50):
            if head is None:
                await serialise_writers(conn, _AUDIT_APPEND_LOCK)
                head = await _read_head(conn)
            chained = _chain(key, head, rows)
            if not cached:
                await conn.execute(audit_events.insert(), chained)
                return chained
            # Each row only if the chain's newest hash is still its prev_hash: all or none of them.
            if (await conn.execute(_GUARDED_INSERT, chained)).rowcount == len(chained):
                self._store.audit_head = (chained[-1]["seq"], chained[-1]["hash"])
                return chained
            head = None  # another process appended meanwhile
        raise RuntimeError("could not append to the audit trail")

    @staticmethod
    def published(rows: Sequence[dict[str, Any]]) -> None:
        """Log committed rows. The head travels with every audit line, so shipped logs can later prove a trimmed
        or replaced chain (call only after the commit: a logged head must exist)."""
        for row in rows:
            log.info(
                "audit",
                extra={
                    "event": row["event"],
                    "seq": row["seq"],
                    "action": row["action_id"],
                    "actor": row["actor_id"],
                    "head": f"{row['seq']}:{row['hash']}",
                },
            )

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

    async def head(self) -> Head:
        """``seq:hash`` of the newest row (``0:000…`` for an empty trail)."""
        async with self._store.engine.connect() as conn:
            return Head(*await _read_head(conn))

    async def seal(self) -> int | None:
        """If the newest row was written before ``AUDIT_KEY`` existed, append a keyed ``sealed`` row after it.

        Its HMAC covers the unkeyed rows' hash, so from then on they can no longer be edited or trimmed without
        the key. Called at start-up and by ``migrate``; returns the new row's ``seq`` or ``None``.
        """
        async with self._store.engine.connect() as conn:
            last = (
                await conn.execute(
                    sa.select(audit_events.c.seq, audit_events.c.hash_version)
                    .order_by(audit_events.c.seq.desc())
                    .limit(1)
                )
            ).first()
        if last is None or last[1] != HASH_UNKEYED:
            return None
        return await self.record("sealed", actor=None, unkeyed_rows=int(last[0]))

    async def verify(self, heads: Iterable[Head] = ()) -> tuple[bool, list[str]]:
        """Recompute the chain; return (ok, problems). See :meth:`check`."""
        result = await self.check(heads)
        return result.ok, result.problems

    async def check(self, heads: Iterable[Head] = ()) -> Verification:
        """Recompute the keyed chain and compare it with heads published earlier.

        A published head ``seq:hash`` must still be in the chain with the same hash: a missing row ``seq`` means
        the tail was trimmed, a different hash that the chain was replaced or rewritten from there on.
        """
        key = self._require_key()
        published = {head.seq: head.hash for head in heads}
        problems: list[str] = []
        bad_macs: list[int] = []
        prev, expected_seq, count, unkeyed, keyed = GENESIS, 1, 0, 0, 0
        last = Head(0, GENESIS)
        async for row in self.rows():
            seq, count = row["seq"], count + 1
            if seq != expected_seq:
                problems.append(f"row {expected_seq}: missing (next row is {seq}) — a row was deleted")
            if row["prev_hash"] != prev:
                problems.append(f"row {seq}: prev_hash does not match row {seq - 1} — rows were deleted or reordered")
            version = row["hash_version"]
            if version == HASH_HMAC:
                keyed += 1
                if not hmac.compare_digest(_mac(key, row["prev_hash"], row), row["hash"]):
                    bad_macs.append(seq)
                    problems.append(f"row {seq}: contents do not match its hash — the row was edited")
            elif version == HASH_UNKEYED and not keyed:
                unkeyed += 1
                if _digest(row["prev_hash"], row) != row["hash"]:
                    problems.append(f"row {seq}: contents do not match its hash — the row was edited")
            elif version == HASH_UNKEYED:
                problems.append(
                    f"row {seq}: not keyed with AUDIT_KEY although earlier rows are — the chain was rewritten"
                )
            else:
                problems.append(f"row {seq}: unknown hash_version {version!r}")
            if seq in published and published[seq] != row["hash"]:
                problems.append(
                    f"row {seq}: differs from the published head {seq}:{published[seq]} — the chain was replaced"
                )
            prev, expected_seq, last = row["hash"], seq + 1, Head(seq, row["hash"])
        if keyed and len(bad_macs) == keyed and keyed > 1:
            problems = [p for p in problems if not p.endswith("contents do not match its hash — the row was edited")]
            problems.append(
                f"none of the {keyed} keyed rows matches its hash: AUDIT_KEY is not the key this trail was written "
                "with, or every row was rewritten"
            )
        if unkeyed and not keyed:
            problems.append(
                f"rows 1–{unkeyed} were written without AUDIT_KEY and no keyed row follows them — start the bot or "
                "run `python app.py migrate` to seal them"
            )
        for seq, digest in sorted(published.items()):
            if seq > last.seq and not (seq == 0 and digest == GENESIS):
                problems.append(
                    f"the trail ends at row {last.seq} but head {seq}:{digest} was published — rows were deleted "
                    "from the end"
                )
            elif seq == 0 and digest != GENESIS:
                problems.append(f"head 0:{digest} is not the empty trail's head 0:{GENESIS}")
        return Verification(not problems, problems, count, last, unkeyed)

    async def export(self, fmt: str, since: str | None = None) -> str:
        """``csv`` or ``jsonl`` text of the events since ``since``; raises ValueError for a bad format or date.

        CSV cells that a spreadsheet would evaluate (starting with ``= + - @``, tab or CR) are prefixed with ``'``;
        the JSONL export carries the stored values unchanged (verify from the database, not from a CSV).
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r} (expected one of {', '.join(EXPORT_FORMATS)})")
        rows = [row async for row in self.rows(since)]
        if fmt == "jsonl":
            return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[c.name for c in audit_events.columns])
        writer.writeheader()
        writer.writerows({k: _neutralise(v) for k, v in row.items()} for row in rows)
        return buffer.getvalue()
