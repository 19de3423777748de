"""The store: tables, statuses and transitions, named operations and migrations, over one database.

    engine.py   the Store (a migrated SQLAlchemy engine over SQLite or PostgreSQL), utcnow, insert_new
    states.py   the status enums and the one transition table
    tables.py   every table
    sends.py, subscribers.py, staff.py, ...   named operations, one module per area

``Store``, ``utcnow`` and the rest of ``engine.py`` are read from here as before, but ``engine.py``
(and with it SQLAlchemy and Alembic) is imported only when one of them is first used: a command that
only needs the statuses, such as ``newsletter logs --help`` listing them, does not pay for the database.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.errors import StoreError, StoreUnavailable
    from pipeline.store.engine import Store, database_url, insert_new, utcnow

__all__ = ["SQLAlchemyError", "Store", "StoreError", "StoreUnavailable", "database_url", "insert_new", "utcnow"]


def __getattr__(name: str) -> Any:
    """The names of ``engine.py``, imported on first use (PEP 562)."""
    if name in __all__:
        value = getattr(import_module("pipeline.store.engine"), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
