"""A stream that enforces module signatures (Secure Boot, module.sig_enforce=1): the certificates
its kernels trust (built-in keys and enrolled MOK certificates, codec.pack of [DER base64, source]).
NULL: signatures are not enforced there.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stream", sa.Column("trusted_certificates", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("stream", "trusted_certificates")  # SQLite 3.35+ drops a column in place
