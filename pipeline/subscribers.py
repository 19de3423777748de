"""Subscribers: import a CSV list, list and export it, unsubscribe people, pick an edition's audience.

An import is one transaction: every line is checked, the good ones are added or
updated and each bad one is reported with its line number. A file never makes
someone active again who unsubscribed, bounced or complained, nor an address in
``suppressions``, unless the import is run with ``resubscribe=True``.

Tags are stored sorted as ";tag1;tag2;" (``";"`` when none), so that SQL can pick an
audience with LIKE '%;tag;%' (``store/audience.py``). The SQL is in ``store/subscribers.py``.

An export is safe to open in a spreadsheet: a cell that would run as a formula
gets a leading quote, and an import takes that quote off again (``csvcells``),
so that an exported file imports back unchanged.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, Connection, Row
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from pipeline.csvcells import Writer, restored
from pipeline.errors import StoreConflict, SubscriberError
from pipeline.oneline import breaking_character
from pipeline.store import Store, utcnow
from pipeline.store import subscribers as db
from pipeline.store.audience import TAG, stored_tags, tags_of
from pipeline.store.states import SUPPRESSION_REASONS
from pipeline.store.tables import LISTED_STATUSES, SUBSCRIBER_STATUSES

log = logging.getLogger("newsletter.subscribers")
COLUMNS = ("email", "name", "tags", "status")
INACTIVE = tuple(status for status in LISTED_STATUSES if status != "active")
MAX_NAME = 200  # the width of subscribers.name
MAX_TAGS = 1000  # the width of subscribers.tags, separators included
CHUNK = 1000  # lines looked up and written per statement during an import
CONFLICT_TRIES = 5  # runs of an import the database rolled back to settle a conflict with another (PostgreSQL)
ANALYZE_EVERY = 50  # chunks between refreshes of the planner's figures during an import (PostgreSQL)
OUTCOMES = ("added", "updated", "unchanged", "kept_unsubscribed")
ERASED = "erased"  # the reason of the hashed suppression an erased reader leaves
ERASED_REASON = "erased at their request: only a signup they confirm brings them back"


@dataclass(frozen=True, kw_only=True)
class Rejection:
    """A line of an import file that was not imported, and why."""

    line: int
    reason: str
    text: str


@dataclass(frozen=True, kw_only=True)
class ImportReport:
    """What an import did: each line after the header is counted once, in one of the counts or in ``rejected``."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: int = 0  # listed as active, but unsubscribed, bounced, complained or suppressed: left so
    rejected: tuple[Rejection, ...] = ()
    total_lines: int = 0  # lines after the header (a quoted value over several lines counts once)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected


@dataclass(frozen=True, kw_only=True)
class Subscriber:
    """One row of the subscriber list."""

    id: int
    email: str
    name: str
    tags: tuple[str, ...]
    status: str
    attributes: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime
    unsubscribed_at: dt.datetime | None = None
    unsubscribe_channel: str | None = None  # one-click | page | preferences | webhook | staff

    @classmethod
    def from_row(cls, row: Row[Any]) -> Subscriber:
        return cls(id=row.id, email=row.email, name=row.name, tags=tags_of(row.tags), status=row.status,
                   attributes=dict(row.attributes or {}), created_at=row.created_at, updated_at=row.updated_at,
                   unsubscribed_at=row.unsubscribed_at, unsubscribe_channel=row.unsubscribe_channel)

    def to_dict(self) -> dict[str, Any]:
        left = self.unsubscribed_at.isoformat() if self.unsubscribed_at else None
        return {"id": self.id, "email": self.email, "name": self.name, "tags": list(self.tags),
                "status": self.status, "attributes": self.attributes,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "unsubscribed_at": left, "unsubscribe_channel": self.unsubscribe_channel}


# Addresses and tags -------------------------------------------------------------------------------------------


