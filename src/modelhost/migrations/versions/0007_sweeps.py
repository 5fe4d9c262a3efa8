"""sweeps: a search space's trials and the metric that ranks them

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 19:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

import modelhost.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("lower_is_better", sa.Boolean(), nullable=False),
        sa.Column("trials", sa.JSON(), nullable=False),
        sa.Column("created_at", modelhost.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("sweeps")
