"""Audit trail: a versioned hash field, for rows keyed with AUDIT_KEY (HMAC-SHA256).

Rows written before this revision keep ``hash_version = 1`` (plain SHA-256 chain, verifiable by anyone); every row
appended from now on is ``hash_version = 2`` (HMAC-SHA256 with ``AUDIT_KEY``). ``bot.audit`` accepts version-1
rows only as the start of the chain and only once a keyed row follows them — a keyed row's HMAC covers the
previous row's hash, so the old rows cannot be edited, trimmed or recomputed afterwards without the key.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("hash_version", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash_version")
