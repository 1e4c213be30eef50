"""A per-process cap on concurrent turns, and the "busy, try again in a moment" answer beyond it.

One event loop does all of a process's turns. Every admitted turn adds callbacks to its run queue (Graph, SQLite and
connector answers), so without a bound the latency of *every* turn and the loop's lag grow with the offered load.
:class:`TurnLimit` admits at most ``MAX_CONCURRENT_TURNS`` messages and card clicks at once; the next ones queue (in
order) for at most :data:`QUEUE_WAIT` seconds and are then answered "busy" — without touching the store or Graph —
so that beyond the cap the answer is fast and clear instead of slow. Other activities (installs, conversation
updates) are never held back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from microsoft_agents.activity import ActivityTypes
from microsoft_agents.hosting.core import TurnContext

from bot import messages as m
from bot.flow import InvokeAnswer
from bot.teams import invoke_response, mentions_bot

log = logging.getLogger("bot.http")

#: How long a turn may wait for a free slot before it is answered "busy". Short enough that a queued card click
#: plus ``INVOKE_BUDGET`` (3 s by default) stays within Teams' invoke timeout of about 5 s.
QUEUE_WAIT = 1.0
CAPPED = ("message", "invoke")


class TurnLimit:
    """At most ``limit`` turns at once; :meth:`slot` yields ``False`` when none frees up within ``wait`` seconds."""

    def __init__(self, limit: int, wait: float = QUEUE_WAIT) -> None:
        self._slots = asyncio.Semaphore(limit)
        self.wait = wait
        self.refused = 0

    @property
    def full(self) -> bool:
        """Is every slot taken (the next turn would queue)?"""
        return self._slots.locked()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.wait)
            except TimeoutError:
                self.refused += 1
                yield False
                return
        else:
            await self._slots.acquire()  # free: no timer, no task
        try:
            yield True
        finally:
            self._slots.release()


class BusyAgent:
    """The agent for a turn that found no free slot: a message gets the busy text (in a channel only when the bot
    was @mentioned, as always), nothing else happens."""

    async def on_turn(self, context: TurnContext) -> None:
        activity = context.activity
        in_channel = bool(activity.conversation and activity.conversation.conversation_type == "channel")
        if activity.type == ActivityTypes.message and (not in_channel or mentions_bot(activity)):
            await context.send_activity(m.busy())


BUSY_AGENT = BusyAgent()


def busy_invoke() -> web.Response:
    """A card click beyond the cap: shown to the user as a message; the card stays as it was (click again)."""
    log.warning("turn refused: busy", extra={"type": "invoke"})
    answer = invoke_response(InvokeAnswer(message=m.busy()))
    return web.json_response(answer.model_dump(mode="json", by_alias=True, exclude_none=True))
