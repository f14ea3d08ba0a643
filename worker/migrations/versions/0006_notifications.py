"""Notifications: webhook hooks (per member or per experiment) and their deliveries (the outbox).

Two new tables; no existing table is altered, so nothing is copied on SQLite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notification_hooks',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('member_id', sa.Integer(), nullable=True),
        sa.Column('experiment_id', sa.Integer(), nullable=True),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('payload_format', sa.Enum('slack', 'discord', name='payloadformat', native_enum=False, length=32),
                  nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint('(CASE WHEN member_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN experiment_id IS NULL '
                           'THEN 0 ELSE 1 END) = 1', name=op.f('ck_notification_hooks_one_scope')),
        sa.ForeignKeyConstraint(['created_by'], ['members.id'], name=op.f('fk_notification_hooks_created_by_members'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'],
                                name=op.f('fk_notification_hooks_experiment_id_experiments'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_notification_hooks_member_id_members'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_hooks'))
    )
    op.create_index(op.f('ix_notification_hooks_experiment_id'), 'notification_hooks', ['experiment_id'],
                    unique=False)
    op.create_index(op.f('ix_notification_hooks_member_id'), 'notification_hooks', ['member_id'], unique=False)
    op.create_table('notification_deliveries',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hook_id', sa.Integer(), nullable=False),
        sa.Column('event', sa.String(length=32), nullable=False),
        sa.Column('object_kind', sa.String(length=32), nullable=False),
        sa.Column('object_id', sa.Integer(), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('page', sa.String(length=300), nullable=True),
        sa.Column('status', sa.Enum('pending', 'sent', 'failed', name='deliverystatus', native_enum=False, length=32),
                  nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['hook_id'], ['notification_hooks.id'],
                                name=op.f('fk_notification_deliveries_hook_id_notification_hooks'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries'))
    )
    op.create_index('ix_notification_deliveries_due', 'notification_deliveries', ['status', 'next_attempt_at'],
                    unique=False)
    op.create_index(op.f('ix_notification_deliveries_hook_id'), 'notification_deliveries', ['hook_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_notification_deliveries_hook_id'), table_name='notification_deliveries')
    op.drop_index('ix_notification_deliveries_due', table_name='notification_deliveries')
    op.drop_table('notification_deliveries')
    op.drop_index(op.f('ix_notification_hooks_member_id'), table_name='notification_hooks')
    op.drop_index(op.f('ix_notification_hooks_experiment_id'), table_name='notification_hooks')
    op.drop_table('notification_hooks')
