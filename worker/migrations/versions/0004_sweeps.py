"""Sweeps: the ``sweeps`` table (a search's spec, budget, status and Optuna study name) and
``sweep_trials`` (each trial's number, parameters, experiment, run and told result).

Only new tables, so no existing table is altered or copied. Optuna's own tables (``studies``,
``trials`` ...) are not created here: Optuna's storage creates them in the same database on first
use, and Alembic's autogenerate leaves them out (``worker.db._sweeps.include_object``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('sweeps',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('study_name', sa.String(length=200), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('budget', sa.Integer(), nullable=False),
        sa.Column('parallelism', sa.Integer(), nullable=False),
        sa.Column('metric', sa.String(length=64), nullable=False),
        sa.Column('direction', sa.String(length=16), nullable=False),
        sa.Column('status', sa.Enum('running', 'finished', 'cancelled', name='sweepstatus', native_enum=False,
                                    length=32), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_sweeps_dataset_id_datasets'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_sweeps_owner_id_members'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
        sa.UniqueConstraint('study_name', name=op.f('uq_sweeps_study_name'))
    )
    op.create_index(op.f('ix_sweeps_dataset_id'), 'sweeps', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_sweeps_owner_id'), 'sweeps', ['owner_id'], unique=False)
    op.create_table('sweep_trials',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sweep_id', sa.Integer(), nullable=False),
        sa.Column('trial_number', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('experiment_id', sa.Integer(), nullable=True),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=True),
        sa.Column('value', sa.Double(), nullable=True),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('told_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                                name=op.f('fk_sweep_trials_experiment_id_experiments'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_sweep_trials_run_id_runs'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], name=op.f('fk_sweep_trials_sweep_id_sweeps'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sweep_trials')),
        sa.UniqueConstraint('run_id', name=op.f('uq_sweep_trials_run_id')),
        sa.UniqueConstraint('sweep_id', 'trial_number', name=op.f('uq_sweep_trials_sweep_id_trial_number'))
    )
    op.create_index(op.f('ix_sweep_trials_experiment_id'), 'sweep_trials', ['experiment_id'], unique=False)
    op.create_index(op.f('ix_sweep_trials_sweep_id'), 'sweep_trials', ['sweep_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_sweep_trials_sweep_id'), table_name='sweep_trials')
    op.drop_index(op.f('ix_sweep_trials_experiment_id'), table_name='sweep_trials')
    op.drop_table('sweep_trials')
    op.drop_index(op.f('ix_sweeps_owner_id'), table_name='sweeps')
    op.drop_index(op.f('ix_sweeps_dataset_id'), table_name='sweeps')
    op.drop_table('sweeps')
