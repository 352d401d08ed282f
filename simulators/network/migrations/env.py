"""Alembic environment of the hub's database."""

from middleware.migration_env import run_migrations
from middleware.tables import hub_metadata

run_migrations(hub_metadata)
