"""Bulk requests: the ``batches`` table and ``actions.batch_id`` (the bulk request a device's action belongs to).

The new action state *queued* is a plain string in ``actions.state``: no schema change for it.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("requester_id", sa.String(64), nullable=False),
        sa.Column("requester_name", sa.String(256), nullable=False),
        sa.Column("requester_mri", sa.String(256), nullable=False),
        sa.Column("conversation_id", sa.String(512), nullable=False),
        sa.Column("conversation_type", sa.String(32), nullable=False),
        sa.Column("conversation_ref", sa.Text, nullable=False),
        sa.Column("card_activity_id", sa.String(256)),
        sa.Column("items_json", sa.Text, nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("preset_reason", sa.String(64)),
        sa.Column("approver_id", sa.String(64)),
        sa.Column("approver_name", sa.String(256)),
        sa.Column("comment", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("lease_until", sa.Float),
        sa.Column("finished_at", sa.Float),
    )
    op.create_index("ix_batches_state", "batches", ["state"])
    op.create_index("ix_batches_requester_id", "batches", ["requester_id"])
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(64)))
        batch.create_index("ix_actions_batch_id", ["batch_id"])


def downgrade() -> None:
    # Devices waiting in a bulk request the older code cannot run are released as cancelled.
    op.execute(
        "UPDATE actions SET state = 'cancelled', version = version + 1, inflight_device = NULL WHERE state = 'queued'"
    )
    with op.batch_alter_table("actions") as batch:
        batch.drop_index("ix_actions_batch_id")
        batch.drop_column("batch_id")
    op.drop_index("ix_batches_requester_id", "batches")
    op.drop_index("ix_batches_state", "batches")
    op.drop_table("batches")
