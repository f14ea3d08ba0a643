"""Initial schema: members, datasets, experiments, groups, runs, metrics, logs, submissions,
ensembles, pseudo-label rounds, workers, jobs and the audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:45:35.740976
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('members',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=True),
        sa.Column('role', sa.Enum('admin', 'member', 'viewer', name='memberrole', native_enum=False, length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_members')),
        sa.UniqueConstraint('email', name=op.f('uq_members_email')),
        sa.UniqueConstraint('name', name=op.f('uq_members_name'))
    )
    op.create_table('audit_events',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('object_kind', sa.String(length=32), nullable=False),
        sa.Column('object_id', sa.Integer(), nullable=True),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['actor_id'], ['members.id'], name=op.f('fk_audit_events_actor_id_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_index(op.f('ix_audit_events_actor_id'), 'audit_events', ['actor_id'], unique=False)
    op.create_index('ix_audit_events_object', 'audit_events', ['object_kind', 'object_id'], unique=False)
    op.create_index(op.f('ix_audit_events_ts'), 'audit_events', ['ts'], unique=False)
    op.create_table('datasets',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('source', sa.JSON(), nullable=False),
        sa.Column('classes', sa.JSON(), nullable=False),
        sa.Column('task', sa.Enum('multiclass', 'multilabel', name='taskkind', native_enum=False, length=32), nullable=False),
        sa.Column('ignore_index', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=128), nullable=True),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('statistics', sa.JSON(), nullable=True),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['members.id'], name=op.f('fk_datasets_created_by_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
        sa.UniqueConstraint('name', name=op.f('uq_datasets_name'))
    )
    op.create_table('jobs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.Enum('predict', 'evaluate', 'ensemble', 'pseudo', 'dataset_import', 'submission', name='jobkind', native_enum=False, length=32), nullable=False),
        sa.Column('target', sa.JSON(), nullable=False),
        sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='runstatus', native_enum=False, length=32), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('worker_name', sa.String(length=200), nullable=True),
        sa.Column('device', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['members.id'], name=op.f('fk_jobs_created_by_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_lease', 'jobs', ['status', 'lease_expires_at'], unique=False)
    op.create_index('ix_jobs_queue', 'jobs', ['status', 'priority', 'queued_at'], unique=False)
    op.create_table('ensembles',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('method', sa.Enum('soft', 'geometric', 'majority', 'weighted', name='ensemblemethod', native_enum=False, length=32), nullable=False),
        sa.Column('members', sa.JSON(), nullable=False),
        sa.Column('tta', sa.JSON(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('monitor_metric', sa.String(length=32), nullable=False),
        sa.Column('val_score', sa.Double(), nullable=True),
        sa.Column('val_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
        sa.Column('member_scores', sa.JSON(), nullable=True),
        sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='runstatus', native_enum=False, length=32), nullable=False),
        sa.Column('test_store', sa.String(length=1024), nullable=True),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_ensembles_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_ensembles_owner_id_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ensembles'))
    )
    op.create_index(op.f('ix_ensembles_dataset_id'), 'ensembles', ['dataset_id'], unique=False)
    op.create_table('experiments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('expansion', sa.JSON(), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('tags', sa.JSON(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_experiments_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_experiments_owner_id_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments'))
    )
    op.create_index(op.f('ix_experiments_dataset_id'), 'experiments', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_experiments_owner_id'), 'experiments', ['owner_id'], unique=False)
    op.create_table('pseudo_rounds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('teacher_kind', sa.Enum('run', 'group', 'ensemble', name='sourcekind', native_enum=False, length=32), nullable=False),
        sa.Column('teacher_id', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=True),
        sa.Column('source_dataset_id', sa.Integer(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('parent_round_id', sa.Integer(), nullable=True),
        sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='runstatus', native_enum=False, length=32), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['members.id'], name=op.f('fk_pseudo_rounds_created_by_members'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_pseudo_rounds_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['parent_round_id'], ['pseudo_rounds.id'], name=op.f('fk_pseudo_rounds_parent_round_id_pseudo_rounds'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['source_dataset_id'], ['datasets.id'], name=op.f('fk_pseudo_rounds_source_dataset_id_datasets'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pseudo_rounds'))
    )
    op.create_table('run_groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('experiment_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.Enum('single', 'folds_seeds', 'grid_value', name='groupkind', native_enum=False, length=32), nullable=False),
        sa.Column('label', sa.String(length=300), nullable=False),
        sa.Column('axis_value', sa.JSON(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('monitor_metric', sa.String(length=32), nullable=False),
        sa.Column('oof_store', sa.String(length=1024), nullable=True),
        sa.Column('test_store', sa.String(length=1024), nullable=True),
        sa.Column('oof_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
        sa.Column('oof_score', sa.Double(), nullable=True),
        sa.Column('aggregated_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_run_groups_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_run_groups_experiment_id_experiments'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_run_groups_owner_id_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_run_groups'))
    )
    op.create_index(op.f('ix_run_groups_dataset_id'), 'run_groups', ['dataset_id'], unique=False)
    op.create_index(op.f('ix_run_groups_experiment_id'), 'run_groups', ['experiment_id'], unique=False)
    op.create_table('runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('experiment_id', sa.Integer(), nullable=False),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('name', sa.String(length=300), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('arch', sa.String(length=64), nullable=False),
        sa.Column('encoder', sa.String(length=128), nullable=False),
        sa.Column('fold', sa.Integer(), nullable=True),
        sa.Column('seed', sa.Integer(), nullable=False),
        sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='runstatus', native_enum=False, length=32), nullable=False),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('worker_name', sa.String(length=200), nullable=True),
        sa.Column('device', sa.String(length=64), nullable=True),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('queued_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('current_epoch', sa.Integer(), nullable=True),
        sa.Column('total_epochs', sa.Integer(), nullable=True),
        sa.Column('images_per_s', sa.Double(), nullable=True),
        sa.Column('eta_s', sa.Double(), nullable=True),
        sa.Column('best_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
        sa.Column('monitor_metric', sa.String(length=32), nullable=False),
        sa.Column('monitor_value', sa.Double(), nullable=True),
        sa.Column('error_message', sa.Text(), nullable=True),
        sa.Column('artifact_dir', sa.String(length=1024), nullable=True),
        sa.Column('checkpoint_dir', sa.String(length=1024), nullable=True),
        sa.Column('val_store', sa.String(length=1024), nullable=True),
        sa.Column('test_store', sa.String(length=1024), nullable=True),
        sa.Column('dataset_fingerprint', sa.String(length=128), nullable=True),
        sa.Column('parent_run_id', sa.Integer(), nullable=True),
        sa.Column('pseudo_round_id', sa.Integer(), nullable=True),
        sa.Column('tags', sa.JSON(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_runs_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_runs_experiment_id_experiments'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['run_groups.id'], name=op.f('fk_runs_group_id_run_groups'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['owner_id'], ['members.id'], name=op.f('fk_runs_owner_id_members'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['parent_run_id'], ['runs.id'], name=op.f('fk_runs_parent_run_id_runs'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['pseudo_round_id'], ['pseudo_rounds.id'], name=op.f('fk_runs_pseudo_round_id_pseudo_rounds'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_index(op.f('ix_runs_arch'), 'runs', ['arch'], unique=False)
    op.create_index(op.f('ix_runs_experiment_id'), 'runs', ['experiment_id'], unique=False)
    op.create_index(op.f('ix_runs_group_id'), 'runs', ['group_id'], unique=False)
    op.create_index('ix_runs_leaderboard', 'runs', ['dataset_id', 'status', 'monitor_value'], unique=False)
    op.create_index('ix_runs_lease', 'runs', ['status', 'lease_expires_at'], unique=False)
    op.create_index(op.f('ix_runs_owner_id'), 'runs', ['owner_id'], unique=False)
    op.create_index(op.f('ix_runs_parent_run_id'), 'runs', ['parent_run_id'], unique=False)
    op.create_index(op.f('ix_runs_pseudo_round_id'), 'runs', ['pseudo_round_id'], unique=False)
    op.create_index('ix_runs_queue', 'runs', ['status', 'priority', 'queued_at'], unique=False)
    op.create_index('ix_runs_status_monitor', 'runs', ['status', 'monitor_value'], unique=False)
    op.create_table('epoch_metrics',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('train_loss', sa.Double(), nullable=True),
        sa.Column('lr', sa.Double(), nullable=True),
        sa.Column('images_per_s', sa.Double(), nullable=True),
        sa.Column('val', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_epoch_metrics_run_id_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_epoch_metrics')),
        sa.UniqueConstraint('run_id', 'epoch', name=op.f('uq_epoch_metrics_run_id_epoch'))
    )
    op.create_table('run_logs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('job_id', sa.Integer(), nullable=True),
        sa.Column('ts', sa.DateTime(timezone=True), nullable=False),
        sa.Column('level', sa.Enum('debug', 'info', 'warning', 'error', name='loglevel', native_enum=False, length=32), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_run_logs_job_id_jobs'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_logs_run_id_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_run_logs'))
    )
    op.create_index('ix_run_logs_job', 'run_logs', ['job_id', 'id'], unique=False)
    op.create_index('ix_run_logs_run', 'run_logs', ['run_id', 'id'], unique=False)
    op.create_table('submissions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('group_id', sa.Integer(), nullable=True),
        sa.Column('ensemble_id', sa.Integer(), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.Column('file_path', sa.String(length=1024), nullable=True),
        sa.Column('format', sa.String(length=32), nullable=False),
        sa.Column('tta', sa.JSON(), nullable=True),
        sa.Column('public_score', sa.Double(), nullable=True),
        sa.Column('score_entered_by', sa.Integer(), nullable=True),
        sa.Column('score_entered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('note', sa.Text(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('(CASE WHEN run_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN group_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN ensemble_id IS NULL THEN 0 ELSE 1 END) = 1', name=op.f('ck_submissions_one_source')),
        sa.ForeignKeyConstraint(['created_by'], ['members.id'], name=op.f('fk_submissions_created_by_members'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_submissions_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['ensemble_id'], ['ensembles.id'], name=op.f('fk_submissions_ensemble_id_ensembles'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['group_id'], ['run_groups.id'], name=op.f('fk_submissions_group_id_run_groups'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_submissions_run_id_runs'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['score_entered_by'], ['members.id'], name=op.f('fk_submissions_score_entered_by_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_submissions'))
    )
    op.create_index('ix_submissions_dataset_scored', 'submissions', ['dataset_id', 'public_score'], unique=False)
    op.create_index(op.f('ix_submissions_ensemble_id'), 'submissions', ['ensemble_id'], unique=False)
    op.create_index(op.f('ix_submissions_group_id'), 'submissions', ['group_id'], unique=False)
    op.create_index(op.f('ix_submissions_run_id'), 'submissions', ['run_id'], unique=False)
    op.create_table('worker_nodes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('hostname', sa.String(length=255), nullable=False),
        sa.Column('devices', sa.JSON(), nullable=False),
        sa.Column('current_run_id', sa.Integer(), nullable=True),
        sa.Column('status', sa.Enum('idle', 'busy', 'offline', name='workerstatus', native_enum=False, length=32), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['current_run_id'], ['runs.id'], name=op.f('fk_worker_nodes_current_run_id_runs'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_nodes')),
        sa.UniqueConstraint('name', name=op.f('uq_worker_nodes_name'))
    )


def downgrade() -> None:
    # dropping a table drops its indexes and constraints; children before parents
    op.drop_table('worker_nodes')
    op.drop_table('submissions')
    op.drop_table('run_logs')
    op.drop_table('epoch_metrics')
    op.drop_table('runs')
    op.drop_table('run_groups')
    op.drop_table('pseudo_rounds')
    op.drop_table('experiments')
    op.drop_table('ensembles')
    op.drop_table('jobs')
    op.drop_table('datasets')
    op.drop_table('audit_events')
    op.drop_table('members')
