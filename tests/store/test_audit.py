"""The hash-chained audit trail on SQLite and PostgreSQL: verification, tamper detection, export, the CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.audit import EVENTS, GENESIS, Actor, AuditLog, load_audit_key
from bot.store import Store, audit_events
from simulator import Simulator
from tests.harness import ALEX, env_for
from tests.store.conftest import make_action

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [c.name for c in audit_events.columns]


@pytest.fixture
def audit(store: Store, database_url: str) -> AuditLog:
    """Keyed with the development key beside the database — the one the CLI finds without AUDIT_KEY."""
    return AuditLog(store, load_audit_key(None, database_url))


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
        key = load_audit_key(None, database_url)
        logs = [AuditLog(first, key), AuditLog(second, key)]
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
    """Recomputing one row's hash — even with the right key — still breaks the link from the next row."""
    from bot.audit import _mac

    await _fill(audit)
    row = next(r for r in await _rows(audit) if r["seq"] == 2)
    row["actor_name"] = "Mallory"
    await _sql(
        store,
        "UPDATE audit_events SET actor_name = 'Mallory', hash = :hash WHERE seq = 2",
        hash=_mac(audit._require_key(), row["prev_hash"], row),
    )
    ok, problems = await audit.verify()
    assert not ok
    assert problems == ["row 3: prev_hash does not match row 2 — rows were deleted or reordered"], problems


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
    """A forger who renumbers the tail and inserts a row with a well-formed (unkeyed) hash is detected."""
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
    assert problems[0] == "row 3: contents do not match its hash — the row was edited", problems
    assert "row 4: prev_hash does not match row 3 — rows were deleted or reordered" in problems
    assert not any(p.startswith(("row 1:", "row 2:")) for p in problems), problems


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


