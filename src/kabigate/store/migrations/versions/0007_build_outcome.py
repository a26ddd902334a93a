"""A build failure's kind (failed or excluded, kabigate build's BuildOutcome) and its log, bounded
and compressed (codec.pack). NULL for failures recorded before: failed, with no log kept.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("build_failure", sa.Column("outcome", sa.String(length=16), nullable=True))
    op.add_column("build_failure", sa.Column("log", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("build_failure", "log")  # SQLite 3.35+ drops a column in place
    op.drop_column("build_failure", "outcome")
