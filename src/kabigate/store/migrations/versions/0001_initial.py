"""The first store: kernels and their export sets, streams, driver builds and modules, verdicts.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("driver",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name")
    )
    op.create_table("export_set",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("members", sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest")
    )
    op.create_table("module",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.Column("machine", sa.String(length=64), nullable=False),
    sa.Column("vermagic", sa.String(length=512), nullable=True),
    sa.Column("license", sa.String(length=200), nullable=True),
    sa.Column("signer", sa.String(length=512), nullable=True),
    sa.Column("facts", sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest")
    )
    op.create_index(op.f("ix_module_name"), "module", ["name"], unique=False)
    op.create_table("stream",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name")
    )
    op.create_table("symbol",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=512), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name")
    )
    op.create_table("driver_build",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("driver_id", sa.Integer(), nullable=False),
    sa.Column("package", sa.String(length=200), nullable=True),
    sa.Column("version", sa.String(length=200), nullable=True),
    sa.Column("arch", sa.String(length=64), nullable=True),
    sa.Column("format", sa.String(length=16), nullable=False),
    sa.Column("built_for", sa.String(length=200), nullable=True),
    sa.Column("source", sa.Text(), nullable=False),
    sa.Column("greylist", sa.Text(), nullable=True),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["driver_id"], ["driver.id"], ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest")
    )
    op.create_index(op.f("ix_driver_build_driver_id"), "driver_build", ["driver_id"], unique=False)
    op.create_table("export",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=32), nullable=False),
    sa.Column("symbol_id", sa.Integer(), nullable=False),
    sa.Column("crc", sa.BigInteger(), nullable=True),
    sa.Column("export_type", sa.String(length=64), nullable=False),
    sa.Column("namespace", sa.String(length=200), nullable=False),
    sa.Column("owner", sa.String(length=512), nullable=False),
    sa.ForeignKeyConstraint(["symbol_id"], ["symbol.id"], ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest")
    )
    op.create_index(op.f("ix_export_symbol_id"), "export", ["symbol_id"], unique=False)
    op.create_table("kernel",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("digest", sa.String(length=64), nullable=False),
    sa.Column("release", sa.String(length=200), nullable=False),
    sa.Column("machine", sa.String(length=64), nullable=True),
    sa.Column("flavor", sa.String(length=64), nullable=False),
    sa.Column("vermagic", sa.String(length=512), nullable=True),
    sa.Column("module_layout_crc", sa.BigInteger(), nullable=True),
    sa.Column("export_set_id", sa.Integer(), nullable=False),
    sa.Column("config", sa.LargeBinary(), nullable=False),
    sa.Column("package_version", sa.String(length=200), nullable=True),
    sa.Column("build_date", sa.String(length=100), nullable=True),
    sa.Column("sources", sa.Text(), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["export_set_id"], ["export_set.id"], ),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("digest")
    )
    op.create_index(op.f("ix_kernel_release"), "kernel", ["release"], unique=False)
    op.create_table("module_import",
    sa.Column("module_id", sa.Integer(), nullable=False),
    sa.Column("symbol_id", sa.Integer(), nullable=False),
    sa.Column("crc", sa.BigInteger(), nullable=True),
    sa.Column("weak", sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(["module_id"], ["module.id"], ),
    sa.ForeignKeyConstraint(["symbol_id"], ["symbol.id"], ),
    sa.PrimaryKeyConstraint("module_id", "symbol_id")
    )
    op.create_index("ix_module_import_symbol", "module_import", ["symbol_id"], unique=False)
    op.create_table("build_module",
    sa.Column("build_id", sa.Integer(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("module_id", sa.Integer(), nullable=False),
    sa.Column("path", sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(["build_id"], ["driver_build.id"], ),
    sa.ForeignKeyConstraint(["module_id"], ["module.id"], ),
    sa.PrimaryKeyConstraint("build_id", "position")
    )
    op.create_index(op.f("ix_build_module_module_id"), "build_module", ["module_id"], unique=False)
    op.create_table("stream_kernel",
    sa.Column("stream_id", sa.Integer(), nullable=False),
    sa.Column("kernel_id", sa.Integer(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(["kernel_id"], ["kernel.id"], ),
    sa.ForeignKeyConstraint(["stream_id"], ["stream.id"], ),
    sa.PrimaryKeyConstraint("stream_id", "kernel_id")
    )
    op.create_table("verdict",
    sa.Column("build_id", sa.Integer(), nullable=False),
    sa.Column("kernel_id", sa.Integer(), nullable=False),
    sa.Column("rules_version", sa.Integer(), nullable=False),
    sa.Column("loads", sa.Boolean(), nullable=False),
    sa.Column("modules", sa.Integer(), nullable=False),
    sa.Column("modules_loading", sa.Integer(), nullable=False),
    sa.Column("first_reason", sa.String(length=64), nullable=True),
    sa.Column("failing_symbols", sa.Integer(), nullable=False),
    sa.Column("detail", sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(["build_id"], ["driver_build.id"], ),
    sa.ForeignKeyConstraint(["kernel_id"], ["kernel.id"], ),
    sa.PrimaryKeyConstraint("build_id", "kernel_id")
    )
    op.create_index("ix_verdict_kernel", "verdict", ["kernel_id"], unique=False)

def downgrade() -> None:
    op.drop_table("verdict")
    op.drop_table("stream_kernel")
    op.drop_table("build_module")
    op.drop_table("module_import")
    op.drop_table("kernel")
    op.drop_table("export")
    op.drop_table("driver_build")
    op.drop_table("symbol")
    op.drop_table("stream")
    op.drop_table("module")
    op.drop_table("export_set")
    op.drop_table("driver")