def email_key(text: str) -> str:
    """The lower-cased key of an address in ``subscribers`` and ``suppressions``; SubscriberError if not one."""
    try:
        return validate_email(text.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise SubscriberError(f"not an email address: {text!r}: {exc}") from None


# Import ------------------------------------------------------------------------------------------------------


class _Rejected(Exception):
    """A line cannot be imported; the message is the reason."""


@dataclass(frozen=True, kw_only=True)
class _Header:
    width: int
    email: int
    name: int | None
    tags: int | None
    status: int | None
    attributes: tuple[tuple[int, str], ...]


@dataclass(frozen=True, kw_only=True)
class _Entry:
    """An accepted line; None for a column the file does not have."""

    line: int
    email: str
    key: str
    name: str | None
    tags: str | None
    status: str
    attributes: dict[str, str]  # the file's attribute columns; "" removes the attribute


@dataclass(frozen=True, kw_only=True)
class _Plan:
    outcome: str
    values: dict[str, Any] | None  # None: nothing to write
    lift: bool  # delete the address's suppression


class _Lines:
    """The file's lines, decoded one at a time so that a byte that is not UTF-8 is reported with its line."""

    def __init__(self, path: Path, binary: BinaryIO):
        self.path, self.binary, self.number = path, binary, 0
        self.pending: list[str] = []

    def __iter__(self) -> Iterator[str]:
        for raw in self.binary:
            self.number += 1
            try:
                text = raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SubscriberError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as UTF-8 CSV",
                                      path=self.path, line=self.number) from None
            self.pending.append(text)
            yield text

    def take(self) -> str:
        """The text of the lines read since the last call."""
        text = "".join(self.pending).rstrip("\r\n")
        self.pending.clear()
        return text


def _records(path: Path, binary: BinaryIO) -> Iterator[tuple[int, list[str], str]]:
    """(line number, fields, text) of each CSV record; UTF-8 with or without a BOM, any line ending."""
    lines = _Lines(path, binary)
    reader = csv.reader(lines)
    while True:
        start = lines.number + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SubscriberError(f"not CSV: {exc}", path=path, line=lines.number) from None
        yield start, fields, lines.take()


def _header(records: Iterator[tuple[int, list[str], str]], path: Path) -> _Header:
    first = next(records, None)
    if first is None:
        raise SubscriberError("the file is empty: expected a header such as email,name,tags,status", path=path)
    number, names, _ = first
    columns: dict[str, int] = {}
    for index, name in enumerate(restored(column.strip()) for column in names):
        key = name.lower() if name.lower() in COLUMNS else name
        if not key:
            raise SubscriberError(f"column {index + 1} of the header has no name", path=path, line=number)
        if key in columns:
            raise SubscriberError(f"column {name!r} appears twice in the header", path=path, line=number)
        columns[key] = index
    if "email" not in columns:
        found = ",".join(names)[:60] or "an empty line"
        raise SubscriberError(f"the header has no email column (found {found})", path=path, line=number)
    attributes = tuple((index, name) for name, index in columns.items() if name not in COLUMNS)
    return _Header(width=len(names), email=columns["email"], name=columns.get("name"), tags=columns.get("tags"),
                   status=columns.get("status"), attributes=attributes)


def _checked_address(text: str) -> tuple[str, str]:
    if not text:
        raise _Rejected("no email address")
    try:
        address = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _Rejected(str(exc)) from None
    return address, address.lower()


def _checked_name(cell: str) -> str:
    """The trimmed name of a name cell.

    Only spaces and tabs at either end are trimmed: any other control character, anywhere, rejects
    the line (str.strip() alone would silently drop one at the ends, such as U+001F or U+0085).
    """
    name = restored(cell.strip())
    if len(name) > MAX_NAME:
        raise _Rejected(f"the name is {len(name)} characters long, the most is {MAX_NAME}")
    found = breaking_character(cell.strip(" \t"))
    if found is not None:
        raise _Rejected(f"the name has a line break or a control character ({found}; is a quote left open?)")
    return name


def _checked_tags(text: str) -> str:
    tags = set()
    for tag in filter(None, (part.strip() for part in re.split(r"[;|]", text))):
        if not TAG.fullmatch(tag):
            raise _Rejected(f"invalid tag {tag!r}: a tag has only letters, digits, '_' and '-'")
        tags.add(tag.lower())
    stored = stored_tags(sorted(tags))
    if len(stored) > MAX_TAGS:
        raise _Rejected(f"the tags are {len(stored)} characters long, the most is {MAX_TAGS}")
    return stored


def _checked_status(text: str) -> str:
    status = text.lower() or "active"
    if status not in LISTED_STATUSES:
        raise _Rejected(f"unknown status {text!r} (valid: {', '.join(LISTED_STATUSES)})")
    return status


def _entry(number: int, fields: list[str], header: _Header, seen: dict[str, int]) -> _Entry:
    """The accepted line, or _Rejected with the first problem found."""
    if not any(field.strip() for field in fields):
        raise _Rejected("empty line")
    if len(fields) > header.width:
        raise _Rejected(f"{len(fields)} fields, the header has {header.width}")

    def cell(index: int | None) -> str:
        return fields[index] if index is not None and index < len(fields) else ""

    def value(index: int | None) -> str:
        return restored(cell(index).strip())

    email, key = _checked_address(value(header.email))
    if key in seen:
        raise _Rejected(f"duplicate of line {seen[key]}")
    return _Entry(line=number, email=email, key=key,
                  name=None if header.name is None else _checked_name(cell(header.name)),
                  tags=None if header.tags is None else _checked_tags(value(header.tags)),
                  status=_checked_status(value(header.status)),
                  attributes={name: value(index) for index, name in header.attributes})


