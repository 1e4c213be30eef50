"""The *superseded* state: a request replaced by a newer one for the same device, or by another one confirmed.

``state`` is a plain string column, so no schema change; the data moves instead. Requests still *requested*
while a newer request for the same device exists (the stale "waiting for confirmation" rows of before) become
*superseded*; downgrading turns them into *cancelled*, the nearest state the older code knows.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.execute(
        "UPDATE actions SET state = 'superseded', version = version + 1, inflight_device = NULL "
        "WHERE state = 'requested' AND EXISTS (SELECT 1 FROM actions AS newer "
        "WHERE newer.device_id = actions.device_id AND newer.id <> actions.id "
        "AND (newer.created_at > actions.created_at OR newer.state IN ('awaiting_approval', 'submitting', 'submitted')))"
    )


def downgrade() -> None:
    op.execute("UPDATE actions SET state = 'cancelled', version = version + 1 WHERE state = 'superseded'")
