"""Client-side CPU per HTTPS request: httpx on httpcore, httpx over aiohttp (the bot's Graph transport), bare aiohttp.

All three talk to the same simulator endpoint over TLS with keep-alive, one request at a time then 10 at a time; the
figure is this process's CPU time (``time.process_time``, all threads) per request. The server's cost is not
included. The variants take turns within each repeat (the shared machine's speed drifts), and each cell is the
median over repeats. Used by ``bench.run``; ``python -m bench.clients`` runs only this comparison against its own
simulator process (seconds, not the whole bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bot.graph_transport import AiohttpTransport

Fetch = Callable[[], Awaitable[None]]
VARIANTS = ("httpx", "httpx_aiohttp", "aiohttp")
CONCURRENCY = (1, 10)


async def _drive(fetch: Fetch, n: int, concurrency: int) -> tuple[float, float]:
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            next_index += 1
            await fetch()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def _httpx_fetch(client: httpx.AsyncClient, url: str) -> Fetch:
    async def fetch() -> None:
        response = await client.get(url)
        response.json()

    return fetch


def _aiohttp_fetch(session: aiohttp.ClientSession, url: str) -> Fetch:
    async def fetch() -> None:
        async with session.get(url) as response:
            await response.json(content_type=None)

    return fetch


async def compare(url: str, ca_file: str, n: int = 300, repeats: int = 3) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca_file)
    # The bot's transport as GraphClient.build_http configures it.
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=20, keepalive_expiry=60)
    stock = httpx.AsyncClient(verify=context, trust_env=False)
    over_aiohttp = httpx.AsyncClient(transport=AiohttpTransport(verify=context, limits=limits), trust_env=False)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))
    fetches = {
        "httpx": _httpx_fetch(stock, url),
        "httpx_aiohttp": _httpx_fetch(over_aiohttp, url),
        "aiohttp": _aiohttp_fetch(session, url),
    }
    samples: dict[str, list[tuple[float, float]]] = {f"{v}_c{c}": [] for v in VARIANTS for c in CONCURRENCY}
    try:
        for fetch in fetches.values():
            await _drive(fetch, 20, 1)  # connect, warm up
        for _ in range(repeats):
            for name, fetch in fetches.items():
                for concurrency in CONCURRENCY:
                    samples[f"{name}_c{concurrency}"].append(await _drive(fetch, n, concurrency))
    finally:
        await stock.aclose()
        await over_aiohttp.aclose()
        await session.close()
    out: dict[str, Any] = {"url_path": url.split("//", 1)[-1].split("/", 1)[-1], "requests": n, "repeats": repeats}
    for key, runs in samples.items():
        out[key] = {
            "cpu_ms_per_request": round(statistics.median(cpu for cpu, _ in runs), 3),
            "wall_ms_per_request": round(statistics.median(wall for _, wall in runs), 3),
        }
    return out


async def _standalone(n: int, repeats: int) -> dict[str, Any]:
    from bench.procs import Child

    with tempfile.TemporaryDirectory(prefix="bench-clients-") as logs:
        sim = Child(
            "simulator", [sys.executable, "-m", "bench.sim_server", "--clones", "0"], dict(os.environ), Path(logs)
        )
        info = await sim.start(announce=True)
        assert info is not None
        try:
            return await compare(info["base_url"] + "/_sim/control", str(info["env"]["SSL_CERT_FILE"]), n, repeats)
        finally:
            await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.clients", description="HTTPS client CPU per request (one comparison)"
    )
    parser.add_argument("-n", type=int, default=300, help="requests per cell")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(_standalone(args.n, args.repeats)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
