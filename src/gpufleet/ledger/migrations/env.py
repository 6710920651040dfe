"""Alembic environment: migrations run on the connection gpufleet passes in."""

from alembic import context

from gpufleet.ledger.schema import metadata

connection = context.config.attributes.get("connection")
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
