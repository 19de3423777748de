"""Named operations on sends and their delivery rows: the only SQL of sending.

    create_send ─▶ queue the audience ─▶ acquire (the lease) ─▶ claim_batch ─▶ settle ─▶ finish
                                          renew_lease, on a timer, while the sender lives

Ownership is a lease: ``sends.runner`` names the sender that owns the send until
``sends.lease_until``. Every claim and every outcome write checks, in its own
transaction, that the lease is still the sender's, and extends it; another
sender takes a send over only once the lease has expired. Status changes are
the moves of ``states.py``: an update names its move and changes only rows in
one of the move's sources.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row as DbRow
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from pipeline.errors import SendBusy, SendError
from pipeline.store import Store, insert_new, utcnow
from pipeline.store import parts as part_store
from pipeline.store.audience import active_with_tag
from pipeline.store.parts import WORKERS, Part
from pipeline.store.states import (
    ACTIVE_SENDS,
    DELIVERY_MOVES,
    RECEIVED,
    SEND_MOVES,
    UNSETTLED,
    DeliveryStatus,
    SendStatus,
)
from pipeline.store.tables import UTCDateTime, deliveries, editions, sends, subscribers, suppressions

D, S = DeliveryStatus, SendStatus
# What a row handed to the provider may become: the targets of the settle_* moves, all from ``sending``.
_T = TypeVar("_T")
SETTLED_AS = frozenset(move.target for name, move in DELIVERY_MOVES.items() if name.startswith("settle_"))


@dataclass(frozen=True, kw_only=True)
class StoredEdition:
    """The parts of an edition a send keeps, so that a send resumed after the draft changed sends what it began."""

    name: str
    content_hash: str
    subject: str
    built_path: str
    email_html: str
    email_txt: str
    web_html: str | None = None  # the archive page, kept so the archive serves what was sent, not a later build
    archived: bool = True  # front matter ``archive``: whether the public archive lists and serves it


@dataclass(frozen=True, kw_only=True)
class SendRecord:
    """One row of ``sends`` with its edition's name and hash."""

    id: int
    status: SendStatus
    reason: str
    edition: str
    content_hash: str
    audience: str | None
    provider: str
    runner: str | None
    lease_until: dt.datetime | None
    scheduled_at: dt.datetime | None
    draft_path: str | None
    timezone: str | None
    override_reason: str | None
    nonce: str
    queued_at: dt.datetime | None


