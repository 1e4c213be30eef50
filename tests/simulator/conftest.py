"""Fixtures for the simulator's own tests (independent of the bot's fixtures)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest_asyncio

from simulator import Simulator
from simulator.testing import running_simulator


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with running_simulator(page_size=5) as simulator:
        simulator.control.action_completion_delay = 0.2
        yield simulator


def graph_client(sim: Simulator, token: str | None = "issue", **headers: str) -> httpx.AsyncClient:
    """httpx client trusting only the simulator CA; ``token="issue"`` mints a Graph token."""
    if token == "issue":
        token = sim.issue_token()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(base_url=sim.base_url, verify=sim.ssl_context(), headers=headers, timeout=10)


@pytest_asyncio.fixture
async def graph(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with graph_client(sim) as client:
        yield client


MakeClient = Callable[..., httpx.AsyncClient]


@pytest_asyncio.fixture
async def make_client(sim: Simulator) -> AsyncIterator[MakeClient]:
    """``make_client(token=None, ConsistencyLevel="eventual")`` — closed after the test."""
    made: list[httpx.AsyncClient] = []

    def factory(token: str | None = "issue", **headers: str) -> httpx.AsyncClient:
        client = graph_client(sim, token, **headers)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()
