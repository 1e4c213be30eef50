"""Test helpers: a running simulator and clients wired to trust it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .server import Simulator


@asynccontextmanager
async def running_simulator(
    *, host: str = "127.0.0.1", port: int = 0, in_thread: bool = False, **kw: Any
) -> AsyncIterator[Simulator]:
    """``async with running_simulator(page_size=5) as sim: ...`` (kwargs go to :class:`Simulator`).

    ``in_thread=True`` serves from its own thread and loop: needed when the code under test
    calls MSAL (blocking) directly on the test's event loop.
    """
    sim = Simulator(**kw)
    if in_thread:
        await asyncio.to_thread(sim.start_in_thread, host, port)
    else:
        await sim.start(host=host, port=port)
    try:
        yield sim
    finally:
        if in_thread:
            await asyncio.to_thread(sim.stop_thread)
        else:
            await sim.stop()


def msal_app(sim: Simulator, **kw: Any) -> Any:
    """An MSAL ``ConfidentialClientApplication`` pointed at the simulator (real TLS, real HTTP).

    MSAL is synchronous and already talks to the server in its constructor (OIDC discovery):
    with an in-loop simulator call this via ``await asyncio.to_thread(msal_app, sim)``.
    """
    import msal
    import requests

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would silently override verify=
    session.verify = sim.ca_path
    return msal.ConfidentialClientApplication(
        sim.client_id,
        client_credential=kw.pop("client_credential", sim.client_secret),
        authority=kw.pop("authority", sim.authority),
        instance_discovery=False,
        http_client=session,
        **kw,
    )