@dataclass(frozen=True, kw_only=True)
class Row:
    """A claimed delivery row: who it goes to."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str


@dataclass(frozen=True, kw_only=True)
class Claimed:
    """Rows claimed together: one batch for the provider, ``batch_id`` its idempotency key."""

    batch_id: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, kw_only=True)
class Settled:
    """What became of one row handed to the provider."""

    delivery_id: int
    status: DeliveryStatus
    provider_message_id: str | None = None
    error_class: str | None = None
    error_text: str | None = None
    suppress: bool = False
    email: str = ""


@dataclass(frozen=True, kw_only=True)
class SendSummary:
    """Where a send stands: its status, its rows by status, and who is uncertain."""

    send_id: int
    status: SendStatus
    reason: str
    counts: dict[str, int]
    uncertain: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _until(seconds: float, now: dt.datetime | None = None) -> dt.datetime:
    return (now or utcnow()) + dt.timedelta(seconds=seconds)


def _sources(move: str) -> list[str]:
    return sorted(SEND_MOVES[move].sources)


def _delivery_move(move: str) -> tuple[list[str], str]:
    chosen = DELIVERY_MOVES[move]
    return sorted(chosen.sources), chosen.target


# ---------------------------------------------------------------- creating a send


def create_send(store: Store, edition: StoredEdition, *, status: SendStatus, audience: str | None, provider: str,
                scheduled_at: dt.datetime | None = None, override_reason: str | None = None,
                draft_path: str | None = None, timezone: str | None = None, owner: str | None = None,
                lease_seconds: float = 0, check_report: dict[str, Any] | None = None) -> int:
    """Record the edition and a send of it, with the check report it passed (or was forced past). A send
    created ``sending`` queues its audience at once, owned by ``owner``; a ``scheduled`` one queues it when it
    fires (``queue_fired``)."""
    if status not in (S.SENDING, S.SCHEDULED):
        raise ValueError(f"a send is created scheduled or sending, not {status}")
    now = utcnow()
    with store.begin() as connection:
        _refuse_if_active(connection, edition.name)  # the usual case, said before anything is written
        edition_id = _record_edition(connection, edition, now)
        owned = status == S.SENDING and owner is not None
        insert_send = insert(sends).values(
            edition_id=edition_id, edition_name=edition.name, status=status, audience=audience, provider=provider,
            scheduled_at=scheduled_at, created_at=now, started_at=now if owned else None, status_reason="",
            override_reason=override_reason, draft_path=draft_path, timezone=timezone, nonce=secrets.token_hex(8),
            queued_at=now if status == S.SENDING else None,
            runner=owner if owned else None, lease_until=_until(lease_seconds, now) if owned else None,
            check_report=check_report,
        )
        # Another process creating a send of this edition at the same moment passed the check too: the index
        # of one active send per edition makes this insert wait for it, then fail.
        send_id = _inserted(_holding_edition(connection, edition.name, lambda: connection.execute(insert_send)))
        if status == S.SENDING:
            _queue(connection, send_id, edition.name, audience, now)
    return send_id


def _active_send(connection: Connection, edition_name: str, *, other_than: int | None = None) -> DbRow[Any, Any] | None:
    query = select(sends.c.id, sends.c.status).where(sends.c.edition_name == edition_name,
                                                     sends.c.status.in_(sorted(ACTIVE_SENDS)))
    if other_than is not None:
        query = query.where(sends.c.id != other_than)
    return connection.execute(query).first()


def _refuse_if_active(connection: Connection, edition_name: str, *, other_than: int | None = None) -> None:
    """SendError, saying what to do, if the edition has an active (scheduled, sending, paused) send."""
    active = _active_send(connection, edition_name, other_than=other_than)
    if active is not None:
        raise SendError(f"edition {edition_name} already has send {active.id} ({active.status}): "
                        f"{_what_to_do(active.id, SendStatus(active.status))}")


def _holding_edition(connection: Connection, edition_name: str, write: Callable[[], _T], *,
                     send_id: int | None = None) -> _T:
    """Run ``write``, which makes a send active, in a savepoint: if the index of one active send per edition
    refuses it (another process made a send of the edition active first), the same SendError as the check
    before it, never an IntegrityError (whose message would quote the statement)."""
    try:
        with connection.begin_nested():
            return write()
    except IntegrityError:
        _refuse_if_active(connection, edition_name, other_than=send_id)
        raise


def _what_to_do(send_id: int, status: SendStatus) -> str:
    if status == S.SCHEDULED:
        return f"move it with 'schedule move {send_id}' or cancel it with 'schedule cancel {send_id}'"
    return f"resume it with 'send --resume {send_id}' or cancel it with 'send --cancel {send_id}'"


def claim_scheduled(store: Store, send_id: int, owner: str, *, lease_seconds: float) -> bool:
    """Take a due scheduled send for ``owner`` (move ``fire``); False if another runner or an operator was first."""
    now = utcnow()
    with store.begin() as connection:
        return bool(connection.execute(
            update(sends).where(sends.c.id == send_id, sends.c.status.in_(_sources("fire")))
            .values(status=SEND_MOVES["fire"].target, runner=owner, lease_until=_until(lease_seconds, now),
                    started_at=now, status_reason="")).rowcount)


def queue_fired(store: Store, send_id: int, owner: str, edition: StoredEdition, *, audience: str | None,
                provider: str, check_report: dict[str, Any] | None = None) -> bool:
    """Record the edition as rebuilt when the send fired (the content actually sent), with the report of its
    re-check, and queue its audience; False, and nothing written, if the send is no longer ``owner``'s."""
    now = utcnow()
    with store.begin() as connection:
        if not _still_owned(connection, send_id, owner, now, lease_seconds=None):
            return False
        edition_id = _record_edition(connection, edition, now)
        values: dict[str, Any] = {"check_report": check_report} if check_report is not None else {}
        connection.execute(update(sends).where(sends.c.id == send_id).values(
            edition_id=edition_id, edition_name=edition.name, audience=audience, provider=provider, queued_at=now,
            **values))
        _queue(connection, send_id, edition.name, audience, now)
    return True


