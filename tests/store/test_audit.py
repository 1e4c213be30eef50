"""The hash-chained audit trail on SQLite and PostgreSQL: verification, tamper detection, export, the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.audit import EVENTS, GENESIS, Actor, AuditLog
from bot.store import Store, audit_events
from simulator import Simulator
from tests.harness import ALEX, env_for
from tests.store.conftest import make_action

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [c.name for c in audit_events.columns]


@pytest.fixture
def audit(store: Store) -> AuditLog:
    return AuditLog(store)


async def _fill(audit: AuditLog, count: int = 5) -> list[int]:
    action = make_action()
    events = ["requested", "confirmed", "submitted", "succeeded", "denied", "failed", "unknown", "cancelled"]
    return [
        await audit.record(events[i % len(events)], actor=Actor(ALEX.aad_id, ALEX.name), action=action, n=i)
        for i in range(count)
    ]


async def _sql(store: Store, statement: str, **params: Any) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text(statement), params)


async def _rows(audit: AuditLog) -> list[dict[str, Any]]:
    return [row async for row in audit.rows()]


# -- append and verify --------------------------------------------------------------------------------------


async def test_append_builds_a_valid_chain(audit: AuditLog) -> None:
    assert await audit.verify() == (True, [])  # an empty trail is valid
    with pytest.raises(ValueError, match="unknown audit event"):
        await audit.record("deleted", actor=None)
    assert await _rows(audit) == []
    assert "succeeded" in EVENTS
    action = make_action(reason="retiring_device")
    seqs = [
        await audit.record("requested", actor=Actor(ALEX.aad_id, ALEX.name), action=action, decision={"role": "x"}),
        await audit.record("confirmed", actor=Actor(ALEX.aad_id, ALEX.name), action=action, ignored=None),
        await audit.record("expired", actor=None, action=action),
        await audit.record("denied", actor=Actor("u"), device={"id": "d", "name": "n", "serial": "s"}, reason="r"),
    ]
    assert seqs == [1, 2, 3, 4]
    rows = await _rows(audit)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    first = rows[0]
    assert (first["event"], first["action_id"], first["actor_id"], first["actor_name"]) == (
        "requested",
        action.id,
        ALEX.aad_id,
        ALEX.name,
    )
    assert (first["device_id"], first["device_serial"], first["reason"]) == (
        action.device_id,
        action.device_serial,
        "retiring_device",
    )
    assert json.loads(first["details"]) == {"decision": {"role": "x"}}
    assert json.loads(rows[1]["details"]) == {}  # None values are dropped
    assert rows[2]["actor_id"] is None
    assert (rows[3]["device_id"], rows[3]["device_name"], rows[3]["reason"]) == ("d", "n", "r")
    assert [r["seq"] for r in await audit.for_action(action.id)] == [1, 2, 3]
    assert await audit.verify() == (True, [])


async def test_concurrent_appends_keep_a_gapless_chain(audit: AuditLog) -> None:
    action = make_action()
    seqs = await asyncio.gather(
        *(audit.record("submitted", actor=Actor(f"actor-{i}"), action=action, n=i) for i in range(50))
    )
    assert sorted(seqs) == list(range(1, 51))
    rows = await _rows(audit)
    assert [r["seq"] for r in rows] == list(range(1, 51))
    assert sorted(json.loads(r["details"])["n"] for r in rows) == list(range(50))
    assert await audit.verify() == (True, [])


async def test_appends_from_two_stores_share_one_chain(database_url: str) -> None:
    """Two instances (two engines) appending at once still produce one chain."""
    first, second = await Store.open(database_url), await Store.open(database_url)
    try:
        logs = [AuditLog(first), AuditLog(second)]
        seqs = await asyncio.gather(*(logs[i % 2].record("requested", actor=Actor(str(i))) for i in range(20)))
        assert sorted(seqs) == list(range(1, 21))
        assert await logs[0].verify() == (True, [])
    finally:
        await first.close()
        await second.close()


# -- tampering ----------------------------------------------------------------------------------------------


async def test_an_edited_row_is_detected(store: Store, audit: AuditLog) -> None:
    await _fill(audit)
    original = next(r for r in await _rows(audit) if r["seq"] == 3)
    edits = {"actor_name": "Mallory", "details": '{"n": 99}', "event": "cancelled", "ts": "2020-01-01T00:00:00"}
    for column, value in edits.items():
        await _sql(store, f"UPDATE audit_events SET {column} = :value WHERE seq = 3", value=value)
        ok, problems = await audit.verify()
        assert not ok, column
        assert problems == ["row 3: contents do not match its hash — the row was edited"], column
        await _sql(store, f"UPDATE audit_events SET {column} = :value WHERE seq = 3", value=original[column])
        assert await audit.verify() == (True, []), column


async def test_an_edited_row_with_a_recomputed_hash_breaks_the_next_link(store: Store, audit: AuditLog) -> None:
    from bot.audit import _digest

    await _fill(audit)
    row = next(r for r in await _rows(audit) if r["seq"] == 2)
    row["actor_name"] = "Mallory"
    await _sql(
        store,
        "UPDATE audit_events SET actor_name = 'Mallory', hash = :hash WHERE seq = 2",
        hash=_digest(row["prev_hash"], row),
    )
    ok, problems = await audit.verify()
    assert not ok
    assert any(p.startswith("row 3: prev_hash") for p in problems), problems


async def test_a_deleted_middle_row_is_detected(store: Store, audit: AuditLog) -> None:
    await _fill(audit)
    await _sql(store, "DELETE FROM audit_events WHERE seq = 3")
    ok, problems = await audit.verify()
    assert not ok
    assert any("row 3: missing" in p for p in problems), problems
    assert any(p.startswith("row 4: prev_hash") for p in problems), problems


async def test_deleting_the_first_row_is_detected(store: Store, audit: AuditLog) -> None:
    await _fill(audit)
    await _sql(store, "DELETE FROM audit_events WHERE seq = 1")
    ok, problems = await audit.verify()
    assert not ok and any("row 1: missing" in p for p in problems), problems


async def test_reordered_rows_are_detected(store: Store, audit: AuditLog) -> None:
    await _fill(audit)
    await _sql(store, "UPDATE audit_events SET seq = -1 WHERE seq = 2")
    await _sql(store, "UPDATE audit_events SET seq = 2 WHERE seq = 3")
    await _sql(store, "UPDATE audit_events SET seq = 3 WHERE seq = -1")
    ok, problems = await audit.verify()
    assert not ok
    assert any(p.startswith("row 2:") for p in problems) and any(p.startswith("row 3:") for p in problems), problems


async def test_an_inserted_row_is_detected(store: Store, audit: AuditLog) -> None:
    """A forger who renumbers the tail and inserts a well-formed row still breaks the chain after it."""
    from bot.audit import _digest

    await _fill(audit)
    rows = await _rows(audit)
    await _sql(store, "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 3")
    await _sql(store, "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000")
    forged = {**rows[1], "seq": 3, "event": "cancelled", "prev_hash": rows[1]["hash"]}
    forged["hash"] = _digest(forged["prev_hash"], forged)
    async with store.engine.begin() as conn:
        await conn.execute(audit_events.insert().values(**forged))
    assert [r["seq"] for r in await _rows(audit)] == [1, 2, 3, 4, 5, 6]
    ok, problems = await audit.verify()
    assert not ok
    assert any(p.startswith("row 4:") for p in problems), problems
    assert not any(p.startswith(("row 1:", "row 2:", "row 3:")) for p in problems), problems


async def test_a_forged_row_appended_without_the_chain_is_detected(store: Store, audit: AuditLog) -> None:
    await _fill(audit, 3)
    rows = await _rows(audit)
    forged = {**rows[-1], "seq": 4, "prev_hash": GENESIS, "hash": "f" * 64}
    async with store.engine.begin() as conn:
        await conn.execute(audit_events.insert().values(**forged))
    ok, problems = await audit.verify()
    assert not ok and all(p.startswith("row 4:") for p in problems) and len(problems) == 2, problems


# -- export -------------------------------------------------------------------------------------------------


async def test_export_csv_and_jsonl(audit: AuditLog) -> None:
    await _fill(audit, 4)
    rows = await _rows(audit)

    lines = (await audit.export("jsonl")).splitlines()
    assert [json.loads(line) for line in lines] == rows

    exported = list(csv.DictReader(io.StringIO(await audit.export("csv"))))
    assert [r["seq"] for r in exported] == ["1", "2", "3", "4"]
    assert list(exported[0]) == COLUMNS
    assert [r["hash"] for r in exported] == [r["hash"] for r in rows]
    assert exported[0]["details"] == rows[0]["details"]

    with pytest.raises(ValueError, match="format"):
        await audit.export("xml")


async def test_export_since(store: Store, audit: AuditLog) -> None:
    await _fill(audit, 3)
    await asyncio.sleep(0.02)
    cutoff = datetime.now(UTC)
    await asyncio.sleep(0.02)
    await _fill(audit, 2)

    def seqs(text: str) -> list[int]:
        return [json.loads(line)["seq"] for line in text.splitlines()]

    assert seqs(await audit.export("jsonl", cutoff.isoformat())) == [4, 5]
    assert seqs(await audit.export("jsonl", cutoff.isoformat().replace("+00:00", "Z"))) == [4, 5]
    naive_utc = cutoff.replace(tzinfo=None).isoformat(sep=" ")
    assert seqs(await audit.export("jsonl", naive_utc)) == [4, 5]
    in_paris = cutoff.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert seqs(await audit.export("jsonl", in_paris)) == [4, 5]
    today = cutoff.date().isoformat()
    assert seqs(await audit.export("jsonl", today)) == [1, 2, 3, 4, 5]
    tomorrow = (cutoff + timedelta(days=1)).date().isoformat()
    assert await audit.export("jsonl", tomorrow) == ""
    assert seqs(await audit.export("jsonl", "2000-01-01")) == [1, 2, 3, 4, 5]
    assert len(list(csv.DictReader(io.StringIO(await audit.export("csv", cutoff.isoformat()))))) == 2
    with pytest.raises(ValueError, match="since"):
        await audit.export("jsonl", "last tuesday")


# -- the CLI ------------------------------------------------------------------------------------------------


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "app.py",
        *args,
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_verify_and_export(sim: Simulator, database_url: str, store: Store, audit: AuditLog) -> None:
    await _fill(audit, 3)
    await asyncio.sleep(0.02)
    cutoff = datetime.now(UTC).isoformat()
    await asyncio.sleep(0.02)
    await _fill(audit, 2)
    env = env_for(sim, database_url)

    (rc, out, err), (csv_rc, csv_out, csv_err), (jl_rc, jl_out, jl_err) = await asyncio.gather(
        _cli(env, "audit", "verify"),
        _cli(env, "audit", "export", "--format", "csv"),
        _cli(env, "audit", "export", "--since", cutoff, "--format", "jsonl"),
    )
    assert (rc, out.strip()) == (0, "audit trail OK"), (out, err)
    assert csv_rc == 0, csv_err
    exported = list(csv.DictReader(io.StringIO(csv_out)))
    assert [r["seq"] for r in exported] == ["1", "2", "3", "4", "5"]
    assert list(exported[0]) == COLUMNS
    assert jl_rc == 0, jl_err
    assert [json.loads(line)["seq"] for line in jl_out.splitlines()] == [4, 5]

    await _sql(store, "UPDATE audit_events SET reason = 'covering tracks' WHERE seq = 2")
    rc, out, err = await _cli(env, "audit", "verify")
    assert rc == 1, (out, err)
    assert out.splitlines() == [
        "row 2: contents do not match its hash — the row was edited",
        "audit trail TAMPERED: 1 problem(s)",
    ]
