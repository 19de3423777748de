"""Named operations on the parts of a send handed to the workers (PostgreSQL), and on the workers' heartbeats.

    cut (once per send) ─▶ one job per part with rows to send ─▶ acquire (the part's lease) ─▶ claim, settle
                                                                 (``sends.py``, with ``part=``) ─▶ release

A part is a range of the send's delivery ids. One job at a time sends it, under a lease on the part like the
lease a sender in-process holds on a whole send: every claim and outcome write checks it, in its own
transaction; a job takes a part over only once the lease has expired. Rows it finds ``sending`` then were in
flight when the part's last sender stopped, and follow the exactly-once rules of ``send/pump.py``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Connection, and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.store import Store, utcnow
from pipeline.store.states import DELIVERY_MOVES, UNSETTLED, DeliveryStatus
from pipeline.store.tables import deliveries, send_parts, sends

D = DeliveryStatus
# ``sends.runner`` of a send handed to the workers: its parts carry the leases.
WORKERS = "workers"
IN_FLIGHT_WHEN_STOPPED = "in flight when its sender stopped: the provider may or may not have accepted it"


@dataclass(frozen=True, kw_only=True)
class Part:
    """Delivery ids ``first_id`` to ``last_id`` of ``send_id``: what one job sends."""

    send_id: int
    number: int
    first_id: int
    last_id: int


@dataclass(frozen=True, kw_only=True)
class Held:
    """Another sender holds the part until ``until``."""

    runner: str
    until: dt.datetime


def cut(store: Store, send_id: int, size: int) -> list[Part]:
    """The send's parts, cut now if it has none: ranges of about ``size`` queued rows each, widened to cover
    every row of the send. The send's row is locked while it is cut, so two processes cut it once."""
    with store.begin() as connection:
        connection.execute(select(sends.c.id).where(sends.c.id == send_id).with_for_update())
        found = _parts(connection, send_id)
        if found:
            return found
        bucket = ((func.row_number().over(order_by=deliveries.c.id) - 1) // size).label("bucket")
        numbered = (select(deliveries.c.id, bucket)
                    .where(deliveries.c.send_id == send_id, deliveries.c.status == D.QUEUED).subquery())
        starts = list(connection.scalars(select(func.min(numbered.c.id)).group_by(numbered.c.bucket)
                                         .order_by(func.min(numbered.c.id))))
        lowest, highest = connection.execute(select(func.min(deliveries.c.id), func.max(deliveries.c.id))
                                             .where(deliveries.c.send_id == send_id)).one()
        if not starts:
            return []
        starts[0] = lowest
        ends = [start - 1 for start in starts[1:]] + [highest]
        rows = [{"send_id": send_id, "number": number, "first_id": first, "last_id": last}
                for number, (first, last) in enumerate(zip(starts, ends, strict=True), start=1)]
        connection.execute(pg_insert(send_parts).on_conflict_do_nothing(), rows)
        return _parts(connection, send_id)


def _parts(connection: Connection, send_id: int) -> list[Part]:
    return [Part(send_id=send_id, number=row.number, first_id=row.first_id, last_id=row.last_id)
            for row in connection.execute(select(send_parts).where(send_parts.c.send_id == send_id)
                                          .order_by(send_parts.c.number))]


def with_rows_to_send(store: Store, send_id: int) -> list[Part]:
    """The parts that still have rows queued or in flight."""
    with store.read() as connection:
        busy = set(connection.scalars(
            select(send_parts.c.number).join(deliveries, and_(
                deliveries.c.send_id == send_parts.c.send_id,
                deliveries.c.id.between(send_parts.c.first_id, send_parts.c.last_id)))
            .where(send_parts.c.send_id == send_id, deliveries.c.status.in_(sorted(UNSETTLED)))
            .group_by(send_parts.c.number)))
        return [part for part in _parts(connection, send_id) if part.number in busy]


def get(store: Store, send_id: int, number: int) -> Part | None:
    with store.read() as connection:
        return next((part for part in _parts(connection, send_id) if part.number == number), None)


def in_part(part: Part) -> ColumnElement[bool]:
    """The condition that a delivery row is of ``part``."""
    return and_(deliveries.c.send_id == part.send_id, deliveries.c.id.between(part.first_id, part.last_id))


def acquire(store: Store, part: Part, owner: str, *, lease_seconds: float, idempotent: bool) -> Held | None:
    """Make ``owner`` the part's sender (None), unless another's lease on it runs (Held). Rows left in flight
    by the part's last sender become ``uncertain`` (move ``settle_uncertain``), unless the provider is
    idempotent: then they stay in flight, to be handed over again as the same batch."""
    now = utcnow()
    with store.begin() as connection:
        row = connection.execute(select(send_parts.c.runner, send_parts.c.lease_until).where(
            send_parts.c.send_id == part.send_id, send_parts.c.number == part.number).with_for_update()).one()
        if row.runner and row.runner != owner and row.lease_until and row.lease_until > now:
            return Held(runner=row.runner, until=row.lease_until)
        connection.execute(update(send_parts).where(send_parts.c.send_id == part.send_id,
                                                    send_parts.c.number == part.number)
                           .values(runner=owner, lease_until=now + dt.timedelta(seconds=lease_seconds)))
        if not idempotent:
            move = DELIVERY_MOVES["settle_uncertain"]
            connection.execute(update(deliveries).where(in_part(part), deliveries.c.status.in_(sorted(move.sources)))
                               .values(status=move.target, error_class="uncertain", updated_at=now,
                                       error_text=IN_FLIGHT_WHEN_STOPPED))
    return None


def still_owned(connection: Connection, part: Part, owner: str, now: dt.datetime, *,
                lease_seconds: float | None) -> bool:
    """Whether ``owner`` still holds the part, extending the lease when ``lease_seconds`` is given; the UPDATE
    locks the part's row, so no takeover slips in before the transaction ends."""
    condition = and_(send_parts.c.send_id == part.send_id, send_parts.c.number == part.number,
                     send_parts.c.runner == owner)
    values = ({"runner": owner} if lease_seconds is None
              else {"lease_until": now + dt.timedelta(seconds=lease_seconds)})
    return bool(connection.execute(update(send_parts).where(condition).values(**values)).rowcount)


def renew(store: Store, part: Part, owner: str, *, lease_seconds: float) -> bool:
    with store.begin() as connection:
        return still_owned(connection, part, owner, utcnow(), lease_seconds=lease_seconds)


def release(store: Store, part: Part, owner: str) -> None:
    with store.begin() as connection:
        connection.execute(update(send_parts).where(send_parts.c.send_id == part.send_id,
                                                    send_parts.c.number == part.number, send_parts.c.runner == owner)
                           .values(runner=None, lease_until=None))


def live_holder(connection: Connection, send_id: int, now: dt.datetime) -> Held | None:
    """A sender whose lease on a part of the send still runs, if any."""
    row = connection.execute(select(send_parts.c.runner, send_parts.c.lease_until).where(
        send_parts.c.send_id == send_id, send_parts.c.lease_until > now).limit(1)).first()
    return Held(runner=row.runner, until=row.lease_until) if row is not None else None


def live_workers(store: Store, within_seconds: float) -> int:
    """How many procrastinate workers wrote a heartbeat in the last ``within_seconds``."""
    with store.read() as connection:
        return int(connection.scalar(text(
            "SELECT count(*) FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - make_interval(secs => :seconds)"), {"seconds": within_seconds}) or 0)


def rows_to_send(store: Store, part: Part) -> int:
    """The part's rows queued or in flight."""
    with store.read() as connection:
        return int(connection.scalar(select(func.count()).select_from(deliveries).where(
            in_part(part), deliveries.c.status.in_(sorted(UNSETTLED)))) or 0)
