"""The body shared by both Alembic environments (node and hub databases)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import MetaData, create_engine, pool

__all__ = ["run_migrations"]


def run_migrations(metadata: MetaData) -> None:
    """Run migrations online against the URL set in the Alembic config."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