def _record_edition(connection: Connection, edition: StoredEdition, now: dt.datetime) -> int:
    """The id of the edition's row (its name and content hash), inserted if new: ON CONFLICT, so two processes
    recording the same edition at once both get the one row."""
    connection.execute(insert_new(connection, editions, editions.c.name, editions.c.content_hash).values(
        name=edition.name, content_hash=edition.content_hash, subject=edition.subject, built_path=edition.built_path,
        email_html=edition.email_html, email_txt=edition.email_txt, web_html=edition.web_html,
        archived=edition.archived, created_at=now,
    ))
    found = connection.scalar(select(editions.c.id).where(
        editions.c.name == edition.name, editions.c.content_hash == edition.content_hash))
    assert found is not None, "the edition was just inserted, or was there"
    # The same content sent again: the editor's latest ``archive`` decides, and a row recorded before the
    # archive page was kept gets it (the hash covers web.html, so it is the page that was sent).
    connection.execute(update(editions).where(editions.c.id == found).values(
        archived=edition.archived, web_html=func.coalesce(editions.c.web_html, edition.web_html)))
    return int(found)


def _inserted(result: CursorResult[Any]) -> int:
    """The id of the row an INSERT made."""
    key = result.inserted_primary_key
    assert key is not None, "an INSERT of one row has a primary key"
    return int(key[0])


def _queue(connection: Connection, send_id: int, edition_name: str, audience: str | None, now: dt.datetime) -> None:
    """One row per audience member, in one INSERT ... SELECT: the audience is never loaded into memory. Each row
    is born in its initial status (``DELIVERY_INITIAL``): suppressed, skipped (already received this edition in
    an earlier send of it), or queued."""
    suppressed = exists().where(suppressions.c.email_key == subscribers.c.email_key)
    # An uncorrelated IN: evaluated once, where a correlated EXISTS scanned every delivery ever made per row.
    earlier = aliased(deliveries)
    received = subscribers.c.id.in_(
        select(earlier.c.subscriber_id).join(sends, sends.c.id == earlier.c.send_id)
        .join(editions, editions.c.id == sends.c.edition_id)
        .where(earlier.c.send_id != send_id, editions.c.name == edition_name, earlier.c.status.in_(sorted(RECEIVED))))

    def by_status(suppressed_value: str | None, skipped_value: str | None, queued_value: str | None) -> Any:
        return case((suppressed, literal(suppressed_value)), (received, literal(skipped_value)),
                    else_=literal(queued_value))

    members = select(
        literal(send_id), subscribers.c.id, subscribers.c.email,
        by_status(D.SUPPRESSED.value, D.SKIPPED.value, D.QUEUED.value),
        by_status("suppressed", "duplicate", None),
        by_status("on the suppression list", "already received this edition in an earlier send", None),
        literal(0), literal(now, UTCDateTime), literal(now, UTCDateTime),
    ).where(active_with_tag(audience))
    columns = ["send_id", "subscriber_id", "email", "status", "error_class", "error_text", "attempts", "queued_at",
               "updated_at"]
    connection.execute(insert(deliveries).from_select(columns, members))


# ---------------------------------------------------------------- the lease


def _check_resumable(record: SendRecord) -> None:
    """SendError, saying why, unless the send may make move ``resume``: a status it allows, and its audience
    queued (a send that fired but whose runner stopped before queueing is fired again, not resumed)."""
    if record.status not in SEND_MOVES["resume"].sources:
        raise SendError(refusal(record, "resume"))
    if record.queued_at is None:
        raise SendError(f"send {record.id} fired, but its runner stopped before it queued the audience; "
                        "'newsletter run' fires it again (nothing was sent)")


def acquire(store: Store, send_id: int, owner: str, *, lease_seconds: float, provider: str,
            idempotent: bool) -> SendRecord:
    """Make ``owner`` the send's sender (move ``resume``), and settle the rows a sender whose lease expired left
    in flight: ``uncertain``, unless the provider is idempotent, in which case they stay in flight to be handed
    over again as they were. SendBusy while another sender's lease runs; SendError for a send that cannot be
    resumed, saying why."""
    now = utcnow()
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        _check_resumable(record)
        _check_provider(record, provider)
        if record.runner and record.runner != owner and record.lease_until and record.lease_until > now:
            raise SendBusy(send_id, record.runner, record.lease_until)
        held = part_store.live_holder(connection, send_id, now) if record.runner == WORKERS else None
        if held is not None:  # a worker is sending a part of it: its rows in flight are not orphans
            raise SendBusy(send_id, held.runner, held.until)
        resumed = update(sends).where(sends.c.id == send_id).values(
            runner=owner, lease_until=_until(lease_seconds, now), status=SEND_MOVES["resume"].target,
            status_reason="", started_at=func.coalesce(sends.c.started_at, literal(now, UTCDateTime)))
        _holding_edition(connection, record.edition, lambda: connection.execute(resumed), send_id=send_id)
        if not idempotent:
            sources, target = _delivery_move("settle_uncertain")
            connection.execute(update(deliveries).where(
                deliveries.c.send_id == send_id, deliveries.c.status.in_(sources)).values(
                status=target, error_class="uncertain", updated_at=now,
                error_text="in flight when its sender stopped: the provider may or may not have accepted it"))
    return send_record(store, send_id)


