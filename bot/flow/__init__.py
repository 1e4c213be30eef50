"""The conversation's domain logic, independent of the Teams SDK, in rooms of one concern each.

``deprovision <device>`` → lookup → read check → ChromeOS check → role check → confirmation card → (approval) →
Graph → the card updated in place::

    commands    chat text → lookups, least disclosure, the confirmation / "which device?" cards
    lookup      exact lookup + role check, one Graph round trip in the common case (single devices and lists)
    info        status, history, pending
    bulk        ``deprovision`` + a list: batched lookup, classes, one summary card, confirm once (bulk_approve:
                the two-person rule for a list; bulk_run: write-ahead rows sent once each within Intune's budget;
                bulk_views: the card updated in place at a bounded pace; bulk_projection: what anyone but the
                requester may see of it)
    clicks      card invokes → who may see and do what → confirm, cancel, retry (approve/reject via approvals)
    approvals   the two-person rule: waiting, finding approvers, approve, reject
    submission  write-ahead, the one Graph call, expiry, crash recovery (sweep, reconcile)
    views       a request's card per viewer, shared updates in place, proactive messages
"""

from __future__ import annotations

import asyncio

from bot.flow.approvals import Approvals
from bot.flow.base import Conversation, Deps, InvokeAnswer, Member, Notifier, Reply, Requester, Viewer
from bot.flow.bulk import Bulk
from bot.flow.clicks import Clicks
from bot.flow.commands import Commands
from bot.flow.submission import Submission
from bot.flow.views import Views

__all__ = ["Conversation", "Deps", "InvokeAnswer", "Member", "Notifier", "Reply", "Requester", "Viewer", "Workflow"]


class Workflow:
    """The rooms wired together; the Teams adapter and the runtime talk to this facade only."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.views = Views(deps)
        self.submission = Submission(deps, self.views)
        self.approvals = Approvals(deps, self.views, self.submission)
        self.bulk = Bulk(deps, self.views, self.submission)
        self.commands = Commands(deps, self.views, self.bulk)
        self.clicks = Clicks(deps, self.views, self.submission, self.approvals, self.commands)
        self.on_message = self.commands.on_message
        self.card_sent = self.commands.card_sent
        self.on_invoke = self.clicks.on_invoke

    async def sweep(self) -> dict[str, int]:
        """Single requests (expiry, crash recovery, outcomes), then bulk requests (expiry, resuming runs)."""
        counts = await self.submission.sweep()
        counts.update(await self.bulk.sweep())
        return counts

    async def drain(self, limit: float = 10.0) -> None:
        """Let in-flight Graph submissions finish (graceful shutdown)."""
        if self.deps.tasks:
            await asyncio.wait(set(self.deps.tasks), timeout=limit)
