"""Alembic's entry point: runs on the connection ``upgrade`` passes (inside its transaction)."""

from alembic import context

from dissemination.ledger.tables import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite has few ALTERs: batch mode rebuilds a table when needed
)
with context.begin_transaction():
    context.run_migrations()
