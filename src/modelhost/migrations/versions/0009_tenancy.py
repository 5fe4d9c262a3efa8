"""tenancy: users, projects, memberships; keys scoped to a project, a deployment and limits;
every resource in a project (existing ones in "default")

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 22:15:00.000000

SQLite cannot add a foreign key or NOT NULL to an existing table without copying it, and
copying a table drops the old one, which (foreign keys on, inside the migration's
transaction) fires ON DELETE CASCADE on the rows pointing at it. So on SQLite the new
columns are added in place (``ADD COLUMN ... REFERENCES``, nullable; the ORM never writes
NULL); PostgreSQL gets NOT NULL and named constraints.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

import modelhost.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

RESOURCES = ("datasets", "models", "deployments", "runs", "sweeps")
KEY_REFS = (("user_id", "users"), ("project_id", "projects"), ("deployment_id", "deployments"))


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _add_reference(table: str, column: str, target: str, ondelete: str | None) -> None:
    if _sqlite():
        action = f" ON DELETE {ondelete}" if ondelete else ""
        op.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER REFERENCES {target} (id){action}")
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(
            f"fk_{table}_{column}_{target}", table, target, [column], ["id"], ondelete=ondelete
        )
    op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", modelhost.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", modelhost.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    projects = op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", modelhost.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
        sa.UniqueConstraint("name", name=op.f("uq_projects_name")),
    )
    op.create_table(
        "memberships",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_memberships_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint("user_id", "project_id", name="uq_memberships_user_project"),
    )
    op.create_index(op.f("ix_memberships_user_id"), "memberships", ["user_id"])
    op.create_index(op.f("ix_memberships_project_id"), "memberships", ["project_id"])
    op.bulk_insert(projects, [{"name": "default", "created_at": dt.datetime.now(dt.UTC)}])
    default = op.get_bind().scalar(sa.text("SELECT id FROM projects WHERE name = 'default'"))

    for column, target in KEY_REFS:
        _add_reference("api_keys", column, target, "CASCADE")
    op.add_column("api_keys", sa.Column("rate_limit_rps", sa.Float(), nullable=True))
    op.add_column("api_keys", sa.Column("tokens_per_min", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("tokens_total", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("tokens_used", sa.BigInteger(), server_default="0", nullable=False))
    # Keys below admin worked on everything; they keep working on what now sits in "default".
    op.execute(sa.text("UPDATE api_keys SET project_id = :p WHERE role <> 'admin'").bindparams(p=default))

    for table in RESOURCES:
        _add_reference(table, "project_id", "projects", None)
        op.execute(sa.text(f"UPDATE {table} SET project_id = :p").bindparams(p=default))
        if not _sqlite():
            op.alter_column(table, "project_id", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    for table in RESOURCES:
        op.drop_index(f"ix_{table}_project_id", table_name=table)
        with op.batch_alter_table(table) as batch_op:
            if not _sqlite():
                batch_op.drop_constraint(f"fk_{table}_project_id_projects", type_="foreignkey")
            batch_op.drop_column("project_id")
    for column, _ in KEY_REFS:
        op.drop_index(f"ix_api_keys_{column}", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch_op:
        for column, target in KEY_REFS:
            if not _sqlite():
                batch_op.drop_constraint(f"fk_api_keys_{column}_{target}", type_="foreignkey")
            batch_op.drop_column(column)
        for column in ("rate_limit_rps", "tokens_per_min", "tokens_total", "tokens_used"):
            batch_op.drop_column(column)
    op.drop_table("memberships")
    op.drop_table("projects")
    op.drop_table("users")
