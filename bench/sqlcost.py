"""CPU per INSERT: values baked into the statement (``table.insert().values(**row)``, as ``bot/store.py`` and
``bot/audit.py`` write them) vs the same row passed as execution parameters (``conn.execute(table.insert(), row)``).

Both on the bot's own tables (:mod:`bot.store`), in-memory SQLite, synchronous SQLAlchemy, this process's CPU
(``time.process_time``) per row including the INSERT itself. SQLAlchemy caches the compiled statement either way; what
differs is that ``.values(**row)`` builds a new statement with one coerced bound parameter per column on every call
and then extracts those values again at execution. Used by ``bench.run`` to ground a bot-side recommendation.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bot.store import _ACTION_FIELDS, REQUESTED, Action, actions, audit_events, metadata


def _action_row(i: int) -> dict[str, Any]:
    now = time.time()
    device_id = f"sqlcost-device-{i:06d}"
    action = Action(
        id=secrets.token_urlsafe(18),
        tenant_id="00000000-0000-0000-0000-0000000000001",
        state=REQUESTED,
        requester_id="00000000-0000-0000-0000-0000000000020",
        requester_name="Alex Wilber",
        requester_mri="29:00000000-0000-0000-0000-0000000000020",
        device_id=device_id,
        device_name=f"SQLCOST-{i:06d}",
        device_serial=f"SQLCOST{i:06d}",
        device_json=json.dumps({"id": device_id, "name": f"SQLCOST-{i:06d}"}),
        conversation_id=f"a:1personal-sqlcost-{i}",
        conversation_ref="{}",
        created_at=now,
        updated_at=now,
        expires_at=now + 900,
    )
    return {k: v for k, v in action.__dict__.items() if k in _ACTION_FIELDS}


def _audit_row(i: int) -> dict[str, Any]:
    return {
        "seq": i,
        "ts": "2026-01-01T00:00:00.000000Z",
        "event": "requested",
        "action_id": secrets.token_urlsafe(18),
        "actor_id": "00000000-0000-0000-0000-0000000000020",
        "actor_name": "Alex Wilber",
        "device_id": f"sqlcost-device-{i:06d}",
        "device_name": f"SQLCOST-{i:06d}",
        "device_serial": f"SQLCOST{i:06d}",
        "reason": "retiring_device",
        "conversation_id": f"a:1personal-sqlcost-{i}",
        "details": "{}",
        "prev_hash": "0" * 64,
        "hash": "1" * 64,
    }


def _per_row_us(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]], baked: bool) -> float:
    insert: Callable[[sa.Connection, dict[str, Any]], Any]
    if baked:

        def insert(conn: sa.Connection, row: dict[str, Any]) -> Any:
            return conn.execute(table.insert().values(**row))
    else:

        def insert(conn: sa.Connection, row: dict[str, Any]) -> Any:
            return conn.execute(table.insert(), row)

    with engine.begin() as conn:
        insert(conn, rows[0])  # compile and cache outside the timing
        began = time.process_time()
        for row in rows[1:]:
            insert(conn, row)
        return (time.process_time() - began) / (len(rows) - 1) * 1e6


def compare(n: int = 1000, rounds: int = 3) -> dict[str, Any]:
    """Median over ``rounds`` of the CPU µs per row, for the action row (35 columns) and the audit row (14)."""
    out: dict[str, Any] = {"rows": n, "rounds": rounds}
    for name, table, make in (("action_insert", actions, _action_row), ("audit_insert", audit_events, _audit_row)):
        baked: list[float] = []
        params: list[float] = []
        for r in range(rounds):
            for mode, sink in ((True, baked), (False, params)):
                engine = sa.create_engine("sqlite://")
                metadata.create_all(engine)
                rows = [make(r * 10 * n + i + (n if mode else 0) + 1) for i in range(n)]
                sink.append(_per_row_us(engine, table, rows, mode))
                engine.dispose()
        out[name] = {
            "columns": len(table.columns),
            "values_us_per_row": round(sorted(baked)[len(baked) // 2], 1),
            "params_us_per_row": round(sorted(params)[len(params) // 2], 1),
        }
    return out
