"""Peer approval of a bulk request: its eligible approvers (refresh.userIds) and its approval channel post.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("approver_mris", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("approval_ref", sa.Text))
        batch.add_column(sa.Column("approval_activity_id", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("approval_activity_id")
        batch.drop_column("approval_ref")
        batch.drop_column("approver_mris")
