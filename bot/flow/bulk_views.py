"""A bulk request's card: rendered from the server's state for a viewer, updated in place at a bounded pace.

Three renderings: the requester's (everything), someone else's (their projection, bot.flow.bulk_projection), and the
**shared** card — the message itself, which in a group chat or channel every member sees (and which Teams mobile or
older clients may show instead of a personal view): it names no device and shows no count; each person's own view
comes through ``refresh.userIds`` (the requester, the approvers found among the members) or the card's
"Show my view" button.

Teams throttles message updates, and a run of 100 devices changes state hundreds of times: :meth:`BulkViews.changed`
coalesces every change of a batch into at most one card update per ``BULK_UPDATE_INTERVAL``; the final card is
always sent (:meth:`BulkViews.final`), after the interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bot import messages as m
from bot.batches import AWAITING_APPROVAL, Batch, BatchStore
from bot.flow.base import Deps, Viewer
from bot.flow.bulk_projection import Projection
from bot.flow.views import Views
from cards.bulk import BulkView, bulk_card, shared_card

log = logging.getLogger("bot.workflow")


class BulkViews:
    def __init__(self, deps: Deps, views: Views, batches: BatchStore) -> None:
        self.deps = deps
        self.batches = batches
        self._last: dict[str, float] = {}
        self._scheduled: set[str] = set()
        views.batch_changed = self.changed

    async def render(self, batch: Batch, *, note: str | None = None) -> dict[str, Any]:
        """The requester's card: the whole list, every class, every device's result."""
        results: list[tuple[str, str, str]] = []
        if batch.state not in ("requested", AWAITING_APPROVAL, "expired"):
            results = [(r.device_name, r.device_serial, r.state) for r in await self.batches.rows(batch.id)]
        return bulk_card(self._view(batch, batch.items, results, note=note), Viewer.REQUESTER.value)

    async def personal(
        self, batch: Batch, seen: Projection, *, approver: bool = False, note: str | None = None
    ) -> dict[str, Any]:
        """The card for someone other than the requester: their projection only (bot.flow.bulk_projection)."""
        results: list[tuple[str, str, str]] = []
        if batch.state not in ("requested", AWAITING_APPROVAL, "expired"):
            rows = await self.batches.rows(batch.id)
            results = [(r.device_name, r.device_serial, r.state) for r in rows if r.device_id in seen.readable]
        view = self._view(batch, seen.items, results, note=note, covers=seen.digest if approver else "")
        return bulk_card(view, (Viewer.APPROVER if approver else Viewer.OTHER).value)

    def shared(self, batch: Batch, *, approval_card: bool = False) -> dict[str, Any]:
        """The message every member of the conversation (or of the approval channel) sees: no device, no count."""
        return shared_card(self._view(batch, (), (), approval_card=approval_card))

    def _view(
        self,
        batch: Batch,
        items: Sequence[dict[str, Any]],
        results: Sequence[tuple[str, str, str]],
        *,
        note: str | None = None,
        approval_card: bool = False,
        covers: str = "",
    ) -> BulkView:
        return BulkView(
            batch_id=batch.id,
            state=batch.state,
            requester_name=batch.requester_name,
            requester_mri=batch.requester_mri,
            items=items,
            reason=batch.reason,
            preset_reason=batch.preset_reason,
            expires_at=batch.expires_at,
            updated_at=batch.updated_at,
            is_group=batch.is_group or approval_card,
            approval_mode=self.deps.settings.approval_mode == "peer" or bool(batch.approver_id),
            approver_name=batch.approver_name,
            comment=batch.comment,
            reasons=tuple(self.deps.settings.reason_map),
            results=results,
            note=note,
            approver_mris=batch.approvers,
            approval_channel=bool(self.deps.settings.approval_channel_id),
            covers=covers,
        )

    async def update(self, batch_id: str) -> None:
        """PUT the batch's card as it stands now (the shared card in group chats), and its approval channel copy."""
        notifier = self.deps.notifier
        batch = await self.batches.get(batch_id)
        if notifier is None or batch is None:
            return
        self._last[batch_id] = asyncio.get_running_loop().time()
        if batch.card_activity_id:
            card = self.shared(batch) if batch.is_group else await self.render(batch)
            await notifier.update(batch.reference, batch.card_activity_id, card)
        approval = batch.approval_reference
        if approval and batch.approval_activity_id:
            await notifier.update(approval, batch.approval_activity_id, self.shared(batch, approval_card=True))

    async def finished_text(self, batch: Batch) -> str:
        """The proactive line when a run finishes: counts only in the requester's own 1:1 chat."""
        if batch.is_group:
            return m.proactive_bulk_finished_shared()
        states = Counter(r.state for r in await self.batches.rows(batch.id))
        sent = states["submitted"] + states["confirmed"]
        return m.proactive_bulk_finished(sum(states.values()), sent, states["failed"], states["unknown"])

    def changed(self, batch_id: str) -> None:
        """Something in the batch changed: one update within ``BULK_UPDATE_INTERVAL``, however many changes."""
        if batch_id in self._scheduled:
            return
        self._scheduled.add(batch_id)
        self.deps.spawn(self._later(batch_id))

    def _wait(self, batch_id: str) -> float:
        last = self._last.get(batch_id)
        if last is None:
            return 0.0
        return max(0.0, last + self.deps.settings.bulk_update_interval - asyncio.get_running_loop().time())

    async def _later(self, batch_id: str) -> None:
        try:
            await asyncio.sleep(self._wait(batch_id))
            self._scheduled.discard(batch_id)
            await self.update(batch_id)
        except Exception:
            self._scheduled.discard(batch_id)
            log.exception("bulk card update failed", extra={"batch": batch_id})

    async def final(self, batch_id: str) -> None:
        """The last update of a run: after the interval, whatever is scheduled."""
        await asyncio.sleep(self._wait(batch_id))
        await self.update(batch_id)
        if len(self._last) > 1000:
            self._last.clear()