class _Tally:
    """The counts of an import as it goes."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.rejected: list[Rejection] = []
        self.lines = 0

    def report(self, *, dry_run: bool) -> ImportReport:
        return ImportReport(**self.counts, rejected=tuple(self.rejected), total_lines=self.lines, dry_run=dry_run)


def _entries(records: Iterator[tuple[int, list[str], str]], header: _Header, tally: _Tally) -> Iterator[_Entry]:
    seen: dict[str, int] = {}  # email_key -> line: the one list an import keeps whole
    for number, fields, text in records:
        tally.lines += 1
        try:
            entry = _entry(number, fields, header, seen)
        except _Rejected as exc:
            tally.rejected.append(Rejection(line=number, reason=str(exc), text=text))
            continue
        seen[entry.key] = number
        yield entry


def _chunks(entries: Iterator[_Entry], size: int) -> Iterator[list[_Entry]]:
    while chunk := list(islice(entries, size)):
        yield chunk


def _blocked_status(entry: _Entry, row: Row[Any] | None, suppression: str | None) -> str | None:
    """The status that keeps someone the file lists as active from being active, if any."""
    if entry.status != "active":
        return None
    if row is not None and row.status != "active":
        return row.status
    if suppression is not None:
        return suppression if suppression in INACTIVE else "unsubscribed"
    return None


def _merged(stored: dict[str, str], columns: dict[str, str]) -> dict[str, str]:
    attributes = dict(stored)
    for name, value in columns.items():
        if value:
            attributes[name] = value
        else:
            attributes.pop(name, None)
    return attributes


def _plan(entry: _Entry, row: Row[Any] | None, suppression: str | None, *, resubscribe: bool) -> _Plan:
    """What to do with one accepted line, given the stored row and suppression of its address."""
    blocked = _blocked_status(entry, row, suppression)
    kept = blocked is not None and not resubscribe
    lift = blocked is not None and resubscribe and suppression is not None
    values = {
        "email": entry.email,
        "name": entry.name if entry.name is not None else (row.name if row is not None else ""),
        "tags": entry.tags if entry.tags is not None else (row.tags if row is not None else ";"),
        "status": blocked if kept else entry.status,
        "attributes": _merged(row.attributes if row is not None else {}, entry.attributes),
    }
    if row is None:
        return _Plan(outcome="kept_unsubscribed" if kept else "added", values=values, lift=lift)
    changed = any(value != getattr(row, name) for name, value in values.items())
    outcome = "kept_unsubscribed" if kept else "updated" if changed or lift else "unchanged"
    return _Plan(outcome=outcome, values=values if changed else None, lift=lift)


def _upsert(connection: Connection, chunk: list[_Entry], tally: _Tally, *, resubscribe: bool) -> None:
    stored, suppressed = db.known(connection, [entry.key for entry in chunk])
    now = utcnow()
    inserts, updates, lifted, outcomes = [], [], [], {}
    for entry in chunk:
        row = stored.get(entry.key)
        if suppressed.get(entry.key) == ERASED:  # their request outranks any list, --resubscribe included
            tally.rejected.append(Rejection(line=entry.line, reason=ERASED_REASON, text=entry.email))
            continue
        plan = _plan(entry, row, suppressed.get(entry.key), resubscribe=resubscribe)
        outcomes[entry.key] = plan.outcome
        if plan.lift:
            lifted.append(entry.key)
        if plan.values is None:
            continue
        if row is None:
            inserts.append({**plan.values, "email_key": entry.key, "created_at": now, "updated_at": now})
        else:
            updates.append({**plan.values, "row_id": row.id, "updated_at": now})
    taken = db.write_import(connection, inserts=inserts, updates=updates, lifted=lifted)
    for key, outcome in outcomes.items():
        if key not in taken:
            tally.counts[outcome] += 1
    if taken:  # stored by someone else since they were looked up: now known, so planned as updates
        _upsert(connection, [entry for entry in chunk if entry.key in taken], tally, resubscribe=resubscribe)


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise SubscriberError("file not found", path=path) from None
    except OSError as exc:
        raise SubscriberError(f"cannot read: {exc.strerror}", path=path) from None
    with file:
        yield file


def import_subscribers(store: Store, path: str | os.PathLike[str], *, dry_run: bool = False,
                       resubscribe: bool = False) -> ImportReport:
    """Add and update subscribers from a CSV file in one transaction (rolled back when ``dry_run``).

    The header must have ``email``; ``name``, ``tags`` and ``status`` are optional and any other
    column becomes an attribute. A column the file lacks leaves that field as stored (status
    defaults to active). Bad lines are reported, not imported; a file that cannot be read at
    all raises SubscriberError and writes nothing.
    """
    # Two imports on PostgreSQL that hold rows the other needs (the same addresses, in other orders) deadlock,
    # and the database rolls one back, whole: that one is run again from the top of the file.
    retrying = Retrying(retry=retry_if_exception_type(StoreConflict), stop=stop_after_attempt(CONFLICT_TRIES),
                        wait=wait_random_exponential(multiplier=0.2, max=2.0), reraise=True,
                        before_sleep=lambda state: log.warning("import of %s: %s; importing it again", path,
                                                               state.outcome.exception() if state.outcome else ""))
    return retrying(_import, store, Path(path), dry_run=dry_run, resubscribe=resubscribe)


def _import(store: Store, path: Path, *, dry_run: bool, resubscribe: bool) -> ImportReport:
    tally = _Tally()
    with _opened(path) as binary, store.begin() as connection:
        records = _records(path, binary)
        header = _header(records, path)
        for number, chunk in enumerate(_chunks(_entries(records, header, tally), CHUNK), start=1):
            _upsert(connection, chunk, tally, resubscribe=resubscribe)
            if number % ANALYZE_EVERY == 0:
                db.refresh_statistics(connection)
        if dry_run:
            connection.rollback()
    return tally.report(dry_run=dry_run)


# Listing, export, audience -----------------------------------------------------------------------------------


def _listing_filter(tag: str | None, status: str | None) -> ColumnElement[bool]:
    if status is not None and status not in SUBSCRIBER_STATUSES:
        raise SubscriberError(f"unknown status {status!r} (valid: {', '.join(SUBSCRIBER_STATUSES)})")
    return db.listing_filter(tag, status)


def _stream(connection: Connection, where: ColumnElement[bool]) -> Iterator[Subscriber]:
    for row in db.stream(connection, where):
        yield Subscriber.from_row(row)


def list_subscribers(store: Store, *, tag: str | None = None, status: str | None = None) -> Iterator[Subscriber]:
    """Subscribers with this tag and status (any when None), by address, read a few hundred at a time.

    The transaction stays open until the iterator is exhausted or closed.
    """
    where = _listing_filter(tag, status)  # raises here, not at the first next()

    def stream() -> Iterator[Subscriber]:
        with store.read() as connection:
            yield from _stream(connection, where)

    return stream()


def export_subscribers(store: Store, out: TextIO, *, tag: str | None = None, status: str | None = None) -> int:
    """Write subscribers as CSV that ``import_subscribers`` reads back unchanged; return how many.

    Cells that a spreadsheet would run as formulas are defused (``csvcells``).
    """
    where = _listing_filter(tag, status)
    writer = Writer(out, lineterminator="\n")
    count = 0
    with store.read() as connection:
        names = db.attribute_names(connection, where)
        writer.writerow([*COLUMNS, *names])
        for subscriber in _stream(connection, where):
            extra = (str(subscriber.attributes.get(name, "")) for name in names)
            writer.writerow([subscriber.email, subscriber.name, ";".join(subscriber.tags), subscriber.status, *extra])
            count += 1
    return count


def count_audience(store: Store, tag: str | None = None) -> int:
    """How many subscribers an edition sent to this tag (or everyone, when None) would reach."""
    return db.count_audience(store, tag)


# Unsubscribe -------------------------------------------------------------------------------------------------


def unsubscribe(store: Store, email: str, *, reason: str = "unsubscribed", source: str = "") -> bool:
    """Make an address inactive and suppress it; False when it is not a subscriber (it is suppressed anyway).

    The status becomes ``reason`` when that is "bounced" or "complained", else "unsubscribed"; only
    an active subscriber's status changes, and the first suppression of an address is kept, so
    calling this again changes nothing. Rows of the address still queued in a send in progress
    are suppressed at once.
    """
    if reason not in SUPPRESSION_REASONS:
        raise SubscriberError(f"unknown reason {reason!r} (valid: {', '.join(SUPPRESSION_REASONS)})")
    key = email_key(email)
    move = {"bounced": "bounce", "complained": "complain"}.get(reason, "unsubscribe")
    return key in db.suppress(store, [key], reason=reason, move=move, source=source, now=utcnow(), channel="staff")
