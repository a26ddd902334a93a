"""Driver aliases (another name a driver was ingested or is known by: a module tree's `acpi_call`
for the package's `acpi-call`), and the WaiverDB waivers a stored waiver was posted as or imported
from (so that neither direction copies a waiver twice).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("driver_alias",
    sa.Column("alias", sa.String(length=200), nullable=False),
    sa.Column("driver_id", sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(["driver_id"], ["driver.id"]),
    sa.PrimaryKeyConstraint("alias")
    )
    op.create_index("ix_driver_alias_driver_id", "driver_alias", ["driver_id"])
    op.create_table("waiver_link",
    sa.Column("waiver_id", sa.Integer(), nullable=False),
    sa.Column("api_url", sa.Text(), nullable=False),
    sa.Column("waiverdb_id", sa.String(length=64), nullable=False),
    sa.Column("direction", sa.String(length=16), nullable=False),
    sa.Column("subject_identifier", sa.Text(), nullable=False),
    sa.Column("testcase", sa.Text(), nullable=False),
    sa.Column("product_version", sa.Text(), nullable=False),
    sa.Column("scenario", sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(["waiver_id"], ["waiver.id"]),
    sa.PrimaryKeyConstraint("waiver_id", "api_url", "waiverdb_id")
    )
    op.create_index("ix_waiver_link_waiver_id", "waiver_link", ["waiver_id"])


def downgrade() -> None:
    op.drop_index("ix_waiver_link_waiver_id", table_name="waiver_link")
    op.drop_table("waiver_link")
    op.drop_index("ix_driver_alias_driver_id", table_name="driver_alias")
    op.drop_table("driver_alias")
