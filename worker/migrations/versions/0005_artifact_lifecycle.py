"""Artifact lifecycle: a ``pinned`` flag on runs, groups and experiments (no retention policy touches them).

Existing rows are unpinned. On SQLite the tables are altered in place (ADD COLUMN / DROP COLUMN),
never copied: copying ``runs`` would drop the old table, and with foreign keys on that fires the
ON DELETE actions of every table that refers to it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ('runs', 'run_groups', 'experiments')


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, recreate='never') as batch:
            batch.add_column(sa.Column('pinned', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): batch mode would copy the tables
    for table in _TABLES:
        op.drop_column(table, 'pinned')
