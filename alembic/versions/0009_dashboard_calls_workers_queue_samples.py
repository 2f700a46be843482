"""dashboard: LLM and tool calls per task, worker heartbeats, queue-depth samples, tasks by end time

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:19:41.198848
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('queue_samples',
    sa.Column('queue', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ready', sa.Integer(), nullable=False),
    sa.Column('delayed', sa.Integer(), nullable=False),
    sa.Column('dead', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('queue', 'at', name=op.f('pk_queue_samples'))
    )
    op.create_index(op.f('ix_queue_samples_at'), 'queue_samples', ['at'], unique=False)
    op.create_table('worker_processes',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('queues', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('threads', sa.Integer(), nullable=False),
    sa.Column('in_flight', sa.Integer(), nullable=False),
    sa.Column('tasks_done', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('stopped_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_processes'))
    )
    op.create_index(op.f('ix_worker_processes_heartbeat_at'), 'worker_processes', ['heartbeat_at'], unique=False)
    op.create_table('task_calls',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), nullable=False),
    sa.Column('completion_tokens', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_calls_task_id_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_calls'))
    )
    op.create_index(op.f('ix_task_calls_started_at'), 'task_calls', ['started_at'], unique=False)
    op.create_index('ix_task_calls_task_id_id', 'task_calls', ['task_id', 'id'], unique=False)
    op.create_index(op.f('ix_tasks_finished_at'), 'tasks', ['finished_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_tasks_finished_at'), table_name='tasks')
    op.drop_index('ix_task_calls_task_id_id', table_name='task_calls')
    op.drop_index(op.f('ix_task_calls_started_at'), table_name='task_calls')
    op.drop_table('task_calls')
    op.drop_index(op.f('ix_worker_processes_heartbeat_at'), table_name='worker_processes')
    op.drop_table('worker_processes')
    op.drop_index(op.f('ix_queue_samples_at'), table_name='queue_samples')
    op.drop_table('queue_samples')
