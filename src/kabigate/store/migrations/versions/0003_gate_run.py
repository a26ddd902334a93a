"""Gate runs: each gate's outcome and report, and where it was published (restart-safe watch).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("gate_run",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("uuid", sa.String(length=36), nullable=False),
    sa.Column("kernel_id", sa.Integer(), nullable=False),
    sa.Column("baseline_id", sa.Integer(), nullable=True),
    sa.Column("stream", sa.String(length=200), nullable=True),
    sa.Column("outcome", sa.String(length=32), nullable=False),
    sa.Column("report", sa.LargeBinary(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_to", sa.Text(), nullable=True),
    sa.Column("resultsdb_id", sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(["baseline_id"], ["kernel.id"], ),
    sa.ForeignKeyConstraint(["kernel_id"], ["kernel.id"], ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("uuid")
    )
    op.create_index(op.f("ix_gate_run_kernel_id"), "gate_run", ["kernel_id"], unique=False)


def downgrade() -> None:
    op.drop_table("gate_run")
