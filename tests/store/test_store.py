"""The durable store on SQLite and PostgreSQL: migrations, the state machine, compare-and-set, the device guard."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import sqlite3
import stat
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.migrations import head_revision
from bot.selections import Selection, SelectionStore
from bot.store import (
    AWAITING_APPROVAL,
    CANCELLED,
    CONFIRMED,
    EXPIRED,
    FAILED,
    INFLIGHT_STATES,
    QUEUED,
    REQUESTED,
    STATES,
    SUBMITTED,
    SUBMITTING,
    SUPERSEDED,
    TRANSITIONS,
    UNKNOWN,
    Action,
    DeviceBusy,
    Store,
    prepare_sqlite_file,
)
from tests.store.conftest import make_action, new_device_id

#: The state machine as documented (bot/store.py and the workflow), written out independently of the code.
EXPECTED_MACHINE = {
    (REQUESTED, SUBMITTING),  # confirm
    (REQUESTED, AWAITING_APPROVAL),  # confirm in peer-approval mode
    (REQUESTED, CANCELLED),
    (REQUESTED, EXPIRED),
    (REQUESTED, FAILED),  # re-check at confirmation failed (device changed, role lost)
    (REQUESTED, SUPERSEDED),  # a newer request for the device, or another request for it was confirmed
    (AWAITING_APPROVAL, SUBMITTING),  # approve
    (AWAITING_APPROVAL, CANCELLED),  # reject / cancel
    (AWAITING_APPROVAL, EXPIRED),
    (AWAITING_APPROVAL, FAILED),
    (SUBMITTING, SUBMITTED),
    (SUBMITTING, FAILED),
    (SUBMITTING, UNKNOWN),
    (FAILED, SUBMITTING),  # retry after a throttled request
    (FAILED, CANCELLED),  # a throttled device of a bulk request, cancelled before its retry
    (UNKNOWN, SUBMITTED),  # reconciled from Graph's deviceActionResults
    (SUBMITTED, CONFIRMED),  # Intune's own record says it was carried out
    (SUBMITTED, FAILED),  # Intune's own record says it failed
    (UNKNOWN, CONFIRMED),  # an ambiguous write Intune did carry out
    (UNKNOWN, FAILED),  # an ambiguous write Intune never recorded (or reports failed)
    (QUEUED, SUBMITTING),  # the bulk runner claims a device written ahead
    (QUEUED, CANCELLED),  # the bulk request was cancelled before the device was sent
    (QUEUED, EXPIRED),  # not sent within ACTION_TTL of the confirm (an outage): the old decision is not used
}
ALLOWED = sorted(EXPECTED_MACHINE)
DISALLOWED = [(src, dst) for src in STATES for dst in STATES if dst != src and (src, dst) not in EXPECTED_MACHINE]


# -- migrations ---------------------------------------------------------------------------------------------


async def test_migrations_applied_at_open_and_idempotent(database_url: str) -> None:
    first = await Store.open(database_url)
    assert await first.current_revision() == head_revision()
    async with first.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    assert {"actions", "selections", "audit_events", "alembic_version"} <= tables
    assert await first.ping()
    action = await first.create(make_action())
    await first.close()
    await first.close()  # closing twice is harmless

    second = await Store.open(database_url)
    try:
        assert await second.current_revision() == head_revision()
        await second.migrate()  # an explicit upgrade at head is a no-op
        assert await second.current_revision() == head_revision()
        assert await second.get(action.id) == action
        async with second.engine.connect() as conn:
            versions = (await conn.execute(sa.text("SELECT count(*) FROM alembic_version"))).scalar_one()
        assert versions == 1
    finally:
        await second.close()


async def test_open_without_migrating_then_migrate(database_url: str) -> None:
    store = await Store.open(database_url, migrate=False)
    try:
        assert await store.current_revision() is None
        await store.migrate()
        assert await store.current_revision() == head_revision()
    finally:
        await store.close()


async def test_concurrent_opens_on_postgres(pg_url: str) -> None:
    """Several instances starting together against one empty PostgreSQL all come up (advisory lock)."""
    stores = await asyncio.gather(*(Store.open(pg_url) for _ in range(5)))
    try:
        for opened in stores:
            assert await opened.current_revision() == head_revision()
        created = await stores[0].create(make_action())
        assert await stores[-1].get(created.id) == created
    finally:
        for opened in stores:
            await opened.close()


async def test_concurrent_opens_on_sqlite(sqlite_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(sqlite_url) for _ in range(3)), return_exceptions=True)
    try:
        problems = [s for s in stores if not isinstance(s, Store)]
        assert not problems, problems
        for opened in stores:
            assert isinstance(opened, Store)
            assert await opened.current_revision() == head_revision()
    finally:
        for opened in stores:
            if isinstance(opened, Store):
                await opened.close()


async def test_concurrent_migrations_of_several_databases_in_one_process(tmp_path: Path, pg_url: str) -> None:
    """Alembic's context is process-global: upgrades of different databases at once must not interleave."""
    for round_ in range(3):
        urls = [f"sqlite+aiosqlite:///{tmp_path}/r{round_}-{i}.db" for i in range(4)] + [pg_url]
        opened = await asyncio.gather(*(Store.open(url) for url in urls), return_exceptions=True)
        try:
            problems = [o for o in opened if not isinstance(o, Store)]
            assert not problems, problems
            for store in opened:
                assert isinstance(store, Store) and await store.current_revision() == head_revision()
        finally:
            for store in opened:
                if isinstance(store, Store):
                    await store.close()