def _check_provider(record: SendRecord, provider: str) -> None:
    if record.provider != provider:
        raise SendError(f"send {record.id} was started with the {record.provider} provider; resume it with that "
                        f"one (the settings name {provider})")


def renew_lease(store: Store, send_id: int, owner: str, *, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease; False if the send is no longer theirs."""
    with store.begin() as connection:
        return _still_owned(connection, send_id, owner, utcnow(), lease_seconds=lease_seconds)


def _still_owned(connection: Connection, send_id: int, owner: str, now: dt.datetime, *,
                 lease_seconds: float | None, part: Part | None = None) -> bool:
    """Whether ``owner`` still holds the send (or, with ``part``, that part of it), extending the lease when
    ``lease_seconds`` is given. The UPDATE locks the send's (the part's) row, so no takeover can slip in
    before this transaction ends."""
    if part is not None:
        return part_store.still_owned(connection, part, owner, now, lease_seconds=lease_seconds)
    values = {"runner": owner} if lease_seconds is None else {"lease_until": _until(lease_seconds, now)}
    return bool(connection.execute(update(sends).where(sends.c.id == send_id, sends.c.runner == owner)
                                   .values(**values)).rowcount)


def release(store: Store, send_id: int, owner: str) -> SendStatus | None:
    """Give up the lease. A send with nothing queued or in flight is ``sent`` (move ``finish``), or ``failed``
    (move ``fail``) when its rows all failed and none was sent. The status after, or None if not owner's."""
    now = utcnow()
    with store.begin() as connection:
        row = connection.execute(select(sends.c.status, sends.c.queued_at)
                                 .where(sends.c.id == send_id, sends.c.runner == owner)).first()
        if row is None:
            return None
        values: dict[str, object] = {"runner": None, "lease_until": None}
        after = SendStatus(row.status)
        if row.queued_at is not None:
            values.update(_finished(connection, send_id, after, now))
        connection.execute(update(sends).where(sends.c.id == send_id, sends.c.runner == owner).values(**values))
        return SendStatus(str(values.get("status", after)))


def _finished(connection: Connection, send_id: int, status: SendStatus, now: dt.datetime) -> dict[str, object]:
    """The send's row once it is over: ``sent`` (move ``finish``), or ``failed`` (move ``fail``) when its rows
    all failed and none was sent; nothing if it is not ``sending`` or has rows queued or in flight."""
    if status not in SEND_MOVES["finish"].sources or _count(connection, send_id, UNSETTLED):
        return {}
    counts = _counts(connection, send_id)
    unsent = counts.get(D.FAILED, 0) + counts.get(D.UNCERTAIN, 0)
    if unsent and not counts.get(D.SENT, 0):
        return {"status": SEND_MOVES["fail"].target, "finished_at": now,
                "status_reason": f"nobody was sent it: {unsent} row(s) failed or uncertain"}
    return {"status": SEND_MOVES["finish"].target, "finished_at": now}


def finish_if_settled(store: Store, send_id: int) -> SendStatus | None:
    """For the workers: end a send handed to them once its last row is settled (``sent`` or ``failed``, as
    ``release`` does). The send's row is locked, so of the jobs that settle its last rows at once exactly one
    ends it: that one gets the status, every other None."""
    now = utcnow()
    with store.begin() as connection:
        row = connection.execute(select(sends.c.status, sends.c.queued_at).where(sends.c.id == send_id)
                                 .with_for_update()).first()
        if row is None or row.queued_at is None:
            return None
        values = _finished(connection, send_id, SendStatus(row.status), now)
        if not values:
            return None
        connection.execute(update(sends).where(sends.c.id == send_id).values(runner=None, lease_until=None,
                                                                              **values))
        return SendStatus(str(values["status"]))


