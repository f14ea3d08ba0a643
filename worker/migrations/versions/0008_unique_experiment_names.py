"""Experiment names are unique, as dataset names are.

Two experiments of one name made the leaderboard, the queue and every picker ambiguous. Existing
duplicates are kept and told apart first: the oldest keeps its name, each later one gets its id
appended (``"unet-r18"`` -> ``"unet-r18 #12"``), then a unique index holds the rule. Runs keep their
names (a run's name was derived from its experiment's when it was created).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 02:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    experiments = sa.table('experiments', sa.column('id', sa.Integer), sa.column('name', sa.String))
    bind = op.get_bind()
    seen: set[str] = set()
    rows = bind.execute(sa.select(experiments.c.id, experiments.c.name).order_by(experiments.c.id)).all()
    taken = {r.name for r in rows}
    for row in rows:
        if row.name not in seen:
            seen.add(row.name)
            continue
        new = f"{row.name[:190]} #{row.id}"
        while new in taken:
            new += "'"
        taken.add(new)
        bind.execute(sa.update(experiments).where(experiments.c.id == row.id).values(name=new))
    with op.batch_alter_table('experiments', recreate='never') as batch:
        batch.create_index(batch.f('ix_experiments_name'), ['name'], unique=True)


def downgrade() -> None:
    op.drop_index(op.f('ix_experiments_name'), table_name='experiments')
