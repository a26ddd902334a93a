"""The kernel's sizeof(struct module) (kernel.module_struct_size): 6.4+ refuses a module built with
another one, so verdicts recomputed from the store need it. NULL for kernels stored before: read
again when such a kernel is ingested again.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kernel", sa.Column("module_struct_size", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("kernel", "module_struct_size")  # SQLite 3.35+ drops a column in place
