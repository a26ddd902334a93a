"""Verdicts pair a driver build only with kernels of its architecture: the verdicts stored before,
of a build on a kernel of another architecture (every module refused by elf_check_arch()), go.
A build's architecture is its first module's; a kernel of unknown architecture keeps its verdicts.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM verdict WHERE EXISTS (SELECT 1 FROM kernel, build_module, module"
               " WHERE kernel.id = verdict.kernel_id AND build_module.build_id = verdict.build_id"
               " AND build_module.position = 0 AND module.id = build_module.module_id"
               " AND kernel.machine IS NOT NULL AND kernel.machine <> module.machine)")


def downgrade() -> None:
    pass  # the verdicts are judged again where asked (kabigate db refresh with an older kabigate)
