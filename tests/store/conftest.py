"""Fixtures for the store suite: an open :class:`Store` on each backend and an action factory."""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.store import INFLIGHT_STATES, REQUESTED, Action, Store
from tests.harness import ALEX, TENANT

_devices = itertools.count(1)

ActionFactory = Callable[..., Action]


def new_device_id() -> str:
    return f"dev-{next(_devices):04d}-{secrets.token_hex(4)}"


def make_action(state: str = REQUESTED, *, device_id: str | None = None, **overrides: Any) -> Action:
    """An action as the workflow would build it (``inflight_device`` consistent with ``state``)."""
    now = overrides.pop("now", time.time())
    device = device_id or new_device_id()
    values: dict[str, Any] = {
        "id": secrets.token_urlsafe(18),
        "tenant_id": TENANT,
        "state": state,
        "requester_id": ALEX.aad_id,
        "requester_name": ALEX.name,
        "requester_mri": ALEX.mri,
        "device_id": device,
        "device_name": f"NHS-{device[-4:]}",
        "device_serial": f"SN{device[-6:]}".upper(),
        "device_json": json.dumps({"id": device, "name": f"NHS-{device[-4:]}"}),
        "conversation_id": "a:1personal-chat-020",
        "conversation_ref": json.dumps({"conversation": {"id": "a:1personal-chat-020"}}),
        "created_at": now,
        "updated_at": now,
        "expires_at": now + 900,
        "inflight_device": device if state in INFLIGHT_STATES else None,
    }
    values.update(overrides)
    return Action(**values)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


@pytest.fixture
async def pg_url_or_none() -> AsyncIterator[str | None]:
    """A fresh PostgreSQL database, or ``None`` on a developer machine without PostgreSQL.

    In CI an unreachable PostgreSQL fails the test (``require_service``), exactly like the ``pg_url`` fixture.
    """
    from tests.conftest import _create_pg_database, _drop_pg_database

    try:
        name, url = await _create_pg_database()
    except pytest.skip.Exception:
        yield None
        return
    try:
        yield url
    finally:
        await _drop_pg_database(name)