def hand_to_workers(store: Store, send_id: int, *, provider: str, part_size: int,
                    owner: str | None = None) -> list[Part]:
    """Give the send to the workers (move ``resume``, ``runner`` = WORKERS) and cut it into parts if it is not
    yet; the parts with rows to send, one job each. SendBusy while a sender in-process other than ``owner``
    (the runner that fired it) holds its lease; SendError, saying why, for a send that cannot be resumed."""
    now = utcnow()
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        _check_resumable(record)
        _check_provider(record, provider)
        if record.runner not in (None, WORKERS, owner) and record.lease_until and record.lease_until > now:
            raise SendBusy(send_id, record.runner, record.lease_until)
        handed = update(sends).where(sends.c.id == send_id).values(
            runner=WORKERS, lease_until=None, status=SEND_MOVES["resume"].target, status_reason="",
            started_at=func.coalesce(sends.c.started_at, literal(now, UTCDateTime)))
        _holding_edition(connection, record.edition, lambda: connection.execute(handed), send_id=send_id)
    part_store.cut(store, send_id, part_size)
    return part_store.with_rows_to_send(store, send_id)


# ---------------------------------------------------------------- batches


def claim_batch(store: Store, send_id: int, owner: str, size: int, *, lease_seconds: float,
                batch_id: str | None = None, part: Part | None = None) -> Claimed | None:
    """Claim the next queued rows (move ``claim``) of the send, or of its ``part``, while the lease is
    ``owner``'s and the send is ``sending``; None when there are none, the send was paused or cancelled (by
    anyone, from any process: this is where every sender hears of it), or the lease is lost.

    Given a ``batch_id`` already claimed (a first try whose commit went unacknowledged when the database went
    away), that batch is returned as it was, not a second one: trying a claim again never strands rows."""
    now = utcnow()
    with store.begin() as connection:
        if not _still_owned(connection, send_id, owner, now, lease_seconds=lease_seconds, part=part):
            return None
        if batch_id is not None:
            ids = list(connection.scalars(select(deliveries.c.id).where(
                deliveries.c.send_id == send_id, deliveries.c.batch_id == batch_id,
                deliveries.c.status == D.SENDING).order_by(deliveries.c.id)).all())
            if ids:
                return Claimed(batch_id=batch_id, rows=_rows(connection, batch_id, ids))
        if connection.scalar(select(sends.c.status).where(sends.c.id == send_id)) != S.SENDING:
            return None
        sources, target = _delivery_move("claim")
        mine = deliveries.c.send_id == send_id if part is None else part_store.in_part(part)
        # The rows are read with who they go to in the query that picks (and, on PostgreSQL, locks) them, all at
        # once: the claim is the sender's largest database cost per recipient.
        picked = connection.execute(
            select(deliveries.c.id, deliveries.c.email, deliveries.c.subscriber_id, subscribers.c.name)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .where(mine, deliveries.c.status.in_(sources))
            .order_by(deliveries.c.id).limit(size).with_for_update(of=deliveries, skip_locked=True)).all()
        if not picked:
            return None
        ids = [found.id for found in picked]
        batch_id = batch_id or uuid.uuid4().hex
        moved = connection.execute(update(deliveries).where(deliveries.c.id.in_(ids), deliveries.c.status.in_(sources))
                                   .values(status=target, batch_id=batch_id, attempts=deliveries.c.attempts + 1,
                                           updated_at=now)).rowcount
        if moved != len(ids):  # never, the rows being locked (or the database, on SQLite): only those that moved
            return Claimed(batch_id=batch_id, rows=_rows(connection, batch_id, ids))
        return Claimed(batch_id=batch_id, rows=tuple(Row(delivery_id=found.id, subscriber_id=found.subscriber_id,
                                                         email=found.email, name=found.name) for found in picked))


def orphaned_batches(store: Store, send_id: int, part: Part | None = None) -> list[str]:
    """Batches a sender left in flight when its lease expired (only an idempotent provider's sender finds any)."""
    mine = deliveries.c.send_id == send_id if part is None else part_store.in_part(part)
    with store.read() as connection:
        return list(connection.scalars(
            select(deliveries.c.batch_id).where(mine, deliveries.c.status == D.SENDING)
            .group_by(deliveries.c.batch_id).order_by(func.min(deliveries.c.id))))


