"""The migrations build exactly the tables ``store/tables.py`` declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pipeline.store.tables import metadata


def test_migrated_schema_matches_the_tables(store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = [diff for diff in compare_metadata(context, metadata)
                       if not (isinstance(diff, tuple) and diff[0] == "remove_table" and
                               diff[1].name == "alembic_version")]
    assert differences == []
