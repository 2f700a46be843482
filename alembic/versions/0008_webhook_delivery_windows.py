"""webhook delivery windows: a dedupe record that stops counting (GitHub body hashes, a day)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('webhook_deliveries', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_webhook_deliveries_expires_at'), 'webhook_deliveries', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_webhook_deliveries_expires_at'), table_name='webhook_deliveries')
    op.drop_column('webhook_deliveries', 'expires_at')
