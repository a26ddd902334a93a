"""Stored waivers: patterns, why, who, until when; revoked, never deleted.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("waiver",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("driver", sa.String(length=512), nullable=False),
    sa.Column("symbol", sa.String(length=512), nullable=False),
    sa.Column("kernel", sa.String(length=512), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("who", sa.String(length=512), nullable=False),
    sa.Column("expires", sa.Date(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("id")
    )


def downgrade() -> None:
    op.drop_table("waiver")
