"""Driver builds that failed to build for a kernel: real data for the matrix too.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("build_failure",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("driver_id", sa.Integer(), nullable=False),
    sa.Column("version", sa.String(length=200), nullable=False),
    sa.Column("kernel_release", sa.String(length=200), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["driver_id"], ["driver.id"], ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("driver_id", "version", "kernel_release")
    )
    op.create_index(op.f("ix_build_failure_driver_id"), "build_failure", ["driver_id"], unique=False)


def downgrade() -> None:
    op.drop_table("build_failure")
