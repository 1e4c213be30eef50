"""The write path (issue 18): a state change and its audit events in one transaction, the chain head kept in
memory on SQLite (and checked by the INSERT itself), and the pool's reset rollback done only when needed."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.audit import Actor, AuditLog, load_audit_key
from bot.store import CANCELLED, SUBMITTING, Action, Store, actions, audit_events
from tests.harness import ALEX
from tests.store.conftest import make_action

ACTOR = Actor(ALEX.aad_id, ALEX.name)


def keyed(store: Store, url: str) -> AuditLog:
    return AuditLog(store, load_audit_key(None, url))


async def events(store: Store) -> list[tuple[int, str, str | None]]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(audit_events.c.seq, audit_events.c.event, audit_events.c.action_id).order_by(audit_events.c.seq)
        )
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]


async def test_a_state_change_and_its_events_commit_together(store: Store, database_url: str) -> None:
    audit = keyed(store, database_url)
    action = await store.create(make_action(), then=audit.then(audit.entry("requested", actor=ACTOR)))
    moved = await store.transition(
        action,
        SUBMITTING,
        then=audit.then(
            audit.entry("confirmed", actor=ACTOR, reason="lost"),
            audit.entry("submitted", actor=ACTOR, client_request_id="c-1"),
        ),
    )
    assert moved is not None and moved.state == SUBMITTING
    assert await events(store) == [
        (1, "requested", action.id),
        (2, "confirmed", action.id),
        (3, "submitted", action.id),
    ]
    # A lost compare-and-set appends nothing.
    assert await store.transition(action, CANCELLED, then=audit.then(audit.entry("cancelled", actor=ACTOR))) is None
    assert len(await events(store)) == 3
    assert await audit.verify() == (True, [])


async def test_a_failure_inside_the_transaction_undoes_the_state_change_and_its_events(
    store: Store, database_url: str
) -> None:
    audit = keyed(store, database_url)
    action = await store.create(make_action(), then=audit.then(audit.entry("requested", actor=ACTOR)))
    append = audit.then(audit.entry("confirmed", actor=ACTOR))

    async def then_fail(conn: AsyncConnection, changed: Action) -> None:
        await append(conn, changed)
        raise RuntimeError("boom")

    try:
        await store.transition(action, SUBMITTING, then=then_fail)  # type: ignore[arg-type]
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failure was swallowed")
    assert (await store.get(action.id)).state == action.state  # type: ignore[union-attr]
    assert [e[1] for e in await events(store)] == ["requested"]
    # The head this process remembered was dropped with the rollback: the next append chains on row 1.
    assert await audit.record("denied", actor=ACTOR) == 2
    assert await audit.verify() == (True, [])


async def test_another_instance_appending_between_two_appends_is_noticed(database_url: str) -> None:
    first, second = await Store.open(database_url), await Store.open(database_url)
    try:
        one, two = keyed(first, database_url), keyed(second, database_url)
        assert await one.record("requested", actor=ACTOR) == 1
        assert await two.record("requested", actor=ACTOR) == 2
        assert await two.record("requested", actor=ACTOR) == 3
        # ``one`` remembers row 1 as the head: its INSERT checks that and re-reads the head instead.
        action = await first.create(make_action(), then=one.then(one.entry("requested", actor=ACTOR)))
        assert [e[0] for e in await events(first)] == [1, 2, 3, 4]
        assert (await events(first))[-1][2] == action.id
        assert await one.verify() == (True, [])
    finally:
        await first.close()
        await second.close()


async def test_a_trimmed_tail_is_not_chained_on(store: Store, database_url: str) -> None:
    """Rows deleted behind the process's back (a database reset): appends chain on what is really stored."""
    audit = keyed(store, database_url)
    for _ in range(3):
        await audit.record("requested", actor=ACTOR)
    async with store.engine.begin() as conn:
        await conn.execute(audit_events.delete())
    assert await audit.record("requested", actor=ACTOR) == 1
    assert await audit.verify() == (True, [])


async def test_a_connection_handed_back_mid_transaction_is_still_rolled_back(sqlite_url: str) -> None:
    """SQLite: the pool skips its reset rollback after a commit, never when a transaction is still open."""
    store = await Store.open(sqlite_url)
    try:
        action = make_action()
        async with store.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.execute("BEGIN IMMEDIATE")  # behind SQLAlchemy's back
            await driver.execute(
                "INSERT INTO actions (id, tenant_id, state, version, requester_id, "
                "requester_name, requester_mri, device_id, device_name, device_serial, device_json, conversation_id, "
                "conversation_type, conversation_ref, approver_mris, created_at, updated_at, expires_at, retryable, "
                "decision_json, notified, checks) VALUES (?, 't', 'requested', 1, 'r', '', '', 'd', '', '', '{}', '', "
                "'personal', '{}', '[]', 0, 0, 0, 0, '{}', 0, 0)",
                (action.id,),
            )
            assert driver.in_transaction
        # Handed back with its transaction open: rolled back, so the write lock is free and the row is gone.
        await store.create(make_action())
        assert await store.get(action.id) is None
        async with store.engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(actions))).scalar_one() == 1
    finally:
        await store.close()
