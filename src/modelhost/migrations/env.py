"""Alembic environment: the connection comes from Database.migrate(), never from a URL here."""

from alembic import context

from modelhost.db import Base, import_all_tables

import_all_tables()
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
