"""Statuses with one owner: ``lost_count`` on runs and jobs; status and error of ensembles,
pseudo-label rounds and submissions derived from their jobs.

The data is carried over: ``lost_count`` is counted once from the log lines the reaper wrote
("requeued: worker ...") since the last manual requeue ("requeued; ..."), which is what the
reaper's rule read before; an ensemble, round or submission whose latest job failed or was
cancelled takes that status and the job's error.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 19:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='runstatus', native_enum=False,
                  length=32)
_OWNERS = {"ensemble": ("ensembles", "ensemble_id"), "pseudo": ("pseudo_rounds", "round_id"),
           "submission": ("submissions", "submission_id")}


def upgrade() -> None:
    for table in ("runs", "jobs"):
        op.add_column(table, sa.Column('lost_count', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('ensembles', sa.Column('error_message', sa.Text(), nullable=True))
    op.add_column('pseudo_rounds', sa.Column('error_message', sa.Text(), nullable=True))
    op.add_column('submissions', sa.Column('status', _STATUS, nullable=False, server_default='succeeded'))
    op.add_column('submissions', sa.Column('error_message', sa.Text(), nullable=True))
    _carry_over(op.get_bind())


def _carry_over(conn: sa.Connection) -> None:
    logs = sa.table('run_logs', sa.column('id'), sa.column('run_id'), sa.column('job_id'), sa.column('message'))
    for table, owner in (("runs", logs.c.run_id), ("jobs", logs.c.job_id)):
        lost: dict[int, int] = {}
        rows = conn.execute(
            sa.select(owner, logs.c.message)
            .where(owner.is_not(None), sa.or_(logs.c.message.like('requeued: worker %'),
                                               logs.c.message.like('requeued; %')))
            .order_by(logs.c.id)
        )
        for object_id, message in rows:
            lost[object_id] = lost.get(object_id, 0) + 1 if message.startswith('requeued: worker ') else 0
        t = sa.table(table, sa.column('id'), sa.column('lost_count'))
        for object_id, n in lost.items():
            if n:
                conn.execute(sa.update(t).where(t.c.id == object_id).values(lost_count=n))
    jobs = sa.table('jobs', sa.column('id'), sa.column('kind'), sa.column('target', sa.JSON()), sa.column('status'),
                    sa.column('error_message'))
    latest: dict[tuple[str, int], tuple[int, str, str | None]] = {}
    for job_id, kind, target, status, error in conn.execute(
        sa.select(jobs.c.id, jobs.c.kind, jobs.c.target, jobs.c.status, jobs.c.error_message)
        .where(jobs.c.kind.in_(list(_OWNERS))).order_by(jobs.c.id)
    ):
        owner_id = (target or {}).get(_OWNERS[kind][1])
        if owner_id is not None:
            latest[(kind, int(owner_id))] = (job_id, status, error)
    for (kind, owner_id), (job_id, status, error) in latest.items():
        if status not in ('failed', 'cancelled'):
            continue
        t = sa.table(_OWNERS[kind][0], sa.column('id'), sa.column('status'), sa.column('error_message'))
        message = f"job {job_id} ({kind}) {status}" + (f": {error}" if error else "")
        conn.execute(sa.update(t).where(t.c.id == owner_id).values(status=status, error_message=message))


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.drop_column('error_message')
        batch.drop_column('status')
    with op.batch_alter_table('pseudo_rounds') as batch:
        batch.drop_column('error_message')
    with op.batch_alter_table('ensembles') as batch:
        batch.drop_column('error_message')
    for table in ("jobs", "runs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('lost_count')
