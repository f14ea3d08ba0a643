"""Accounts: password hash, OIDC subject and credentials-changed time on members; login sessions,
API tokens and uploads.

Every new column is nullable and every new table empty, so existing rows are kept as they are.
On SQLite the members table is altered in place (ADD COLUMN, CREATE INDEX, DROP COLUMN), never
copied: copying it would drop the old table, and with foreign keys on, that fires the ON DELETE
actions of every table that refers to members (run owners set to NULL, and so on).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 21:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode, but only with operations SQLite does in place (no table copy)
    with op.batch_alter_table('members', recreate='never') as batch:
        batch.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('oidc_subject', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('credentials_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f('ix_members_oidc_subject'), ['oidc_subject'], unique=True)
    op.create_table('login_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('member_id', sa.Integer(), nullable=False),
        sa.Column('method', sa.Enum('password', 'oidc', name='loginmethod', native_enum=False, length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_login_sessions_member_id_members'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_login_sessions')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_login_sessions_token_hash'))
    )
    op.create_index(op.f('ix_login_sessions_member_id'), 'login_sessions', ['member_id'], unique=False)
    op.create_table('api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('member_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_api_tokens_member_id_members'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_member_id'), 'api_tokens', ['member_id'], unique=False)
    op.create_table('uploads',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('member_id', sa.Integer(), nullable=True),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('status', sa.Enum('active', 'done', 'failed', name='uploadstatus', native_enum=False, length=32), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('dataset_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_uploads_dataset_id_datasets'), ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_uploads_member_id_members'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads'))
    )
    op.create_index(op.f('ix_uploads_dataset_id'), 'uploads', ['dataset_id'], unique=False)
    op.create_index('ix_uploads_member_status', 'uploads', ['member_id', 'status'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_uploads_member_status', table_name='uploads')
    op.drop_index(op.f('ix_uploads_dataset_id'), table_name='uploads')
    op.drop_table('uploads')
    op.drop_index(op.f('ix_api_tokens_member_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_index(op.f('ix_login_sessions_member_id'), table_name='login_sessions')
    op.drop_table('login_sessions')
    op.drop_index(op.f('ix_members_oidc_subject'), table_name='members')
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): batch mode would copy the members table
    for column in ('credentials_changed_at', 'oidc_subject', 'password_hash'):
        op.drop_column('members', column)
