"""Alembic environment of an intermediate server's database."""

from middleware.migration_env import run_migrations
from middleware.tables import node_metadata

run_migrations(node_metadata)