def reclaim_batch(store: Store, send_id: int, owner: str, batch_id: str, *, lease_seconds: float,
                  part: Part | None = None) -> Claimed | None:
    """A batch left in flight, again with the same id and the same rows, so its idempotency key holds."""
    now = utcnow()
    with store.begin() as connection:
        if not _still_owned(connection, send_id, owner, now, lease_seconds=lease_seconds, part=part):
            return None
        condition = and_(deliveries.c.send_id == send_id, deliveries.c.batch_id == batch_id,
                         deliveries.c.status == D.SENDING)
        ids = list(connection.scalars(select(deliveries.c.id).where(condition).order_by(deliveries.c.id)))
        connection.execute(update(deliveries).where(condition)
                           .values(attempts=deliveries.c.attempts + 1, updated_at=now))
        return Claimed(batch_id=batch_id, rows=_rows(connection, batch_id, ids)) if ids else None


def _rows(connection: Connection, batch_id: str, ids: list[int]) -> tuple[Row, ...]:
    found = connection.execute(
        select(deliveries.c.id, deliveries.c.email, deliveries.c.subscriber_id, subscribers.c.name)
        .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
        .where(deliveries.c.id.in_(ids), deliveries.c.batch_id == batch_id).order_by(deliveries.c.id)).all()
    return tuple(Row(delivery_id=row.id, subscriber_id=row.subscriber_id, email=row.email, name=row.name)
                 for row in found)


def settle(store: Store, send_id: int, owner: str, batch_id: str, outcomes: Iterable[Settled], *,
           lease_seconds: float, part: Part | None = None) -> bool:
    """Record every outcome of a batch in one transaction, if the lease is still ``owner``'s (False, and nothing
    written, if it is not: whoever took the send over has settled these rows). Only rows still in flight in
    this batch move, each by its ``settle_*`` move."""
    now = utcnow()
    outcomes = list(outcomes)
    for outcome in outcomes:
        if outcome.status not in SETTLED_AS:
            raise ValueError(f"no move settles a row as {outcome.status}")
    # Outcomes alike but for their row (a SendGrid or Mailgun batch: one message id for all) are written by
    # one statement over their ids; the others row by row, in one executemany.
    alike: dict[tuple[str, str | None, str | None, str | None], list[int]] = {}
    for outcome in outcomes:
        key = (outcome.status, outcome.provider_message_id, outcome.error_class, outcome.error_text)
        alike.setdefault(key, []).append(outcome.delivery_id)
    rows = [{"delivery": ids[0], "new_status": status, "message_id": message_id, "error_class": error_class,
             "error_text": error_text, "sent_at": now if status == D.SENT else None}
            for (status, message_id, error_class, error_text), ids in alike.items() if len(ids) == 1]
    in_flight = (deliveries.c.batch_id == batch_id, deliveries.c.status == D.SENDING)
    statement = (update(deliveries).where(deliveries.c.id == bindparam("delivery"), *in_flight)
                 .values(status=bindparam("new_status"), provider_message_id=bindparam("message_id"),
                         error_class=bindparam("error_class"), error_text=bindparam("error_text"),
                         updated_at=now, sent_at=bindparam("sent_at")))
    with store.begin() as connection:
        if not _still_owned(connection, send_id, owner, now, lease_seconds=lease_seconds, part=part):
            return False
        if rows:
            connection.execute(statement, rows)
        for (status, message_id, error_class, error_text), ids in alike.items():
            if len(ids) > 1:
                connection.execute(update(deliveries).where(deliveries.c.id.in_(ids), *in_flight).values(
                    status=status, provider_message_id=message_id, error_class=error_class, error_text=error_text,
                    updated_at=now, sent_at=now if status == D.SENT else None))
        # The provider says these addresses must not be mailed again (Postmark's 406, say).
        suppressed = [{"email_key": outcome.email.lower(), "reason": "provider", "source": outcome.error_text or "",
                       "created_at": now} for outcome in outcomes if outcome.suppress and outcome.email]
        if suppressed:
            connection.execute(insert_new(connection, suppressions, suppressions.c.email_key), suppressed)
    return True


# ---------------------------------------------------------------- moves


