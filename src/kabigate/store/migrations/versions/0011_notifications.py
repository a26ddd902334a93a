"""Notifications: subscriptions, events (one per kind, package, stream and kernel) and the outbox
of their deliveries, each delivered once.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("subscription",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("owner", sa.String(length=200), nullable=False),
    sa.Column("target_kind", sa.String(length=16), nullable=False),
    sa.Column("target", sa.String(length=200), nullable=False),
    sa.Column("channel", sa.String(length=16), nullable=False),
    sa.Column("address", sa.String(length=2048), nullable=False),
    sa.Column("secret", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("target_kind", "target", "channel", "address")
    )
    op.create_table("notification_event",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=36), nullable=False),
    sa.Column("key", sa.String(length=700), nullable=False),
    sa.Column("kind", sa.String(length=32), nullable=False),
    sa.Column("driver", sa.String(length=200), nullable=True),
    sa.Column("stream", sa.String(length=200), nullable=True),
    sa.Column("kernel_release", sa.String(length=200), nullable=False),
    sa.Column("gate_run", sa.String(length=36), nullable=True),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("key"),
    sa.UniqueConstraint("uuid")
    )
    op.create_index("ix_notification_event_driver", "notification_event", ["driver"], unique=False)
    op.create_index("ix_notification_event_stream", "notification_event", ["stream"], unique=False)
    op.create_table("notification_delivery",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("event_id", sa.Integer(), nullable=False),
    sa.Column("subscription_id", sa.Integer(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["event_id"], ["notification_event.id"]),
    sa.ForeignKeyConstraint(["subscription_id"], ["subscription.id"]),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("event_id", "subscription_id")
    )
    op.create_index("ix_notification_delivery_state", "notification_delivery", ["state"], unique=False)
    op.create_index("ix_notification_delivery_subscription_id", "notification_delivery", ["subscription_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_notification_delivery_subscription_id", table_name="notification_delivery")
    op.drop_index("ix_notification_delivery_state", table_name="notification_delivery")
    op.drop_table("notification_delivery")
    op.drop_index("ix_notification_event_stream", table_name="notification_event")
    op.drop_index("ix_notification_event_driver", table_name="notification_event")
    op.drop_table("notification_event")
    op.drop_table("subscription")
