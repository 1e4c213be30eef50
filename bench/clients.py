"""Client-side CPU per HTTPS request: httpx (the bot's Graph client) vs aiohttp (the bot's other HTTP stack).

Both talk to the same simulator endpoint over TLS with keep-alive, one request at a time then 10 at a time; the
figure is this process's CPU time (``time.process_time``, all threads) per request. The server's cost is not
included. Used by ``bench.run`` to ground the "Graph transport" recommendation.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import aiohttp
import httpx


async def _drive(fetch: Any, n: int, concurrency: int) -> tuple[float, float]:
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < n:
            next_index += 1
            await fetch()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


async def compare(url: str, ca_file: str, n: int = 300) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=ca_file)
    out: dict[str, Any] = {"url_path": url.split("//", 1)[-1].split("/", 1)[-1], "requests": n}
    async with httpx.AsyncClient(verify=context, trust_env=False) as client:

        async def fetch_httpx() -> None:
            response = await client.get(url)
            response.json()

        await _drive(fetch_httpx, 20, 1)  # connect, warm up
        for concurrency in (1, 10):
            cpu, wall = await _drive(fetch_httpx, n, concurrency)
            out[f"httpx_c{concurrency}"] = {"cpu_ms_per_request": round(cpu, 3), "wall_ms_per_request": round(wall, 3)}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:

        async def fetch_aiohttp() -> None:
            async with session.get(url) as response:
                await response.json(content_type=None)

        await _drive(fetch_aiohttp, 20, 1)
        for concurrency in (1, 10):
            cpu, wall = await _drive(fetch_aiohttp, n, concurrency)
            out[f"aiohttp_c{concurrency}"] = {
                "cpu_ms_per_request": round(cpu, 3),
                "wall_ms_per_request": round(wall, 3),
            }
    return out
