"""dataset kinds: table, arrays, images, text

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every dataset before this revision was a CSV, so the server default makes them tables.
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="table", nullable=False))
        batch_op.add_column(sa.Column("summary", sa.JSON(), server_default="{}", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("datasets", schema=None) as batch_op:
        batch_op.drop_column("summary")
        batch_op.drop_column("kind")
