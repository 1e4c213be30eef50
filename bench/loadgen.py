"""Closed-loop HTTP load generator, run as its own process on loopback.

``python -m bench.loadgen`` reads one JSON job per line on stdin and answers one JSON line on stdout::

    {"url": "http://127.0.0.1:PORT/api/messages", "bodies": "/tmp/…/bodies.json", "concurrency": 10,
     "expect": 202, "invoke": false, "timeout": 15}

``concurrency`` workers share a keep-alive connection pool and take the pre-serialised bodies in order; each records
the latency of its POST (request sent → response body read); a request without an answer within ``timeout`` seconds
(Teams gives up on a bot after about 15 s, on an invoke after about 5 s) counts as wrong. The answer holds every latency, the status counts,
how many answers were wrong (status, or for invokes a body that is not an adaptive card with statusCode 200), and the
wall time from the first send to the last answer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

CARD = "application/vnd.microsoft.card.adaptive"


def _invoke_ok(raw: bytes) -> bool:
    try:
        body = json.loads(raw)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("statusCode") == 200 and body.get("type") == CARD


async def run_job(job: dict[str, Any]) -> dict[str, Any]:
    with open(job["bodies"], encoding="utf-8") as fh:
        payloads = [json.dumps(b).encode() for b in json.load(fh)]
    url = str(job["url"])
    concurrency = int(job["concurrency"])
    expect = int(job.get("expect", 200))
    invoke = bool(job.get("invoke"))
    latencies: list[float] = [0.0] * len(payloads)
    statuses: Counter[str] = Counter()
    wrong = 0
    samples: list[str] = []
    next_index = 0
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=float(job.get("timeout", 15)))
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal next_index, wrong
            while next_index < len(payloads):
                i = next_index
                next_index += 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=payloads[i], headers=headers) as response:
                        raw = await response.read()
                        status = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    latencies[i] = time.perf_counter() - started
                    statuses[type(exc).__name__] += 1
                    wrong += 1
                    continue
                latencies[i] = time.perf_counter() - started
                statuses[str(status)] += 1
                if status != expect or (invoke and not _invoke_ok(raw)):
                    wrong += 1
                    if len(samples) < 3:
                        samples.append(raw[:300].decode(errors="replace"))

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - began
    return {
        "n": len(payloads),
        "concurrency": concurrency,
        "latencies": latencies,
        "statuses": dict(statuses),
        "wrong": wrong,
        "wrong_samples": samples,
        "wall_s": wall,
    }


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        if not line.strip():
            continue
        result = await run_job(json.loads(line))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
