"""Progress within an epoch, per-epoch resource use, a public score's own note, a dataset's background.

- ``runs.epoch_progress``: the share (0-1) of the current epoch's steps done, so a progress bar
  moves within an epoch;
- ``epoch_metrics.resources``: CPU, memory and GPU use sampled at the end of each epoch;
- ``submissions.score_note``: the note entered with a public score, kept apart from the
  submission's own note;
- ``datasets.background``: the dataset's background class (or none), used the same way by every
  overlay, legend and error analysis; filled for existing datasets by the rule new ones get (a COCO
  dataset's class 0, else a multiclass class 0 named like a background).

All new columns are nullable; existing rows are kept as they are (no table is copied).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 22:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the names that make a multiclass class 0 a background (worker.services.datasets.BACKGROUND_NAMES then)
_BACKGROUND_NAMES = frozenset({"background", "bg", "_background_", "__background__", "backgrounds"})
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('runs', recreate='never') as batch:
        batch.add_column(sa.Column('epoch_progress', sa.Double(), nullable=True))
    with op.batch_alter_table('epoch_metrics', recreate='never') as batch:
        batch.add_column(sa.Column('resources', _JSON, nullable=True))
    with op.batch_alter_table('submissions', recreate='never') as batch:
        batch.add_column(sa.Column('score_note', sa.Text(), nullable=True))
    with op.batch_alter_table('datasets', recreate='never') as batch:
        batch.add_column(sa.Column('background', sa.Integer(), nullable=True))
    datasets = sa.table('datasets', sa.column('id', sa.Integer), sa.column('source', _JSON),
                        sa.column('classes', _JSON), sa.column('task', sa.String), sa.column('background', sa.Integer))
    bind = op.get_bind()
    for row in bind.execute(sa.select(datasets.c.id, datasets.c.source, datasets.c.classes, datasets.c.task)):
        classes, fmt = list(row.classes or []), (row.source or {}).get('format')
        first = str(classes[0]).strip().lower() if classes else ''
        if str(row.task).lower() == 'multiclass' and (fmt == 'coco' or first in _BACKGROUND_NAMES):
            bind.execute(sa.update(datasets).where(datasets.c.id == row.id).values(background=0))


def downgrade() -> None:
    with op.batch_alter_table('datasets', recreate='never') as batch:
        batch.drop_column('background')
    with op.batch_alter_table('submissions', recreate='never') as batch:
        batch.drop_column('score_note')
    with op.batch_alter_table('epoch_metrics', recreate='never') as batch:
        batch.drop_column('resources')
    with op.batch_alter_table('runs', recreate='never') as batch:
        batch.drop_column('epoch_progress')
