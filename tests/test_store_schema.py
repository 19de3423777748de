"""The migrations build exactly the tables ``store/tables.py`` declares."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import insert, select, text

from pipeline.store import Store, utcnow
from pipeline.store.engine import MIGRATIONS
from pipeline.store.tables import metadata, suppressions

from .conftest import point_at


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


# ---------------------------------------------------------------- a database an earlier version left


OLDER = "0008_deliveries_by_subscriber"  # the revision before one active send per edition became an index


def _migrated_to(store: Store, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _older_database_with_two_active_sends(store: Store) -> None:
    """What an earlier version let two processes make: sends 2 (sending) and 3 (scheduled) of one edition."""
    _migrated_to(store, OLDER)
    with store.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO editions (id, name, content_hash, subject, built_path, email_html, email_txt, created_at, "
            "archived) VALUES (1, 'weekly', 'abc', 'Weekly', 'build/weekly', '<p>x</p>', 'x', :now, :yes)"),
            {"now": utcnow(), "yes": True})
        for send_id, status in ((1, "cancelled"), (2, "sending"), (3, "scheduled")):
            connection.execute(text(
                "INSERT INTO sends (id, edition_id, status, provider, created_at, status_reason) "
                "VALUES (:id, 1, :status, 'outbox', :now, '')"), {"id": send_id, "status": status, "now": utcnow()})


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_two_active_sends_of_one_edition_stop_the_upgrade_with_one_line_naming_them(
        project: Path, request: pytest.FixtureRequest, settings, run_cli, kind: str) -> None:
    url = f"sqlite:///{project / 'newsletter.db'}"
    if kind == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
        point_at(project / "newsletter.toml", url)
    store = Store(url)
    try:
        _older_database_with_two_active_sends(store)
        code, out, err = run_cli("logs")
        assert (code, out) == (2, "")
        assert err == ("newsletter: error: cannot upgrade the database: edition weekly has 2 active sends "
                       "(2 sending, 3 scheduled), where one at a time is allowed; cancel all but one of each with "
                       "the version of newsletter that started them (e.g. 'schedule cancel 3'), then run again\n")
        with store.engine.connect() as connection:  # nothing written: still the older revision
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == OLDER
            connection.execute(text("UPDATE sends SET status = 'cancelled' WHERE id = 3"))
            connection.commit()
        assert run_cli("logs")[0] == 0  # once one is cancelled, the upgrade goes through
    finally:
        store.dispose()


def test_instants_written_in_many_rows_are_each_stored_as_given(store) -> None:
    """The datetime column keeps its last conversion (a batch's rows share one instant): rows that alternate
    between instants, and equal instants that are other objects, are stored and read back as given."""
    first, second = utcnow(), utcnow() + dt.timedelta(hours=3, microseconds=7)
    given = [first, second, second, first, first + dt.timedelta(0), second]
    rows = [{"email_key": f"row{index}@example.net", "reason": "manual", "source": "", "created_at": when}
            for index, when in enumerate(given)]
    with store.begin() as connection:
        connection.execute(insert(suppressions), rows)
    with store.read() as connection:
        stored = dict(connection.execute(select(suppressions.c.email_key, suppressions.c.created_at)).all())
    assert [stored[row["email_key"]] for row in rows] == given
