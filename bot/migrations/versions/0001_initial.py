"""Initial schema: actions, selections, audit_events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(24), nullable=False, index=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("requester_id", sa.String(64), nullable=False, index=True),
        sa.Column("requester_name", sa.String(256), nullable=False),
        sa.Column("requester_mri", sa.String(256), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False, index=True),
        sa.Column("device_name", sa.String(256), nullable=False),
        sa.Column("device_serial", sa.String(128), nullable=False),
        sa.Column("device_json", sa.Text, nullable=False),
        sa.Column("reason", sa.String(64)),
        sa.Column("preset_reason", sa.String(64)),
        sa.Column("approver_id", sa.String(64)),
        sa.Column("approver_name", sa.String(256)),
        sa.Column("comment", sa.Text),
        sa.Column("conversation_id", sa.String(512), nullable=False),
        sa.Column("conversation_type", sa.String(32), nullable=False),
        sa.Column("conversation_ref", sa.Text, nullable=False),
        sa.Column("card_activity_id", sa.String(256)),
        sa.Column("approval_ref", sa.Text),
        sa.Column("approval_activity_id", sa.String(256)),
        sa.Column("approver_mris", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("lease_until", sa.Float),
        sa.Column("client_request_id", sa.String(64)),
        sa.Column("graph_request_id", sa.String(128)),
        sa.Column("error_code", sa.String(128)),
        sa.Column("error_message", sa.Text),
        sa.Column("retryable", sa.Boolean, nullable=False),
        sa.Column("decision_json", sa.Text, nullable=False),
        sa.Column("notified", sa.Boolean, nullable=False),
        sa.Column("inflight_device", sa.String(64), unique=True),
    )
    op.create_table(
        "selections",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("requester_id", sa.String(64), nullable=False),
        sa.Column("candidates_json", sa.Text, nullable=False),
        sa.Column("preset_reason", sa.String(64)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used", sa.Boolean, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(40), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("action_id", sa.String(64), index=True),
        sa.Column("actor_id", sa.String(64)),
        sa.Column("actor_name", sa.String(256)),
        sa.Column("device_id", sa.String(64), index=True),
        sa.Column("device_name", sa.String(256)),
        sa.Column("device_serial", sa.String(128)),
        sa.Column("reason", sa.String(64)),
        sa.Column("conversation_id", sa.String(512)),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