async def _cli(env: Mapping[str, str], *args: str, inherit: Mapping[str, str] = os.environ) -> tuple[int, str, str]:
    """``python app.py <args>`` with ``env`` over ``inherit`` (this process's environment unless told)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "app.py",
        *args,
        cwd=ROOT,
        env={**inherit, **env},
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
    head = await audit.head()
    assert (rc, out.strip()) == (0, f"audit trail OK: 5 entries checked, head {head}"), (out, err)
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
        f"audit trail TAMPERED: 1 problem(s); 5 entries checked, head {head}",
    ]


# -- the keyed chain, published heads, rows from before the key ---------------------------------------------

KEY = "k" * 16 + "-audit-key-for-tests-only-0123456789"


async def _rewrite(store: Store, rows: list[dict[str, Any]], hasher: Any, version: int) -> None:
    """What a forger with database access does: re-link and re-hash every row from the first given one."""
    prev = rows[0]["prev_hash"]
    for row in rows:
        row = {**row, "prev_hash": prev, "hash_version": version}
        row["hash"] = hasher(prev, row)
        await _sql(
            store,
            "UPDATE audit_events SET actor_name = :name, prev_hash = :prev, hash = :hash, hash_version = :version "
            "WHERE seq = :seq",
            name=row["actor_name"],
            prev=prev,
            hash=row["hash"],
            version=version,
            seq=row["seq"],
        )
        prev = str(row["hash"])


async def test_an_edited_row_with_the_chain_recomputed_without_the_key_is_detected(
    store: Store, audit: AuditLog
) -> None:
    from bot.audit import HASH_HMAC, HASH_UNKEYED, _digest, _mac

    await _fill(audit)
    rows = await _rows(audit)
    rows[1]["actor_name"] = "Mallory"

    # the old, unkeyed algorithm, rows still claiming to be keyed
    await _rewrite(store, rows[1:], _digest, HASH_HMAC)
    ok, problems = await audit.verify()
    assert not ok
    assert [p for p in problems if "contents do not match" in p] == [
        f"row {n}: contents do not match its hash — the row was edited" for n in (2, 3, 4, 5)
    ], problems

    # the whole chain re-marked as "written before the key existed" and recomputed from the start
    await _rewrite(store, rows, _digest, HASH_UNKEYED)
    ok, problems = await audit.verify()
    assert not ok
    assert problems == [
        "rows 1–5 were written without AUDIT_KEY and no keyed row follows them — start the bot or run "
        "`python app.py migrate` to seal them"
    ], problems

    # unkeyed rows after keyed ones
    await _rewrite(store, rows, lambda prev, row: _mac(audit._require_key(), prev, row), HASH_HMAC)
    await _rewrite(store, rows[3:], _digest, HASH_UNKEYED)
    ok, problems = await audit.verify()
    assert not ok
    assert "row 4: not keyed with AUDIT_KEY although earlier rows are — the chain was rewritten" in problems

    # recomputed with a key that is not AUDIT_KEY
    await _rewrite(store, rows, lambda prev, row: _mac(b"another key" * 4, prev, row), HASH_HMAC)
    ok, problems = await audit.verify()
    assert not ok
    assert problems == [
        "none of the 5 keyed rows matches its hash: AUDIT_KEY is not the key this trail was written with, "
        "or every row was rewritten"
    ], problems


async def test_a_wrong_key_fails_verify(store: Store, audit: AuditLog) -> None:
    await _fill(audit, 3)
    ok, problems = await AuditLog(store, KEY.encode()).verify()
    assert not ok and len(problems) == 1 and problems[0].startswith("none of the 3 keyed rows"), problems
    with pytest.raises(RuntimeError, match="audit key"):
        await AuditLog(store).verify()
    with pytest.raises(RuntimeError, match="audit key"):
        await AuditLog(store).record("requested", actor=None)


async def test_every_audit_log_line_carries_the_head(audit: AuditLog, caplog: pytest.LogCaptureFixture) -> None:
    assert str(await audit.head()) == f"0:{GENESIS}"
    with caplog.at_level("INFO", logger="bot.audit"):
        await _fill(audit, 3)
    lines = [r for r in caplog.records if r.name == "bot.audit" and r.getMessage() == "audit"]
    assert [(r.__dict__["seq"], r.__dict__["head"].split(":")[0]) for r in lines] == [(1, "1"), (2, "2"), (3, "3")]
    rows = await _rows(audit)
    assert [r.__dict__["head"] for r in lines] == [f"{row['seq']}:{row['hash']}" for row in rows]
    assert lines[-1].__dict__["head"] == str(await audit.head())


async def test_a_trimmed_tail_fails_verify_against_a_published_head(store: Store, audit: AuditLog) -> None:
    from bot.audit import Head, parse_head

    await _fill(audit, 5)
    published = await audit.head()
    earlier = Head(2, (await _rows(audit))[1]["hash"])
    assert parse_head(str(published)) == published
    assert await audit.verify([published, earlier, Head(0, GENESIS)]) == (True, [])

    await _sql(store, "DELETE FROM audit_events WHERE seq >= 4")
    assert await audit.verify() == (True, [])  # the chain alone cannot tell: that is why the head is published
    ok, problems = await audit.verify([published])
    assert not ok
    assert problems == [f"the trail ends at row 3 but head {published} was published — rows were deleted from the end"]
    assert await audit.verify([earlier]) == (True, [])

    await _sql(store, "DELETE FROM audit_events")  # everything
    ok, problems = await audit.verify([published])
    assert not ok and "the trail ends at row 0" in problems[0], problems


async def test_a_replaced_chain_fails_verify_against_a_published_head(store: Store, audit: AuditLog) -> None:
    """Even someone holding the key who rewrites the whole trail cannot match a head published before."""
    await _fill(audit, 3)
    published = await audit.head()
    await _sql(store, "DELETE FROM audit_events")
    await _fill(audit, 4)
    assert await audit.verify() == (True, [])
    ok, problems = await audit.verify([published])
    assert not ok
    assert problems == [f"row 3: differs from the published head {published} — the chain was replaced"]


def test_parse_head() -> None:
    from bot.audit import Head, parse_head

    assert parse_head(f" 12:{'AB' * 32} ") == Head(12, "ab" * 32)
    for bad in ("", "12", f"x:{'a' * 64}", "3:abc", f"-1:{'a' * 64}", f"3:{'g' * 64}"):
        with pytest.raises(ValueError, match="SEQ:HASH"):
            parse_head(bad)


def _upgrade_to(connection: sa.Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from bot.migrations import HERE

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_rows_from_before_the_key_are_sealed_and_then_protected(database_url: str) -> None:
    """A database migrated from revision 0001 keeps its unkeyed rows; a keyed row seals them."""
    from bot.audit import HASH_UNKEYED, _digest

    old = await Store.open(database_url, migrate=False)
    async with old.engine.begin() as conn:
        await conn.run_sync(_upgrade_to, "0001")
    prev = GENESIS
    for seq in (1, 2, 3):
        row = {"seq": seq, "ts": f"2026-01-0{seq}T00:00:00.000+00:00", "event": "requested", "actor_id": "u"}
        row |= {"actor_name": "Alex", "details": "{}", "prev_hash": prev}
        row["hash"] = _digest(prev, row)
        await _sql(
            old,
            "INSERT INTO audit_events (seq, ts, event, actor_id, actor_name, details, prev_hash, hash) "
            "VALUES (:seq, :ts, :event, :actor_id, :actor_name, :details, :prev_hash, :hash)",
            **row,
        )
        prev = str(row["hash"])
    await old.close()

    store = await Store.open(database_url)
    try:
        audit = AuditLog(store, KEY.encode())
        rows = await _rows(audit)
        assert [r["hash_version"] for r in rows] == [HASH_UNKEYED] * 3
        ok, problems = await audit.verify()
        assert not ok and problems[0].startswith("rows 1–3 were written without AUDIT_KEY"), problems

        assert await audit.seal() == 4
        assert await audit.seal() is None  # sealed once
        result = await audit.check()
        assert (result.ok, result.count, result.unkeyed, result.head) == (True, 4, 3, await audit.head())
        assert json.loads((await _rows(audit))[3]["details"]) == {"unkeyed_rows": 3}
        await _fill(audit, 2)
        assert await audit.verify() == (True, [])

        # editing an old row and recomputing the old, unkeyed part of the chain breaks the keyed seal
        rows = await _rows(audit)
        rows[1]["actor_name"] = "Mallory"
        await _rewrite(store, rows[1:3], _digest, HASH_UNKEYED)
        ok, problems = await audit.verify()
        assert problems == ["row 4: prev_hash does not match row 3 — rows were deleted or reordered"], problems
        # … and trimming everything keyed leaves an unsealed trail
        await _sql(store, "DELETE FROM audit_events WHERE seq >= 4")
        ok, problems = await audit.verify()
        assert not ok and problems[0].startswith("rows 1–3 were written without AUDIT_KEY"), problems
    finally:
        await store.close()


# -- CSV export neutralisation ------------------------------------------------------------------------------

FORMULAS = {
    "actor_name": '=HYPERLINK("https://evil.example","click")',
    "device_name": "+SUM(A1:A9)",
    "device_serial": "-2+3",
    "reason": "@SUM(1)",
    "conversation_id": "\t=1+1",
    "actor_id": "\r=cmd|' /C calc'!A0",
}


async def _record_formulas(audit: AuditLog) -> None:
    await audit.record(
        "denied",
        actor=Actor(FORMULAS["actor_id"], FORMULAS["actor_name"]),
        device={"id": "dev-1", "name": FORMULAS["device_name"], "serial": FORMULAS["device_serial"]},
        reason=FORMULAS["reason"],
        conversation_id=FORMULAS["conversation_id"],
    )


async def test_csv_export_neutralises_formula_cells(audit: AuditLog) -> None:
    await _fill(audit, 1)
    await _record_formulas(audit)
    exported = list(csv.DictReader(io.StringIO(await audit.export("csv"), newline="")))
    cells = exported[1]
    for column, value in FORMULAS.items():
        assert cells[column] == "'" + value, column
    assert (cells["device_id"], cells["event"], cells["seq"]) == ("dev-1", "denied", "2")
    assert cells["details"] == "{}" and cells["ts"][0].isdigit()
    assert exported[0]["actor_name"] == ALEX.name  # ordinary cells untouched
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for row in exported for v in row.values())
    # the JSONL export keeps the stored values, and the chain still verifies
    stored = json.loads((await audit.export("jsonl")).splitlines()[1])
    assert {k: stored[k] for k in FORMULAS} == FORMULAS
    assert await audit.verify() == (True, [])


# -- the CLI needs only DATABASE_URL (+ AUDIT_KEY) ----------------------------------------------------------


async def _bare_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The CLI with nothing but these variables (no Graph, no Bot Framework settings)."""
    bare = {"PATH": os.environ.get("PATH", ""), "ENV_FILE": "/nonexistent/.env", "LOG_FORMAT": "text"}
    return await _cli(env, *args, inherit=bare)


