"""The real bot as an operating-system process (``python app.py``), for multi-instance and crash tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from cards import verbs
from tests.harness import Captured, Connector, User, action_id_of, activity, free_port

ROOT = Path(__file__).resolve().parents[2]
REASON = "retiring_device"


@dataclass
class BotProcess:
    """One ``python app.py`` serving on its own port; stdout+stderr go to ``log_path``."""

    name: str
    env: dict[str, str]
    log_path: Path
    connector: Connector
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 60.0) -> None:
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            # A crash point is injected by the test launcher, never by the production entry point.
            "tests/store/crashing_bot.py" if "BOT_TEST_CRASH_POINT" in self.env else "app.py",
            cwd=ROOT,
            env={**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"},
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            if self.process.returncode is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode} at start:\n{self.log_tail()}")
            try:
                async with self._session.get(f"{self.url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{self.name} did not become healthy:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def post(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.post(f"{self.url}/api/messages", json=body) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)

    async def say(self, user: User, text: str) -> list[Captured]:
        """Send a personal-chat message; return what the bot sent back to the connector."""
        before = len(self.connector.calls)
        body = activity("message", user, service_url=self.connector.url, text=text)
        status, _ = await self.post(body)
        assert status in (200, 202), (status, self.log_tail())
        # The connector may be shared with other processes talking to the same user at the same time: only the
        # replies to this very activity count.
        return [
            c
            for c in self.connector.calls[before:]
            if c.method == "send" and c.body.get("type") == "message" and c.body.get("replyToId") == body["id"]
        ]

    async def request(self, user: User, serial: str) -> tuple[str, str]:
        """``deprovision <serial>`` → (action id, activity id of the confirmation card)."""
        replies = await self.say(user, f"deprovision {serial}")
        cards = [c for c in replies if c.cards]
        assert cards, ([r.text for r in replies], self.log_tail())
        action_id = action_id_of(cards[-1].cards[0])
        assert action_id, cards[-1].cards[0]
        assert cards[-1].activity_id is not None
        return action_id, cards[-1].activity_id

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (the graceful shutdown) and the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL (no shutdown handlers run)."""
        if self.process is not None and self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def stop(self) -> None:
        self.kill()
        if self.process is not None:
            await self.process.wait()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return f"--- {self.name} ({self.log_path}) ---\n" + "\n".join(text.splitlines()[-lines:])


def confirm_click(user: User, connector: Connector, action_id: str, card_activity_id: str) -> dict[str, Any]:
    """The invoke Teams sends when ``user`` presses Confirm on the card (one body, deliverable many times)."""
    return activity(
        "invoke",
        user,
        service_url=connector.url,
        name="adaptiveCard/action",
        replyToId=card_activity_id,
        value={
            "action": {
                "type": "Action.Execute",
                "verb": verbs.CONFIRM,
                "data": {"actionId": action_id, verbs.REASON_INPUT: REASON},
            },
            "trigger": "manual",
        },
    )


@asynccontextmanager
async def bot_processes() -> AsyncIterator[list[BotProcess]]:
    """A list to append started :class:`BotProcess` es to; all are SIGKILLed and reaped on exit."""
    started: list[BotProcess] = []
    try:
        yield started
    finally:
        await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)


def new_process(
    started: list[BotProcess], name: str, env: dict[str, str], tmp_path: Path, connector: Connector
) -> BotProcess:
    process = BotProcess(name, env, tmp_path / f"{name}.log", connector)
    started.append(process)
    return process
