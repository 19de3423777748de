"""Who an edition goes to, as SQL: tags are stored sorted as ";tag1;tag2;" (";" when none),
so that an audience is picked with LIKE '%;tag;%' and never loaded into memory."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, true

from pipeline.errors import SubscriberError
from pipeline.store.states import SubscriberStatus
from pipeline.store.tables import subscribers

TAG = re.compile(r"[A-Za-z0-9_-]+")


def tags_of(stored: str) -> tuple[str, ...]:
    """The tags of a stored ";a;b;" value."""
    return tuple(tag for tag in stored.split(";") if tag)


def stored_tags(tags: Iterable[str]) -> str:
    """Tags as stored: sorted, each once, between semicolons (";" when none)."""
    return ";" + "".join(f"{tag};" for tag in sorted(set(tags)))


def normal_tag(tag: str) -> str:
    """A tag as stored (lower case); SubscriberError for one with other characters."""
    if not TAG.fullmatch(tag.strip()):
        raise SubscriberError(f"invalid tag {tag!r}: a tag has only letters, digits, '_' and '-'")
    return tag.strip().lower()


def tag_filter(tag: str | None) -> ColumnElement[bool]:
    """Subscribers with this tag (case-insensitive; everyone when None), as a Core expression."""
    if tag is None:
        return true()
    # autoescape: '_' is a tag character but a LIKE wildcard.
    return subscribers.c.tags.contains(f";{normal_tag(tag)};", autoescape=True)


def active_with_tag(tag: str | None) -> ColumnElement[bool]:
    """The active subscribers an edition for ``tag`` (everyone when None) goes to, suppressed or not."""
    return and_(subscribers.c.status == SubscriberStatus.ACTIVE, tag_filter(tag))
