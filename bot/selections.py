"""The "which one did you mean?" card's candidate lists: single use, requester-bound, expiring.

One ``selections`` row per card sent; a click on the card takes it (compare-and-set on ``used``), so two clicks —
or two instances receiving the same click — cannot both go on. Over the store's engine and write queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bot.store import Store, metadata

selections = sa.Table(
    "selections",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("requester_id", sa.String(64), nullable=False),
    sa.Column("candidates_json", sa.Text, nullable=False),
    sa.Column("preset_reason", sa.String(64)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used", sa.Boolean, nullable=False, default=False),
    sa.Column("card_activity_id", sa.String(256)),
)


@dataclass
class Selection:
    id: str
    tenant_id: str
    requester_id: str
    candidates: list[dict[str, Any]]
    preset_reason: str | None
    created_at: float
    expires_at: float
    used: bool = False
    card_activity_id: str | None = None


class SelectionStore:
    """Async access to the ``selections`` table, through the :class:`~bot.store.Store`'s engine and write queue."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, selection: Selection) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                selections.insert().values(
                    id=selection.id,
                    tenant_id=selection.tenant_id,
                    requester_id=selection.requester_id,
                    candidates_json=json.dumps(selection.candidates),
                    preset_reason=selection.preset_reason,
                    created_at=selection.created_at,
                    expires_at=selection.expires_at,
                    used=False,
                )
            )

    async def take(self, selection_id: str) -> Selection | None:
        """Single use: marks the selection used and returns it, or ``None`` if unknown or already used."""
        async with self.store.write() as conn:
            result = await conn.execute(
                selections.update()
                .where(selections.c.id == selection_id, selections.c.used.is_(False))
                .values(used=True)
            )
            if result.rowcount != 1:
                return None
            row = (await conn.execute(selections.select().where(selections.c.id == selection_id))).mappings().one()
        return _selection(row)

    async def sent(self, selection_id: str, activity_id: str) -> None:
        """Record the message id of the "which device?" card (clicks on it replace that message)."""
        async with self.store.write() as conn:
            await conn.execute(
                selections.update().where(selections.c.id == selection_id).values(card_activity_id=activity_id)
            )

    async def get(self, selection_id: str) -> Selection | None:
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(selections.select().where(selections.c.id == selection_id))).mappings().first()
        return _selection(row) if row is not None else None


def _selection(row: Any) -> Selection:
    return Selection(
        id=row["id"],
        tenant_id=row["tenant_id"],
        requester_id=row["requester_id"],
        candidates=json.loads(row["candidates_json"]),
        preset_reason=row["preset_reason"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used=bool(row["used"]),
        card_activity_id=row["card_activity_id"],
    )