async def test_sqlite_file_is_owner_only(tmp_path: Path) -> None:
    """The database (device facts, requester names, the audit trail) is created 0600 in a new 0700 directory."""
    path = tmp_path / "fresh" / "bot.db"
    opened = await Store.open(f"sqlite+aiosqlite:///{path}")
    try:
        await opened.create(make_action())
    finally:
        await opened.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for sidecar in path.parent.glob("bot.db-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) & 0o077 == 0, sidecar


def test_concurrent_first_opens_from_processes(tmp_path: Path) -> None:
    """Processes starting together on a new SQLite file all switch it to WAL (no "database is locked")."""
    path = tmp_path / "race.db"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(prepare_sqlite_file, [path] * 8)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- create / get -------------------------------------------------------------------------------------------


async def _create_and_get_round_trip(store: Store) -> None:
    action = make_action(
        reason="retiring_device",
        preset_reason="retiring_device",
        comment="ünïcode ✓",
        card_activity_id="msg-1",
        approver_mris='["29:x"]',
        decision_json='{"allowed": true}',
    )
    assert await store.create(action) is action
    fetched = await store.get(action.id)
    assert fetched == action
    assert fetched is not None and fetched.device == {"id": action.device_id, "name": action.device_name}
    assert fetched.reference["conversation"]["id"] == action.conversation_id
    assert await store.get("no-such-action-id-xxxxx") is None


async def _create_duplicate_id_is_refused(store: Store) -> None:
    action = await store.create(make_action())
    with pytest.raises(sa.exc.IntegrityError):
        await store.create(dataclasses.replace(action, device_id=new_device_id()))


async def _update_fields_never_touches_state_or_version(store: Store) -> None:
    action = await store.create(make_action())
    await store.update_fields(action.id, card_activity_id="msg-9", notified=True, state=SUBMITTED, version=99)
    fetched = await store.get(action.id)
    assert fetched is not None
    assert (fetched.card_activity_id, fetched.notified) == ("msg-9", True)
    assert (fetched.state, fetched.version) == (REQUESTED, 1)


async def test_create_get_and_bookkeeping(store: Store) -> None:
    await _create_and_get_round_trip(store)
    await _create_duplicate_id_is_refused(store)
    await _update_fields_never_touches_state_or_version(store)


# -- the state machine --------------------------------------------------------------------------------------


async def test_every_allowed_transition(store: Store) -> None:
    assert {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets} == EXPECTED_MACHINE
    assert set(TRANSITIONS) == set(STATES)
    for src, dst in ALLOWED:
        action = await store.create(make_action(src))
        stamp = time.time() + 5
        updated = await store.transition(action, dst, now=stamp, error_code="x", bogus_field="ignored")
        assert updated is not None, (src, dst)
        assert (updated.state, updated.version, updated.updated_at) == (dst, 2, stamp), (src, dst)
        assert updated.inflight_device == (action.device_id if dst in INFLIGHT_STATES else None), (src, dst)
        stored = await store.get(action.id)
        assert stored == updated, (src, dst)
        assert stored is not None and stored.error_code == "x"


async def test_disallowed_transitions_are_refused(store: Store) -> None:
    assert len(DISALLOWED) == len(STATES) * (len(STATES) - 1) - len(ALLOWED)
    for src, dst in DISALLOWED:
        action = await store.create(make_action(src))
        with pytest.raises(ValueError, match="not allowed"):
            await store.transition(action, dst)
        assert await store.get(action.id) == action, (src, dst)

    action = await store.create(make_action(REQUESTED))
    with pytest.raises(ValueError, match="not allowed"):
        await store.transition(action, SUBMITTING, from_states=(REQUESTED, CANCELLED))
    with pytest.raises(ValueError, match="unknown state"):
        await store.transition(action, "deleted")
    assert await store.get(action.id) == action


async def test_a_full_life_cycle_with_approval_and_retry(store: Store) -> None:
    action = await store.create(make_action())
    step = await store.transition(action, AWAITING_APPROVAL, reason="retiring_device")
    assert step is not None
    step = await store.transition(step, SUBMITTING, approver_id="approver", lease_until=time.time() + 60)
    assert step is not None
    step = await store.transition(step, FAILED, retryable=True, error_code="TooManyRequests")
    assert step is not None and step.inflight_device is None
    step = await store.transition(step, SUBMITTING, retryable=False)
    assert step is not None
    step = await store.transition(step, SUBMITTED, graph_request_id="req-1")
    assert step is not None
    assert (step.version, step.reason, step.approver_id) == (6, "retiring_device", "approver")
    assert await store.get(action.id) == step


# -- compare-and-set ----------------------------------------------------------------------------------------


async def _stale_version_loses(store: Store) -> None:
    action = await store.create(make_action())
    winner = await store.transition(action, SUBMITTING)
    assert winner is not None
    assert await store.transition(action, CANCELLED) is None  # read before the winner's write
    assert await store.transition(action, SUBMITTING) is None
    stored = await store.get(action.id)
    assert stored is not None and (stored.state, stored.version) == (SUBMITTING, 2)


async def _state_changed_behind_the_callers_back_loses(store: Store) -> None:
    action = await store.create(make_action())
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE actions SET state = 'cancelled' WHERE id = :id"), {"id": action.id})
    assert await store.transition(action, SUBMITTING) is None
    stored = await store.get(action.id)
    assert stored is not None and stored.state == CANCELLED and stored.inflight_device is None


async def test_concurrent_transitions_exactly_one_wins(store: Store) -> None:
    """Two instances handling the same click (or a click and a cancel) from the same version: one wins, 20x."""
    for targets in ((SUBMITTING, SUBMITTING), (SUBMITTING, CANCELLED)):
        for _round in range(20):
            action = await store.create(make_action())
            results = await asyncio.gather(*(store.transition(action, target) for target in targets))
            winners = [r for r in results if r is not None]
            assert len(winners) == 1, (targets, results)
            stored = await store.get(action.id)
            assert stored == winners[0]
            assert stored is not None and stored.version == 2


async def _many_concurrent_clicks_one_winner(store: Store) -> None:
    action = await store.create(make_action())
    results = await asyncio.gather(*(store.transition(action, SUBMITTING) for _ in range(8)))
    assert sum(r is not None for r in results) == 1


async def test_compare_and_set_refuses_a_stale_caller(store: Store) -> None:
    await _stale_version_loses(store)
    await _state_changed_behind_the_callers_back_loses(store)
    await _many_concurrent_clicks_one_winner(store)


# -- the in-flight device guard -----------------------------------------------------------------------------


async def _second_action_on_a_busy_device_is_refused(store: Store) -> None:
    for holder_state in INFLIGHT_STATES:
        device = new_device_id()
        holder = await store.create(make_action(holder_state, device_id=device))
        second = await store.create(make_action(REQUESTED, device_id=device))
        for target in (SUBMITTING, AWAITING_APPROVAL):
            with pytest.raises(DeviceBusy):
                await store.transition(second, target)
        assert await store.get(second.id) == second  # untouched
        found = await store.inflight_for_device(device)
        assert found is not None and found.id == holder.id, holder_state


async def _unknown_cannot_become_submitted_while_another_action_holds_the_device(store: Store) -> None:
    device = new_device_id()
    await store.create(make_action(SUBMITTED, device_id=device))
    # A row from before unknown writes held their device (migration 0004 does not lock old rows).
    lost = await store.create(make_action(UNKNOWN, device_id=device, inflight_device=None))
    with pytest.raises(DeviceBusy):
        await store.transition(lost, SUBMITTED)


async def test_a_busy_device_refuses_a_second_action(store: Store) -> None:
    await _second_action_on_a_busy_device_is_refused(store)
    await _unknown_cannot_become_submitted_while_another_action_holds_the_device(store)


async def test_device_is_released_by_failure_and_final_states(store: Store) -> None:
    device = new_device_id()
    first = await store.create(make_action(device_id=device))
    second = await store.create(make_action(device_id=device))
    submitting = await store.transition(first, SUBMITTING)
    assert submitting is not None
    with pytest.raises(DeviceBusy):
        await store.transition(second, SUBMITTING)
    failed = await store.transition(submitting, FAILED)
    assert failed is not None and failed.inflight_device is None
    assert await store.inflight_for_device(device) is None
    taken = await store.transition(second, SUBMITTING)
    assert taken is not None and taken.inflight_device == device
    with pytest.raises(DeviceBusy):  # the retry of the first must now wait
        await store.transition(failed, SUBMITTING)
    unknown = await store.transition(taken, UNKNOWN)  # an ambiguous write keeps the device locked…
    assert unknown is not None and unknown.inflight_device == device
    settled = await store.transition(unknown, FAILED)  # …until Intune's record settles it
    assert settled is not None and settled.inflight_device is None
    assert await store.inflight_for_device(device) is None


async def test_concurrent_actions_on_one_device_one_enters(store: Store) -> None:
    for _round in range(20):
        device = new_device_id()
        first = await store.create(make_action(device_id=device))
        second = await store.create(make_action(device_id=device))
        results = await asyncio.gather(
            store.transition(first, SUBMITTING),
            store.transition(second, AWAITING_APPROVAL),
            return_exceptions=True,
        )
        entered = [r for r in results if isinstance(r, Action)]
        refused = [r for r in results if isinstance(r, DeviceBusy)]
        assert (len(entered), len(refused)) == (1, 1), results
        holder = await store.inflight_for_device(device)
        assert holder is not None and holder.id == entered[0].id


# -- queries ------------------------------------------------------------------------------------------------


async def test_expiry_query(store: Store) -> None:
    now = time.time()
    due_requested = await store.create(make_action(REQUESTED, expires_at=now - 1))
    due_awaiting = await store.create(make_action(AWAITING_APPROVAL, expires_at=now))
    await store.create(make_action(REQUESTED, expires_at=now + 60))  # not yet
    await store.create(make_action(SUBMITTING, expires_at=now - 60))  # not open any more
    await store.create(make_action(CANCELLED, expires_at=now - 60))
    due = await store.due_for_expiry(now)
    assert {a.id for a in due} == {due_requested.id, due_awaiting.id}
    assert all(a.expired(now) for a in due)
    assert await store.due_for_expiry(now - 3600) == []


async def test_stale_submitting_query_honours_the_lease(store: Store) -> None:
    now = time.time()
    expired_lease = await store.create(make_action(SUBMITTING, lease_until=now - 1))
    no_lease = await store.create(make_action(SUBMITTING, lease_until=None))
    await store.create(make_action(SUBMITTING, lease_until=now + 30))  # another instance is still on it
    await store.create(make_action(FAILED, lease_until=now - 30))
    await store.create(make_action(SUBMITTED, lease_until=now - 30))
    stale = await store.stale_submitting(now)
    assert {a.id for a in stale} == {expired_lease.id, no_lease.id}
    later = await store.stale_submitting(now + 31)
    assert len(later) == 3


async def test_unnotified_query(store: Store) -> None:
    pending = await store.create(make_action(UNKNOWN))
    await store.create(make_action(UNKNOWN, notified=True))
    await store.create(make_action(SUBMITTED))
    assert [a.id for a in await store.unnotified()] == [pending.id]
    await store.update_fields(pending.id, notified=True)
    assert await store.unnotified() == []


async def test_history_ordering_filters_and_limit(store: Store) -> None:
    base = time.time() - 1000
    device = new_device_id()
    made = [
        await store.create(
            make_action(SUBMITTED if i == 0 else CANCELLED, device_id=device if i % 2 == 0 else None, now=base + i)
        )
        for i in range(12)
    ]
    other = await store.create(make_action(requester_id="someone-else", now=base + 50))
    newest_first = [a.id for a in reversed(made)]

    everything = await store.history(limit=100)
    assert [a.id for a in everything] == [other.id, *newest_first]
    assert [a.id for a in await store.history(requester_id=made[0].requester_id)] == newest_first[:10]
    assert [a.id for a in await store.history(requester_id=made[0].requester_id, limit=3)] == newest_first[:3]
    on_device = await store.history(device_id=device)
    assert [a.id for a in on_device] == [a.id for a in reversed(made) if a.device_id == device]
    assert [a.id for a in await store.history(requester_id="someone-else")] == [other.id]
    assert await store.history(device_id="nothing-here") == []
    latest = await store.latest_for_device(device)
    assert latest is not None and latest.id == made[10].id


async def test_awaiting_approval_and_count(store: Store) -> None:
    base = time.time()
    later = await store.create(make_action(AWAITING_APPROVAL, now=base + 2))
    earlier = await store.create(make_action(AWAITING_APPROVAL, now=base + 1))
    await store.create(make_action(AWAITING_APPROVAL, tenant_id="another-tenant"))
    await store.create(make_action(REQUESTED))
    assert [a.id for a in await store.awaiting_approval(earlier.tenant_id)] == [earlier.id, later.id]
    assert [a.id for a in await store.awaiting_approval(earlier.tenant_id, limit=1)] == [earlier.id]
    assert await store.count() == 4
    assert await store.count(AWAITING_APPROVAL) == 3
    assert await store.count(EXPIRED) == 0


# -- selections ---------------------------------------------------------------------------------------------


def _selection(selection_id: str = "sel-0123456789abcdef") -> Selection:
    now = time.time()
    return Selection(
        id=selection_id,
        tenant_id="tenant",
        requester_id="requester",
        candidates=[{"id": "d1", "name": "NHS-LIB-01"}, {"id": "d2", "name": "NHS-LIB-01"}],
        preset_reason="retiring_device",
        created_at=now,
        expires_at=now + 900,
    )


async def _selection_is_single_use(store: SelectionStore) -> None:
    selection = _selection()
    await store.create(selection)
    fetched = await store.get(selection.id)
    assert fetched == selection and fetched is not None and not fetched.used
    taken = await store.take(selection.id)
    assert taken is not None and taken.used and taken.candidates == selection.candidates
    assert taken.preset_reason == "retiring_device"
    assert await store.take(selection.id) is None
    after = await store.get(selection.id)
    assert after is not None and after.used
    assert await store.take("unknown-selection") is None
    assert await store.get("unknown-selection") is None


async def _concurrent_selection_takes_one_wins(store: SelectionStore) -> None:
    for i in range(5):
        selection = _selection(f"sel-concurrent-{i:04d}")
        await store.create(selection)
        results = await asyncio.gather(*(store.take(selection.id) for _ in range(6)))
        assert sum(r is not None for r in results) == 1, results


async def test_selections_are_single_use(store: Store) -> None:
    await _selection_is_single_use(SelectionStore(store))
    await _concurrent_selection_takes_one_wins(SelectionStore(store))


# -- SQLite specifics ---------------------------------------------------------------------------------------


async def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    try:
        async with store.engine.connect() as conn:
            mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
            timeout = (await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar_one()
        assert str(mode).lower() == "wal"
        assert int(timeout) >= 5000
    finally:
        await store.close()


async def test_migration_0004_supersedes_stale_open_requests(store: Store) -> None:
    """Rows written before the *superseded* state: an open request with a newer one for its device is closed."""
    from alembic import command
    from alembic.config import Config

    from bot.migrations import HERE

    device = new_device_id()
    older = await store.create(make_action(device_id=device, now=1000.0))
    newer = await store.create(make_action(device_id=device, now=2000.0))
    alone = await store.create(make_action(now=1500.0))

    def rerun(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(HERE))
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
        command.upgrade(config, "head")

    async with store.engine.begin() as conn:
        await conn.run_sync(rerun)
    found = [await store.get(a.id) for a in (older, newer, alone)]
    assert [a.state if a else None for a in found] == [SUPERSEDED, REQUESTED, REQUESTED]
    assert await store.current_revision() == head_revision()