def refire_abandoned(store: Store, send_id: int) -> bool:
    """Schedule again a send that fired but whose runner died (its lease expired) before it queued the
    audience (move ``refire``): it fires again, or is missed, by the usual rules. False if it was not such."""
    now = utcnow()
    with store.begin() as connection:
        return bool(connection.execute(update(sends).where(
            sends.c.id == send_id, sends.c.status.in_(_sources("refire")), sends.c.queued_at.is_(None),
            or_(sends.c.runner.is_(None), sends.c.lease_until < now))
            .values(status=SEND_MOVES["refire"].target, runner=None, lease_until=None,
                    status_reason="fired again: its runner stopped before it queued the audience")).rowcount)


def move(store: Store, send_id: int, name: str, reason: str, *, owner: str | None = None) -> bool:
    """Make the move ``name`` if the send is in one of its sources (and, with ``owner``, still theirs, whose
    lease it then gives up); False if it was not: another process or an operator moved it first."""
    chosen = SEND_MOVES[name]
    condition = and_(sends.c.id == send_id, sends.c.status.in_(sorted(chosen.sources)))
    values: dict[str, object] = {"status": chosen.target, "status_reason": reason}
    if owner is not None:
        condition = and_(condition, sends.c.runner == owner)
        values.update(runner=None, lease_until=None)
    with store.begin() as connection:
        return bool(connection.execute(update(sends).where(condition).values(**values)).rowcount)


def operator_move(store: Store, send_id: int, name: str, reason: str) -> SendRecord:
    """An operator's move: made, or refused with a SendError that says why and what can be done instead."""
    now = utcnow()
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        if record.status not in SEND_MOVES[name].sources:
            raise SendError(refusal(record, name))
        connection.execute(update(sends).where(sends.c.id == send_id)
                           .values(status=SEND_MOVES[name].target, status_reason=reason))
        if name == "cancel":
            sources, target = _delivery_move("cancel")
            connection.execute(update(deliveries).where(deliveries.c.send_id == send_id,
                                                        deliveries.c.status.in_(sources))
                               .values(status=target, error_class="cancelled", error_text=reason, updated_at=now))
    return send_record(store, send_id)


def hand_to_runner(store: Store, send_id: int, reason: str) -> SendRecord:
    """Resume a send without running it here (move ``resume`` with no lease holder): ``newsletter run``
    resumes a ``sending`` send whose lease has expired, so it takes this one on its next tick. The console
    uses this, since a web process must not run a send. A live lease is never stolen: SendBusy while another
    sender holds it; SendError, saying why, for a send that cannot be resumed."""
    now = utcnow()
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        _check_resumable(record)
        if record.runner and record.lease_until and record.lease_until > now:
            raise SendBusy(send_id, record.runner, record.lease_until)
        handed = update(sends).where(sends.c.id == send_id).values(
            status=SEND_MOVES["resume"].target, runner=None, lease_until=None, status_reason=reason)
        _holding_edition(connection, record.edition, lambda: connection.execute(handed), send_id=send_id)
    return send_record(store, send_id)


def reschedule(store: Store, send_id: int, at: dt.datetime) -> SendRecord:
    """Give a scheduled, held or missed send a (new) time (move ``reschedule``)."""
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        if record.status not in SEND_MOVES["reschedule"].sources:
            raise SendError(refusal(record, "reschedule"))
        moved = update(sends).where(sends.c.id == send_id).values(
            status=SEND_MOVES["reschedule"].target, scheduled_at=at.astimezone(dt.UTC), status_reason="")
        _holding_edition(connection, record.edition, lambda: connection.execute(moved), send_id=send_id)
    return send_record(store, send_id)


def requeue(store: Store, send_id: int, name: str, *, error_class: str | None = None) -> int:
    """Queue rows again by the delivery move ``name`` (``retry`` transient failures, ``resend`` uncertain rows);
    a send that was ``sent`` is reopened (``paused``) so that resuming sends them. How many rows."""
    sources, target = _delivery_move(name)
    condition = and_(deliveries.c.send_id == send_id, deliveries.c.status.in_(sources))
    if error_class is not None:
        condition = and_(condition, deliveries.c.error_class == error_class)
    with store.begin() as connection:
        record = _record(connection, send_id, lock=True)
        if record.status == S.CANCELLED:
            raise SendError(refusal(record, "resume"))
        count = int(connection.execute(update(deliveries).where(condition).values(
            status=target, batch_id=None, error_class=None, error_text=None, updated_at=utcnow())).rowcount or 0)
        if count and record.status in SEND_MOVES["reopen"].sources:
            reopened = update(sends).where(sends.c.id == send_id).values(
                status=SEND_MOVES["reopen"].target, finished_at=None,
                status_reason=f"{count} row(s) queued again; resume to send them")
            _holding_edition(connection, record.edition, lambda: connection.execute(reopened), send_id=send_id)
    return count


