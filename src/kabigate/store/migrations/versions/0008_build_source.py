"""The source a driver build was made from by kabigate build (a *-dkms .deb, a dkms tree, a kmod
.src.rpm, a Kbuild folder): what gate --rebuild builds again for a new kernel. NULL for builds
ingested as modules, and for those stored before.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("driver_build", sa.Column("built_from", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("driver_build", "built_from")  # SQLite 3.35+ drops a column in place