async def test_cli_with_only_the_database_and_the_key(store: Store, database_url: str) -> None:
    audit = AuditLog(store, KEY.encode())
    await _fill(audit, 3)
    await _record_formulas(audit)
    env = {"DATABASE_URL": database_url, "AUDIT_KEY": KEY}

    rc, out, err = await _bare_cli(env, "audit", "head")
    assert (rc, out.strip()) == (0, str(await audit.head())), err
    published = out.strip()
    rc, out, err = await _bare_cli(env, "audit", "verify", "--head", published, "--head", f"0:{GENESIS}")
    assert (rc, out.strip()) == (0, f"audit trail OK: 4 entries checked, head {published}"), err
    rc, out, err = await _bare_cli(env, "audit", "export", "--format", "csv")
    assert rc == 0, err
    assert list(csv.DictReader(io.StringIO(out, newline="")))[3]["actor_name"] == "'" + FORMULAS["actor_name"]
    assert KEY not in out + err

    rc, out, err = await _bare_cli({**env, "AUDIT_KEY": "a-different-key-of-sufficient-length-0123"}, "audit", "verify")
    assert rc == 1, (out, err)
    assert out.splitlines()[0].startswith("none of the 4 keyed rows matches its hash"), out

    await _sql(store, "DELETE FROM audit_events WHERE seq = 4")
    rc, out, err = await _bare_cli(env, "audit", "verify")
    assert rc == 0, (out, err)  # a consistent, shorter chain …
    rc, out, err = await _bare_cli(env, "audit", "verify", "--head", published)
    assert rc == 1, (out, err)  # … is caught by the head published before
    assert (
        out.splitlines()[0]
        == f"the trail ends at row 3 but head {published} was published — rows were deleted from the end"
    )
    assert out.splitlines()[-1].startswith("audit trail TAMPERED: 1 problem(s); 3 entries checked, head 3:")

    # an edited row with the chain recomputed by the unkeyed algorithm, rows re-marked as pre-key or not
    from bot.audit import HASH_HMAC, HASH_UNKEYED, _digest

    rows = await _rows(audit)
    rows[0]["actor_name"] = "Mallory"
    for version, expected in (
        (HASH_HMAC, "none of the 3 keyed rows matches its hash"),
        (HASH_UNKEYED, "rows 1–3 were written without AUDIT_KEY and no keyed row follows them"),
    ):
        await _rewrite(store, rows, _digest, version)
        rc, out, err = await _bare_cli(env, "audit", "verify")
        assert rc == 1, (version, out, err)
        assert out.splitlines()[0].startswith(expected), (version, out)

    rc, out, err = await _bare_cli(env, "audit", "verify", "--head", "yesterday")
    assert rc == 2 and "expected SEQ:HASH" in err, (out, err)
    rc, out, err = await _bare_cli({**env, "AUDIT_KEY": "short"}, "audit", "verify")
    assert rc == 2 and "AUDIT_KEY: must be at least 32 bytes" in err and "short" not in err.replace("AUDIT_KEY", ""), (
        err
    )
    production = {"DATABASE_URL": database_url, "APP_ENV": "production"}
    rc, out, err = await _bare_cli(production, "audit", "verify")
    assert rc == 2 and "AUDIT_KEY: required when APP_ENV=production" in err, (out, err)
    assert "AZURE" not in err and out == ""
    rc, out, err = await _bare_cli(production, "audit", "head")  # reading needs no key
    assert (rc, out.strip()) == (0, str(await audit.head())), err


