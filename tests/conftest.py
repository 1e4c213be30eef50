"""Shared fixtures: the simulated Microsoft cloud, the Bot Connector capture server, databases, the bot."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from simulator import Simulator
from simulator.testing import running_simulator
from tests.harness import BotUnderTest, Connector, production_env, settings_for

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, error: BaseException) -> None:
    """Missing service: fail in CI (never skip silently there), skip on a developer machine."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {error}")
    pytest.skip(f"{name} unavailable: {error}")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with running_simulator(page_size=5) as simulator:
        simulator.control.action_completion_delay = 0.2
        yield simulator


@pytest.fixture
async def connector() -> AsyncIterator[Connector]:
    server = Connector()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/bot.db"


async def _create_pg_database() -> tuple[str, str]:
    import asyncpg

    name = f"bot_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        require_service("PostgreSQL", exc)
        raise
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return name, f"{base}/{name}"


async def _drop_pg_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    name, url = await _create_pg_database()
    yield url
    await _drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The store suite runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/bot.db"
        return
    name, url = await _create_pg_database()
    yield url
    await _drop_pg_database(name)


BotFactory = Callable[..., Awaitable[BotUnderTest]]


@pytest.fixture
async def make_bot(sim: Simulator, connector: Connector, sqlite_url: str) -> AsyncIterator[BotFactory]:
    """``bot = await make_bot(APPROVAL_MODE="peer")`` — the real app on a free port against the simulator.

    ``make_bot(production=True)`` runs it in production auth mode: every activity the harness posts carries a
    channel token minted by the simulated Bot Framework for the activity's ``serviceUrl``.
    """
    started: list[BotUnderTest] = []

    async def factory(database_url: str | None = None, *, production: bool = False, **env: Any) -> BotUnderTest:
        values = {**(production_env(sim) if production else {}), **{k: str(v) for k, v in env.items()}}
        settings = settings_for(sim, database_url or sqlite_url, **values)
        bot = BotUnderTest(settings, connector)
        if production:
            bot.token_for = lambda body: sim.channel_token(sim.client_id, body.get("serviceUrl"))
        await bot.start()
        started.append(bot)
        return bot

    yield factory
    for bot in reversed(started):
        await bot.stop()


@pytest.fixture
async def bot(make_bot: BotFactory) -> BotUnderTest:
    return await make_bot()
