"""The "which device?" card's message id, so a click on it is trusted only from that message.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("selections") as batch:
        batch.add_column(sa.Column("card_activity_id", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("selections") as batch:
        batch.drop_column("card_activity_id")