async def test_cli_verify_without_a_key_or_a_development_key_is_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bot.db"
    store = await Store.open(url.replace("sqlite://", "sqlite+aiosqlite://"))
    await store.close()
    rc, out, err = await _bare_cli({"DATABASE_URL": url}, "audit", "verify")
    assert rc == 2, (out, err)
    assert f"AUDIT_KEY is not set and there is no development key at {tmp_path}/bot.db.audit.key" in err
    assert not (tmp_path / "bot.db.audit.key").exists()


async def test_cli_on_a_missing_database_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "bot.db"
    for args in (("verify",), ("head",), ("export", "--format", "csv")):
        rc, out, err = await _bare_cli({"DATABASE_URL": f"sqlite:///{path}", "AUDIT_KEY": KEY}, "audit", *args)
        assert rc == 2, (args, out, err)
        assert f"no database at {path}" in err and out == "", (args, out, err)
    assert not path.parent.exists()

    empty = tmp_path / "empty.db"
    empty.touch()
    rc, out, err = await _bare_cli({"DATABASE_URL": f"sqlite:///{empty}", "AUDIT_KEY": KEY}, "audit", "verify")
    assert rc == 2 and "never migrated" in err, (out, err)


async def test_cli_on_a_missing_postgresql_database_is_an_error(pg_url: str) -> None:
    missing = pg_url.rsplit("/", 1)[0] + "/bot_test_does_not_exist"
    for args in (("verify",), ("export",)):
        rc, out, err = await _bare_cli({"DATABASE_URL": missing, "AUDIT_KEY": KEY}, "audit", *args)
        assert rc == 2, (args, out, err)
        assert "cannot open the database" in err and "OK" not in out, (args, out, err)


