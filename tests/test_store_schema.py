"""The migrations build exactly the tables ``store/tables.py`` declares."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pipeline.store.tables import metadata


def _not_ours(table: str) -> bool:
    """Alembic's own table, and procrastinate's (its schema is applied whole by migration 0010)."""
    return table == "alembic_version" or table.startswith("procrastinate_")


def _table_of(item: Any) -> str:
    """The name of a table, or of an index's table."""
    return str(getattr(item, "table", item).name)


def test_migrated_schema_matches_the_tables(store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = [diff for diff in compare_metadata(context, metadata)
                       if not (isinstance(diff, tuple) and diff[0] in ("remove_table", "remove_index") and
                               _not_ours(_table_of(diff[1])))]
    assert differences == []
