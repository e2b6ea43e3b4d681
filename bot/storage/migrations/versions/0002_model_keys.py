"""Server endpoints' API keys, sealed (see bot/keybox.py); the environment-variable field is dropped from their specs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("guild_models") as batch:
        batch.add_column(sa.Column("api_key", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_models") as batch:
        batch.drop_column("api_key")