# -- the key: settings and the development key file ---------------------------------------------------------

GRAPH_ENV = {
    "ENV_FILE": "/nonexistent/.env",
    "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_CLIENT_SECRET": "x" * 10,
    "ALLOW_ANONYMOUS": "true",
}


def test_audit_key_settings() -> None:
    from bot.settings import SettingsError, load_audit_settings, load_settings

    settings = load_settings({**GRAPH_ENV, "AUDIT_KEY": KEY})
    assert settings.audit_key == KEY and KEY in settings.secrets() and KEY not in repr(settings)
    assert load_settings(GRAPH_ENV).audit_key is None  # development: the key file beside the database
    with pytest.raises(SettingsError) as info:
        load_settings({**GRAPH_ENV, "AUDIT_KEY": "too short"})
    assert "AUDIT_KEY: must be at least 32 bytes long (a random secret)" in info.value.problems
    with pytest.raises(SettingsError) as info:
        load_settings({**GRAPH_ENV, "APP_ENV": "production"})
    assert any(p.startswith("AUDIT_KEY: required when APP_ENV=production") for p in info.value.problems)

    only = load_audit_settings({"ENV_FILE": "/nonexistent/.env", "DATABASE_URL": "postgresql://u:p@db/x"})
    assert (only.database_url, only.audit_key, only.secrets()) == ("postgresql+asyncpg://u:p@db/x", None, [])
    keyed = load_audit_settings({"ENV_FILE": "/nonexistent/.env", "AUDIT_KEY": KEY})
    assert keyed.secrets() == [KEY] and KEY not in repr(keyed)
    with pytest.raises(SettingsError) as info:
        load_audit_settings({"ENV_FILE": "/nonexistent/.env", "DATABASE_URL": "mysql://x", "AUDIT_KEY": "short"})
    assert [p.split(":")[0] for p in info.value.problems] == ["DATABASE_URL", "AUDIT_KEY"]
    production = load_audit_settings({"ENV_FILE": "/nonexistent/.env", "APP_ENV": "production"})
    assert (production.app_env, production.audit_key, production.log_format) == ("production", None, "json")


def test_the_development_key_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from bot.audit import DEV_KEY_FALLBACK, AuditKeyMissing, development_key_path

    url = f"sqlite+aiosqlite:///{tmp_path}/db/bot.db"
    assert development_key_path(url) == tmp_path / "db" / "bot.db.audit.key"
    assert development_key_path("postgresql+asyncpg://u:p@host/db") == DEV_KEY_FALLBACK == Path("data/audit-dev.key")
    with pytest.raises(AuditKeyMissing, match="no development key"):
        load_audit_key(None, url, create=False)
    assert not (tmp_path / "db").exists()

    with ThreadPoolExecutor(8) as pool:  # several processes starting at once agree on one key
        keys = set(pool.map(lambda _: load_audit_key(None, url), range(16)))
    assert len(keys) == 1 and len(next(iter(keys))) == 64
    path = tmp_path / "db" / "bot.db.audit.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == ["bot.db.audit.key"]  # no temporary files left
    assert load_audit_key(None, url, create=False) in keys
    assert load_audit_key(KEY, url) == KEY.encode()  # AUDIT_KEY wins
