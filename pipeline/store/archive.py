"""Named reads of the public archive: the editions a finished send made public, and one of them by name.

An edition is in the archive once a send of it has finished (``sent``), unless its front matter said
``archive: false``. An edition name may have been sent more than once, with different content; the
archive shows, once, the content of its latest finished send, and that send's ``archived`` decides.
Editions recorded before the archive page was kept with them (no ``web_html``) cannot be shown and
are left out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, func, select

from pipeline.store import Store
from pipeline.store.states import SendStatus
from pipeline.store.tables import editions, sends


@dataclass(frozen=True, kw_only=True)
class ArchivedEdition:
    """One edition as the archive shows it."""

    name: str
    subject: str
    content_hash: str  # of what was sent: a page's validator (ETag) changes exactly when its content does
    sent_at: dt.datetime  # when its latest send finished
    first_sent_at: dt.datetime  # when its first send finished: the feed's "published"
    web_html: str | None = None  # the page as sent; None in a listing that did not ask for it


def _latest(name: str | None) -> Select:
    """Each edition name's finished sends (or those of ``name``), ranked newest first, with the name's first
    finish time."""
    newest_first = (sends.c.finished_at.desc(), sends.c.id.desc())
    query = (
        select(editions.c.id.label("edition_id"), sends.c.finished_at,
               func.row_number().over(partition_by=editions.c.name, order_by=newest_first).label("rank"),
               func.min(sends.c.finished_at).over(partition_by=editions.c.name).label("first_finished_at"))
        .join(sends, sends.c.edition_id == editions.c.id)
        .where(sends.c.status == SendStatus.SENT, sends.c.finished_at.is_not(None), editions.c.web_html.is_not(None))
    )
    return query if name is None else query.where(editions.c.name == name)


def _archived(*, with_pages: bool, name: str | None = None) -> Select:
    latest = _latest(name).subquery()
    columns = [editions.c.name, editions.c.subject, editions.c.content_hash,
               latest.c.finished_at, latest.c.first_finished_at]
    if with_pages:
        columns.append(editions.c.web_html)
    return (
        select(*columns).join(latest, latest.c.edition_id == editions.c.id)
        .where(latest.c.rank == 1, editions.c.archived.is_(True))
        .order_by(latest.c.finished_at.desc(), editions.c.name)
    )


def _edition(row, *, with_pages: bool) -> ArchivedEdition:
    return ArchivedEdition(name=row.name, subject=row.subject, content_hash=row.content_hash,
                           sent_at=row.finished_at, first_sent_at=row.first_finished_at,
                           web_html=row.web_html if with_pages else None)


def archived_editions(store: Store, *, with_pages: bool = False, limit: int | None = None) -> list[ArchivedEdition]:
    """The archive, newest first; ``with_pages`` also loads each page (the feed's content), ``limit`` the newest."""
    query = _archived(with_pages=with_pages)
    if limit is not None:
        query = query.limit(limit)
    with store.read() as connection:
        return [_edition(row, with_pages=with_pages) for row in connection.execute(query)]


def archived_edition(store: Store, name: str) -> ArchivedEdition | None:
    """The edition ``name`` with its page, or None when it is unknown, unsent, or kept out of the archive."""
    with store.read() as connection:
        row = connection.execute(_archived(with_pages=True, name=name)).first()
    return None if row is None else _edition(row, with_pages=True)
