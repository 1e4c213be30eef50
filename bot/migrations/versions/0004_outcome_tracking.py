"""Following each write's outcome in Intune's own record (completion tracking, ambiguous writes).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("next_check_at", sa.Float))
        batch.add_column(sa.Column("checks", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("intune_state", sa.String(32)))
        batch.add_column(sa.Column("intune_detail", sa.Text))
        batch.add_column(sa.Column("settled_at", sa.Float))
        batch.create_index("ix_actions_next_check_at", ["next_check_at"])


def downgrade() -> None:
    with op.batch_alter_table("actions") as batch:
        batch.drop_index("ix_actions_next_check_at")
        for column in ("settled_at", "intune_detail", "intune_state", "checks", "next_check_at"):
            batch.drop_column(column)