def refusal(record: SendRecord, name: str) -> str:
    """Why the send cannot make the move ``name`` now, and what can be done."""
    number, status = record.id, record.status
    verb = {"resume": "resumed", "pause": "paused", "cancel": "cancelled", "reschedule": "rescheduled"}.get(name, name)
    why = {
        S.SCHEDULED: f"it is scheduled{_at(record)} and goes out then; 'schedule move {number} --at TIME' "
                     f"changes the time",
        S.HELD: f"it was held when it fired ({record.reason}); nothing was sent. Fix the draft, then "
                f"'schedule move {number} --at TIME', or cancel it",
        S.MISSED: f"it missed its time ({record.reason}); nothing was sent. 'schedule move {number} --at TIME' "
                  f"sends it later, or cancel it",
        S.SENT: "every recipient has been settled; '--retry-failed' or '--resume ... --resend-uncertain' queue "
                "rows again",
        S.CANCELLED: "it was cancelled, and a cancelled send stays so; send the draft again to start a new send",
        S.PAUSED: f"it is paused; '--resume {number}' continues it",
        S.FAILED: f"it failed ({record.reason}); '--resume {number}' tries again once the cause is fixed",
        S.SENDING: "it is being sent",
    }[status]
    return f"send {number} is {status}, so it cannot be {verb}: {why}"


def _at(record: SendRecord) -> str:
    return f" for {record.scheduled_at:%Y-%m-%d %H:%M} UTC" if record.scheduled_at else ""


# ---------------------------------------------------------------- reading


def _record(connection: Connection, send_id: int, *, lock: bool = False) -> SendRecord:
    query = (select(sends, editions.c.name.label("edition"), editions.c.content_hash)
             .join(editions, editions.c.id == sends.c.edition_id).where(sends.c.id == send_id))
    row = connection.execute(query.with_for_update(of=sends) if lock else query).first()
    if row is None:
        raise SendError(f"no send {send_id} (see 'newsletter logs')")
    return SendRecord(id=row.id, status=SendStatus(row.status), reason=row.status_reason or "", edition=row.edition,
                      content_hash=row.content_hash, audience=row.audience, provider=row.provider, runner=row.runner,
                      lease_until=row.lease_until, scheduled_at=row.scheduled_at, draft_path=row.draft_path,
                      timezone=row.timezone, override_reason=row.override_reason, nonce=row.nonce or "",
                      queued_at=row.queued_at)


def send_record(store: Store, send_id: int) -> SendRecord:
    with store.read() as connection:
        return _record(connection, send_id)


def sent_parts(store: Store, send_id: int) -> tuple[str, str, str, str]:
    """(edition name, subject, html, text) of what the send sends."""
    with store.read() as connection:
        row = connection.execute(
            select(editions.c.name, editions.c.subject, editions.c.email_html, editions.c.email_txt)
            .join(sends, sends.c.edition_id == editions.c.id).where(sends.c.id == send_id)).one()
    return row.name, row.subject, row.email_html, row.email_txt


def _count(connection: Connection, send_id: int, statuses: Iterable[str]) -> int:
    return int(connection.scalar(select(func.count()).select_from(deliveries).where(
        deliveries.c.send_id == send_id, deliveries.c.status.in_(sorted(statuses)))) or 0)


def _counts(connection: Connection, send_id: int) -> dict[str, int]:
    return {status: int(count) for status, count in connection.execute(
        select(deliveries.c.status, func.count()).where(deliveries.c.send_id == send_id)
        .group_by(deliveries.c.status))}


def unsettled_count(store: Store, send_id: int) -> int:
    """Rows queued or in flight."""
    with store.read() as connection:
        return _count(connection, send_id, UNSETTLED)


def summary(store: Store, send_id: int) -> SendSummary:
    """The send's status and its rows counted by status, with the uncertain addresses."""
    with store.read() as connection:
        record = _record(connection, send_id)
        uncertain = connection.scalars(
            select(deliveries.c.email).where(deliveries.c.send_id == send_id, deliveries.c.status == D.UNCERTAIN)
            .order_by(deliveries.c.id)).all()
        return SendSummary(send_id=send_id, status=record.status, reason=record.reason,
                           counts=_counts(connection, send_id), uncertain=tuple(uncertain))
