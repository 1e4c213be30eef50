"""The "bot ready" log line and ``/readyz`` come from one readiness verdict and never disagree."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import pytest

from bot import runtime
from simulator import Simulator
from tests.conftest import BotFactory

ROTATED = "the-rotated-graph-secret-value"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "READINESS_RETRY_FIRST", 0.05)
    monkeypatch.setattr(runtime, "READINESS_RETRY_MAX", 0.2)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bot.http"]


async def wait_for_log(caplog: pytest.LogCaptureFixture, match: Callable[[str], bool], timeout: float = 10.0) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = [m for m in messages(caplog) if match(m)]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no such log line; got {messages(caplog)}")


async def readyz(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def test_bot_ready_is_logged_when_readyz_is_200(make_bot: BotFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.http")
    bot = await make_bot()
    await wait_for_log(caplog, lambda m: m == "bot ready")
    status, body = await readyz(bot.url)
    assert status == 200 and body["status"] == "ready"
    assert not any("not ready" in m for m in messages(caplog))


async def test_not_ready_is_logged_with_the_reason_then_ready_once_it_passes(
    sim: Simulator, make_bot: BotFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.http")
    bot = await make_bot(AZURE_CLIENT_SECRET=ROTATED)  # Entra does not know this secret yet
    line = await wait_for_log(caplog, lambda m: m.startswith("bot started, not ready"))
    assert line == "bot started, not ready: graph_token failed: GraphAuthError"
    status, body = await readyz(bot.url)
    assert status == 503 and body["checks"] == {"database": "ok", "graph_token": "failed: GraphAuthError"}
    await asyncio.sleep(0.5)  # several retries later: still not ready, and the reason is logged only once
    assert "bot ready" not in messages(caplog)
    assert sum(m.startswith("bot started, not ready") for m in messages(caplog)) == 1

    sim.state.client_secret = ROTATED  # the operator adds the secret in Entra
    await wait_for_log(caplog, lambda m: m == "bot ready")
    status, body = await readyz(bot.url)
    assert status == 200 and body["checks"] == {"database": "ok", "graph_token": "ok"}


async def test_the_announcer_stops_with_the_app(make_bot: BotFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.http")
    bot = await make_bot(AZURE_CLIENT_SECRET=ROTATED)
    await wait_for_log(caplog, lambda m: m.startswith("bot started, not ready"))
    await bot.stop()
    bot.runner = None
    bot.session = None
    pending = [t for t in asyncio.all_tasks() if getattr(t.get_coro(), "__qualname__", "") == "announce_readiness"]
    assert pending == []
