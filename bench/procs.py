"""Child processes of the benchmark: start, wait until ready, read their RSS and CPU time, stop (by own pid only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        return 0
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the whole line)
    except (FileNotFoundError, IndexError, ValueError):
        return 0


class Child:
    """One subprocess; stdout/stderr go to a log file unless ``announce`` (first stdout line is JSON)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.cwd = cwd or ROOT
        self.argv = argv
        self.env = env
        self.log_path = logs / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, *, announce: bool = False, timeout: float = 60.0) -> dict[str, Any] | None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=str(self.cwd),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if announce else self._log,
            stderr=self._log,
            limit=4 * 1024 * 1024,  # the simulator announces its device list on one line (hundreds of devices)
        )
        if not announce:
            return None
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=timeout)
        if not line:
            raise RuntimeError(f"{self.name} exited before announcing itself; see {self.log_path}")
        return dict(json.loads(line))

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


async def wait_http(url: str, *, timeout: float = 30.0, interval: float = 0.01, ok: int = 200) -> float:
    """Poll ``url`` until it answers ``ok``; return the monotonic time (perf_counter) when it did."""
    deadline = time.perf_counter() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() < deadline:
            try:
                async with session.get(url) as response:
                    await response.read()
                    if response.status == ok:
                        return time.perf_counter()
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(interval)
    raise RuntimeError(f"{url} did not answer {ok} within {timeout:.0f}s")


class Loadgen:
    """The persistent load-generator process (``python -m bench.loadgen``), one job at a time."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.process: asyncio.subprocess.Process | None = None
        self._err: IO[bytes] | None = None

    async def start(self) -> None:
        self._err = open(self.logs / "loadgen.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            cwd=str(ROOT),
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            limit=64 * 1024 * 1024,
        )

    async def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(job) + "\n").encode())
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator died; see {self.logs / 'loadgen.log'}")
        return dict(json.loads(line))

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._err is not None:
            self._err.close()


class Http:
    """Small JSON client for the control endpoints (simulator over HTTPS with its CA, bot, connector)."""

    def __init__(self, ca_file: str | None = None) -> None:
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Http:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl else True),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def get(self, url: str) -> Any:
        assert self._session is not None
        async with self._session.get(url) as response:
            response.raise_for_status()
            return await response.json(content_type=None)

    async def post(self, url: str, body: Any = None) -> Any:
        assert self._session is not None
        async with self._session.post(url, json=body) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"POST {url} → {response.status}: {text[:300]}")
            return json.loads(text) if text else None
