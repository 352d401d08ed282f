"""Alembic environment of マイナポータル's database."""

from middleware.migration_env import run_migrations
from middleware.tables import portal_metadata

run_migrations(portal_metadata)
