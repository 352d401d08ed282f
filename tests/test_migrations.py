"""The Alembic migrations build exactly the schema the code defines."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, create_engine

from middleware.storage import migrate
from middleware.tables import hub_metadata, node_metadata, portal_metadata

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("migrations", "metadata"),
    [
        ("middleware/migrations", node_metadata),
        ("simulators/network/migrations", hub_metadata),
        ("simulators/portal/migrations", portal_metadata),
    ],
    ids=["node", "hub", "portal"],
)
def test_migrated_schema_matches_the_table_definitions(
    tmp_path: Path, migrations: str, metadata: MetaData
) -> None:
    """After upgrading an empty database to head, Alembic finds nothing left to change."""
    url = f"sqlite:///{tmp_path / 'schema.sqlite'}"
    migrate(url, REPOSITORY / migrations)
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []


@pytest.mark.parametrize(
    "migrations",
    ["middleware/migrations", "simulators/network/migrations", "simulators/portal/migrations"],
    ids=["node", "hub", "portal"],
)
def test_a_fresh_database_is_at_the_newest_revision(tmp_path: Path, migrations: str) -> None:
    """A new SQLite file (a copy of the process's migrated template) is at head, as is one
    migrated again."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(REPOSITORY / migrations))
    head = ScriptDirectory.from_config(config).get_current_head()
    for name in ("first.sqlite", "second.sqlite", "first.sqlite"):
        url = f"sqlite:///{tmp_path / name}"
        migrate(url, REPOSITORY / migrations)
        engine = create_engine(url)
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == head
        engine.dispose()
