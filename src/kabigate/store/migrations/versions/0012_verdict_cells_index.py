"""The verdicts' summary columns in an index of their own (ix_verdict_cells): a whole matrix (its CSV,
200,000 cells on the 1,000 x 200 store) is read from the index alone, not from the table's rows, where
each verdict's detail makes a full read ~150 MB.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_verdict_cells", "verdict", ["rules_version", "kernel_id", "build_id", "loads",
                                                    "first_reason", "failing_symbols"])


def downgrade() -> None:
    op.drop_index("ix_verdict_cells", "verdict")
