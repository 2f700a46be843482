"""security: API keys, tenants (limits and usage), idempotency keys

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 16:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('tenant', sa.String(length=64), nullable=False),
        sa.Column('scopes', JSON, nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
        sa.UniqueConstraint('hash', name=op.f('uq_api_keys_hash')),
    )
    op.create_index(op.f('ix_api_keys_tenant'), 'api_keys', ['tenant'], unique=False)
    op.create_table(
        'idempotency_keys',
        sa.Column('tenant', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('body_hash', sa.String(length=64), nullable=False),
        sa.Column('task_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['task_id'], ['tasks.id'], name=op.f('fk_idempotency_keys_task_id_tasks'), ondelete='CASCADE'
        ),
        sa.PrimaryKeyConstraint('tenant', 'key', name=op.f('pk_idempotency_keys')),
    )
    op.create_index(op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False)
    op.create_index(op.f('ix_idempotency_keys_task_id'), 'idempotency_keys', ['task_id'], unique=False)
    op.create_table(
        'tenants',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('max_concurrency', sa.Integer(), nullable=True),
        sa.Column('monthly_tokens', sa.BigInteger(), nullable=True),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_tenants')),
    )
    op.create_table(
        'tenant_usage',
        sa.Column('tenant', sa.String(length=64), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('tokens', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('tenant', 'month', name=op.f('pk_tenant_usage')),
    )
    op.add_column('tasks', sa.Column('tenant', sa.String(length=64), server_default='system', nullable=False))
    op.create_index(op.f('ix_tasks_tenant'), 'tasks', ['tenant'], unique=False)
    op.add_column('events', sa.Column('tenant', sa.String(length=64), server_default='system', nullable=False))
    op.create_index(op.f('ix_events_tenant'), 'events', ['tenant'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_events_tenant'), table_name='events')
    op.drop_column('events', 'tenant')
    op.drop_index(op.f('ix_tasks_tenant'), table_name='tasks')
    op.drop_column('tasks', 'tenant')
    op.drop_table('tenant_usage')
    op.drop_table('tenants')
    op.drop_index(op.f('ix_idempotency_keys_task_id'), table_name='idempotency_keys')
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index(op.f('ix_api_keys_tenant'), table_name='api_keys')
    op.drop_table('api_keys')
