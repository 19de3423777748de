"""Send an edition to its audience: one delivery row per recipient, each sent exactly once.

    create_send ─▶ deliveries (queued) ─▶ claim a batch (sending) ─▶ provider ─▶ sent | failed | uncertain

The rules that make a send exactly-once across crashes:

- Every audience member gets a row when the send is created; nobody is ever
  skipped without a status (``suppressed`` and ``skipped`` rows say why).
- A batch is claimed in a transaction (status ``sending``, a batch id,
  attempts + 1) before it is handed to the provider, and its outcomes are
  recorded in another: a row moves forward only.
- One process sends a send at a time (``sends.runner``); a second one is told
  who holds it. A runner that died (its process is gone, or it has not beaten
  its heartbeat for a minute) may be replaced.
- Rows found ``sending`` by the next runner were in flight at the crash: they
  are handed over again — as the same batch, under the same id, so the
  provider recognises its idempotency key — only if the provider honours one;
  otherwise they become ``uncertain`` and are listed for the operator, who
  decides with ``--resend-uncertain``. Nobody is ever sent twice by the pipeline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, case, exists, func, insert, literal, select, update
from sqlalchemy.orm import aliased

from pipeline import messages
from pipeline.config import Settings
from pipeline.errors import (
    ProviderAmbiguous,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    SendError,
)
from pipeline.providers import Batch, Mail, Outcome, Provider, Recipient, make_provider
from pipeline.ratelimit import TokenBucket
from pipeline.render import Edition
from pipeline.store import Store, utcnow
from pipeline.store.tables import UTCDateTime, deliveries, editions, sends, subscribers, suppressions
from pipeline.subscribers import tag_filter

RUNNER_STALE = dt.timedelta(seconds=60)
ACTIVE_SENDS = ("scheduled", "sending", "paused")
ProgressHook = Callable[[int], None]


@dataclass(frozen=True, kw_only=True)
class SendSummary:
    """Where a send stands: its status, its rows by status, and who is uncertain."""

    send_id: int
    status: str
    reason: str
    counts: dict[str, int]
    uncertain: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------- creating a send


def create_send(store: Store, settings: Settings, edition: Edition, *, built_path: str, status: str = "sending",
                scheduled_at: dt.datetime | None = None, override_reason: str | None = None,
                draft_path: str | None = None, timezone: str | None = None) -> int:
    """Record the edition and a send of it, with a delivery row for every audience member.

    A ``scheduled`` send gets its rows when it fires (``queue_scheduled``): the audience and the
    edition are those of that moment."""
    now = utcnow()
    with store.begin() as connection:
        active = connection.execute(
            select(sends.c.id, sends.c.status).join(editions, editions.c.id == sends.c.edition_id)
            .where(editions.c.name == edition.name, sends.c.status.in_(ACTIVE_SENDS))
        ).first()
        if active is not None:
            raise SendError(f"edition {edition.name} already has send {active.id} ({active.status}): "
                            f"use --resume {active.id} or --cancel {active.id}")
        edition_id = _record_edition(connection, edition, built_path, now)
        send_id = connection.execute(insert(sends).values(
            edition_id=edition_id, status=status, audience=edition.draft.meta.audience,
            provider=settings.provider.name, scheduled_at=scheduled_at, created_at=now, status_reason="",
            override_reason=override_reason, draft_path=draft_path, timezone=timezone,
        )).inserted_primary_key[0]
        if status != "scheduled":
            _queue(connection, send_id, edition, now)
    return int(send_id)


def claim_scheduled(store: Store, send_id: int, me: str) -> bool:
    """Take a due scheduled send for this process; False if another process (or an operator) was first."""
    now = utcnow()
    with store.begin() as connection:
        claimed = connection.execute(update(sends).where(sends.c.id == send_id, sends.c.status == "scheduled")
                                     .values(status="sending", runner=me, heartbeat_at=now, started_at=now,
                                             status_reason="")).rowcount
    return bool(claimed)


def queue_scheduled(store: Store, settings: Settings, send_id: int, edition: Edition, *, built_path: str) -> None:
    """Record the edition as rebuilt at fire time (the content actually sent) and queue its audience."""
    now = utcnow()
    with store.begin() as connection:
        edition_id = _record_edition(connection, edition, built_path, now)
        connection.execute(update(sends).where(sends.c.id == send_id).values(
            edition_id=edition_id, audience=edition.draft.meta.audience, provider=settings.provider.name))
        _queue(connection, send_id, edition, now)


def transition(store: Store, send_id: int, status: str, reason: str, *, only_from: tuple[str, ...],
               release_runner: bool = False) -> bool:
    """Move a send to ``status`` with its reason if it is still in one of ``only_from``; False if it was not
    (another process or an operator moved it first)."""
    values: dict[str, object] = {"status": status, "status_reason": reason}
    if release_runner:
        values["runner"] = None
    with store.begin() as connection:
        return bool(connection.execute(update(sends).where(sends.c.id == send_id, sends.c.status.in_(only_from))
                                       .values(**values)).rowcount)


def _record_edition(connection: Connection, edition: Edition, built_path: str, now: dt.datetime) -> int:
    found = connection.scalar(select(editions.c.id).where(
        editions.c.name == edition.name, editions.c.content_hash == edition.content_hash))
    if found is not None:
        return int(found)
    return int(connection.execute(insert(editions).values(
        name=edition.name, content_hash=edition.content_hash, subject=edition.subject, built_path=built_path,
        email_html=edition.email_html, email_txt=edition.email_txt, created_at=now,
    )).inserted_primary_key[0])


def _queue(connection: Connection, send_id: int, edition: Edition, now: dt.datetime) -> None:
    """One row per audience member, in SQL: the audience is never loaded into memory."""
    suppressed = exists().where(suppressions.c.email_key == subscribers.c.email_key)
    status = case((suppressed, "suppressed"), else_="queued")
    audience = select(
        literal(send_id), subscribers.c.id, subscribers.c.email, status, literal(0),
        literal(now, UTCDateTime), literal(now, UTCDateTime),
    ).where(subscribers.c.status == "active", tag_filter(edition.draft.meta.audience))
    columns = ["send_id", "subscriber_id", "email", "status", "attempts", "queued_at", "updated_at"]
    connection.execute(insert(deliveries).from_select(columns, audience))
    connection.execute(update(deliveries).where(deliveries.c.status == "suppressed", deliveries.c.send_id == send_id)
                       .values(error_class="suppressed", error_text="on the suppression list"))
    # Whoever already received this edition in an earlier send of it is skipped, and told so.
    # An uncorrelated IN: evaluated once, where a correlated EXISTS scanned every delivery ever made per row.
    earlier = aliased(deliveries)
    received = (select(earlier.c.subscriber_id).join(sends, sends.c.id == earlier.c.send_id)
                .join(editions, editions.c.id == sends.c.edition_id)
                .where(earlier.c.send_id != send_id, editions.c.name == edition.name,
                       earlier.c.status.in_(("sent", "sending", "uncertain", "queued"))))
    connection.execute(update(deliveries).where(deliveries.c.send_id == send_id, deliveries.c.status == "queued",
                                                deliveries.c.subscriber_id.in_(received))
                       .values(status="skipped", error_class="duplicate",
                               error_text="already received this edition in an earlier send"))


# ---------------------------------------------------------------- running a send


async def run_send(store: Store, settings: Settings, send_id: int, *, provider: Provider | None = None,
                   on_progress: ProgressHook | None = None, should_stop: Callable[[], bool] = lambda: False,
                   ) -> SendSummary:
    """Send every queued row of ``send_id`` until none is left, or it is paused, cancelled or stopped.

    Up to ``[provider] concurrency`` batches are in flight at once, paced by the
    token bucket of ``rate_per_second``. ``should_stop`` is asked before each
    batch is claimed: a stopping sender takes no new work and finishes what is
    in flight.
    """
    me = runner_name()
    async with _provider(settings, provider) as chosen:
        _take_over(store, send_id, me, provider_name=settings.provider.name, idempotent=chosen.idempotent)
        mail, edition_name = _mail(store, settings, send_id)
        pump = _Pump(store, settings, send_id, me, chosen, mail, on_progress)
        await pump.run(f"{settings.publication.base_url}/archive/{edition_name}/", should_stop)
        _finish(store, send_id, me)
    return summary(store, send_id)


class _Pump:
    """Claims batches and keeps up to ``concurrency`` of them in flight with the provider."""

    def __init__(self, store: Store, settings: Settings, send_id: int, me: str, provider: Provider, mail: Mail,
                 on_progress: ProgressHook | None):
        self.store, self.settings, self.send_id, self.me = store, settings, send_id, me
        self.provider, self.mail, self.on_progress = provider, mail, on_progress
        self.bucket = TokenBucket(store, provider.name, settings.provider.rate_per_second)
        self.batch_size = min(settings.provider.batch_size, provider.max_batch)
        self.failures_in_a_row = 0
        self.stopped = False

    async def run(self, view_url: str, should_stop: Callable[[], bool]) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        orphans = _orphaned_batches(self.store, self.send_id)
        try:
            while not self.stopped and not should_stop():
                if len(in_flight) >= self.settings.provider.concurrency:
                    done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # a batch that could not be recorded stops the send here
                    continue
                if orphans:
                    batch = _reclaim(self.store, self.settings, self.send_id, self.mail, view_url, orphans.pop(0))
                else:
                    batch = _claim(self.store, self.settings, self.send_id, self.me, self.mail, view_url,
                                   self.batch_size)
                if batch is None:
                    break
                await self.bucket.take(len(batch.recipients))
                in_flight.add(asyncio.create_task(self._deliver(batch)))
        finally:
            if in_flight:  # finish what is in flight, whatever stopped the loop
                await asyncio.wait(in_flight)
        for task in in_flight:
            task.result()

    async def _deliver(self, batch: Batch) -> None:
        outcomes, error = await _hand_over(self.provider, batch)
        _record(self.store, batch, outcomes)
        if self.on_progress is not None:
            self.on_progress(len(batch.recipients))
        if isinstance(error, ProviderAuthError):
            self._stop("failed", f"the provider refused the credentials: {error}")
        elif error is not None or (outcomes and all(o.status != "sent" for o in outcomes)):
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.settings.provider.pause_after_failures:
                self._stop("paused", f"paused after {self.failures_in_a_row} failed batches in a row; last: "
                                     f"{error or outcomes[-1].error_text}")
        else:
            self.failures_in_a_row = 0

    def _stop(self, status: str, reason: str) -> None:
        self.stopped = True
        transition(self.store, self.send_id, status, reason, only_from=("sending",))


def _take_over(store: Store, send_id: int, me: str, *, provider_name: str, idempotent: bool) -> None:
    """Become the send's runner, and settle the rows a dead runner left in flight: uncertain, unless the
    provider is idempotent, in which case they stay in flight and are handed over again as they were."""
    now = utcnow()
    with store.begin() as connection:
        row = connection.execute(select(sends).where(sends.c.id == send_id).with_for_update()).first()
        if row is None:
            raise SendError(f"no send {send_id} (see 'newsletter logs')")
        if row.status in ("sent", "cancelled"):
            raise SendError(f"send {send_id} is {row.status}: nothing left to send")
        if row.provider != provider_name:
            raise SendError(f"send {send_id} was started with the {row.provider} provider; resume it with that one "
                            f"(the settings name {provider_name})")
        if row.runner and row.runner != me and not runner_is_dead(row.runner, row.heartbeat_at, now):
            raise SendError(f"send {send_id} is being sent by another process ({row.runner}); "
                            "it can be resumed once that process stops")
        connection.execute(update(sends).where(sends.c.id == send_id).values(
            runner=me, heartbeat_at=now, status="sending", status_reason="",
            started_at=func.coalesce(sends.c.started_at, literal(now, UTCDateTime))))
        in_flight = and_(deliveries.c.send_id == send_id, deliveries.c.status == "sending")
        if not idempotent:
            connection.execute(update(deliveries).where(in_flight).values(
                status="uncertain", error_class="uncertain", updated_at=now,
                error_text="in flight when the sender stopped: the provider may or may not have accepted it"))


def runner_is_dead(runner: str, heartbeat_at: dt.datetime | None, now: dt.datetime) -> bool:
    if heartbeat_at is None or now - heartbeat_at > RUNNER_STALE:
        return True
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _mail(store: Store, settings: Settings, send_id: int) -> tuple[Mail, str]:
    """What every message of the send shares, from the edition as it was when the send was created,
    and the edition's name."""
    with store.begin() as connection:
        edition = connection.execute(
            select(editions.c.name, editions.c.subject, editions.c.email_html, editions.c.email_txt)
            .join(sends, sends.c.edition_id == editions.c.id).where(sends.c.id == send_id)
        ).one()
    publication = settings.publication
    mail = Mail(label=str(send_id), subject=edition.subject, html=edition.email_html, text=edition.email_txt,
                sender=publication.from_, reply_to=publication.reply_to, list_id=messages.list_id(settings))
    return mail, edition.name


def _claim(store: Store, settings: Settings, send_id: int, me: str, mail: Mail, view_url: str,
           size: int) -> Batch | None:
    """Claim the next queued rows in one transaction; None when there are none or the send was stopped."""
    now = utcnow()
    with store.begin() as connection:
        send = connection.execute(select(sends.c.status, sends.c.runner).where(sends.c.id == send_id)).one()
        if send.status != "sending" or send.runner != me:
            return None
        ids = connection.scalars(
            select(deliveries.c.id).where(deliveries.c.send_id == send_id, deliveries.c.status == "queued")
            .order_by(deliveries.c.id).limit(size).with_for_update(skip_locked=True)
        ).all()
        if not ids:
            return None
        batch_id = uuid.uuid4().hex
        connection.execute(update(deliveries).where(deliveries.c.id.in_(ids), deliveries.c.status == "queued")
                           .values(status="sending", batch_id=batch_id, attempts=deliveries.c.attempts + 1,
                                   updated_at=now))
        connection.execute(update(sends).where(sends.c.id == send_id).values(heartbeat_at=now))
        rows = _batch_rows(connection, batch_id, ids)
    return _batch(settings, send_id, mail, view_url, batch_id, rows)


def _batch_rows(connection: Connection, batch_id: str, ids: list[int] | None = None) -> list:  # type: ignore[type-arg]
    query = (select(deliveries.c.id, deliveries.c.email, deliveries.c.subscriber_id, subscribers.c.name)
             .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
             .where(deliveries.c.batch_id == batch_id).order_by(deliveries.c.id))
    if ids is not None:  # by primary key: batch_id has no index
        query = query.where(deliveries.c.id.in_(ids))
    return list(connection.execute(query).all())


def _orphaned_batches(store: Store, send_id: int) -> list[str]:
    """Batches a dead runner left in flight (only an idempotent provider's runner finds any)."""
    with store.read() as connection:
        return list(connection.scalars(
            select(deliveries.c.batch_id).where(deliveries.c.send_id == send_id, deliveries.c.status == "sending")
            .group_by(deliveries.c.batch_id).order_by(func.min(deliveries.c.id))))


def _reclaim(store: Store, settings: Settings, send_id: int, mail: Mail, view_url: str, batch_id: str) -> Batch:
    """A batch left in flight, again with the same id and the same rows, so its idempotency key holds."""
    with store.begin() as connection:
        connection.execute(update(deliveries).where(deliveries.c.send_id == send_id,
                                                    deliveries.c.batch_id == batch_id,
                                                    deliveries.c.status == "sending")
                           .values(attempts=deliveries.c.attempts + 1, updated_at=utcnow()))
        rows = _batch_rows(connection, batch_id)
    return _batch(settings, send_id, mail, view_url, batch_id, rows)


def _batch(settings: Settings, send_id: int, mail: Mail, view_url: str, batch_id: str,
           rows: list) -> Batch:  # type: ignore[type-arg]
    recipients = tuple(
        messages.recipient(settings, label=mail.label, delivery_id=row.id, email=row.email, name=row.name,
                           unsubscribe_url=f"{settings.publication.base_url}/u/"
                                           f"{messages.unsubscribe_token(settings, row.subscriber_id, send_id)}",
                           view_url=view_url)
        for row in rows
    )
    return Batch(id=batch_id, mail=mail, recipients=recipients)


async def _hand_over(provider: Provider, batch: Batch) -> tuple[list[Outcome], ProviderError | None]:
    """The provider's outcomes, and the error that failed the whole batch if one did.

    What each batch-wide error means for its rows (the exactly-once rules):
    refused credentials or unavailable: nothing was accepted, so the rows go
    back to the queue or fail transiently; rejected as invalid: permanent
    failure; no answer after sending (ambiguous): ``uncertain``.
    """
    try:
        outcomes = await provider.send(batch)
    except asyncio.CancelledError:
        raise
    except ProviderAuthError as exc:
        return _all(batch, "queued", None, str(exc)), exc
    except ProviderUnavailable as exc:
        return _all(batch, "failed", "transient", str(exc)), exc
    except ProviderRejected as exc:
        return _all(batch, "failed", "permanent", str(exc)), exc
    except ProviderAmbiguous as exc:
        return _all(batch, "uncertain", "uncertain", str(exc)), exc
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is recorded against its rows, never lost
        error = ProviderError(f"{type(exc).__name__}: {exc}")
        if provider.idempotent:
            return _all(batch, "failed", "transient", str(error)), error
        return _all(batch, "uncertain", "uncertain", str(error)), error
    answered = {outcome.delivery_id for outcome in outcomes}
    missing = [Outcome(delivery_id=person.delivery_id, status="uncertain", error_class="uncertain",
                       error_text="the provider gave no result for this recipient")
               for person in batch.recipients if person.delivery_id not in answered]
    return list(outcomes) + missing, None


def _all(batch: Batch, status: str, error_class: str | None, text: str) -> list[Outcome]:
    return [Outcome(delivery_id=person.delivery_id, status=status,  # type: ignore[arg-type]
                    error_class=error_class, error_text=text) for person in batch.recipients]


def _record(store: Store, batch: Batch, outcomes: list[Outcome]) -> None:
    """Every outcome of a batch in one transaction; only rows still ``sending`` in this batch move."""
    now = utcnow()
    statement = (update(deliveries)
                 .where(deliveries.c.id == bindparam("delivery"), deliveries.c.batch_id == batch.id,
                        deliveries.c.status == "sending")
                 .values(status=bindparam("new_status"), provider_message_id=bindparam("message_id"),
                         error_class=bindparam("error_class"), error_text=bindparam("error_text"),
                         updated_at=now, sent_at=bindparam("sent_at")))
    rows = [{"delivery": outcome.delivery_id, "new_status": outcome.status,
             "message_id": outcome.provider_message_id, "error_class": outcome.error_class,
             "error_text": outcome.error_text, "sent_at": now if outcome.status == "sent" else None}
            for outcome in outcomes]
    emails = {person.delivery_id: person.email for person in batch.recipients}
    with store.begin() as connection:
        connection.execute(statement, rows)
        for outcome in outcomes:
            if outcome.suppress:
                _suppress(connection, emails[outcome.delivery_id], outcome.error_text or "", now)


def _suppress(connection: Connection, email: str, why: str, now: dt.datetime) -> None:
    key = email.lower()
    if connection.scalar(select(suppressions.c.email_key).where(suppressions.c.email_key == key)) is None:
        connection.execute(insert(suppressions).values(email_key=key, reason="provider", source=why, created_at=now))


def _finish(store: Store, send_id: int, me: str) -> None:
    """Mark the send sent once nothing is queued or in flight; always give up the runner."""
    now = utcnow()
    with store.begin() as connection:
        left = connection.scalar(select(func.count()).select_from(deliveries).where(
            deliveries.c.send_id == send_id, deliveries.c.status.in_(("queued", "sending"))))
        values: dict[str, object] = {"runner": None}
        status = connection.scalar(select(sends.c.status).where(sends.c.id == send_id))
        if status == "sending" and not left:
            values.update(status="sent", finished_at=now)
        connection.execute(update(sends).where(sends.c.id == send_id, sends.c.runner == me).values(**values))


# ---------------------------------------------------------------- operator controls


def _set_status(store: Store, send_id: int, status: str, allowed: tuple[str, ...], reason: str) -> None:
    with store.begin() as connection:
        current = connection.scalar(select(sends.c.status).where(sends.c.id == send_id))
        if current is None:
            raise SendError(f"no send {send_id} (see 'newsletter logs')")
        if current not in allowed:
            raise SendError(f"send {send_id} is {current}: it cannot be {status}")
        connection.execute(update(sends).where(sends.c.id == send_id).values(status=status, status_reason=reason))
        if status == "cancelled":
            connection.execute(update(deliveries).where(deliveries.c.send_id == send_id,
                                                        deliveries.c.status == "queued")
                               .values(status="cancelled", error_class="cancelled", error_text=reason,
                                       updated_at=utcnow()))


def pause_send(store: Store, send_id: int) -> None:
    """Stop after the batch in flight; ``--resume`` continues with the queued rows."""
    _set_status(store, send_id, "paused", ("sending", "scheduled"), "paused by the operator")


def cancel_send(store: Store, send_id: int) -> None:
    """Cancel every row not yet handed to the provider; rows in flight are still recorded."""
    _set_status(store, send_id, "cancelled", ("sending", "scheduled", "paused", "failed", "held"),
                "cancelled by the operator")


def requeue(store: Store, send_id: int, *, statuses: tuple[str, ...], error_class: str | None = None) -> int:
    """Put rows back in the queue (transient failures, or uncertain rows the operator chose to resend)."""
    condition = and_(deliveries.c.send_id == send_id, deliveries.c.status.in_(statuses))
    if error_class is not None:
        condition = and_(condition, deliveries.c.error_class == error_class)
    with store.begin() as connection:
        status = connection.scalar(select(sends.c.status).where(sends.c.id == send_id))
        if status is None:
            raise SendError(f"no send {send_id} (see 'newsletter logs')")
        if status == "cancelled":
            raise SendError(f"send {send_id} is cancelled")
        count = connection.execute(update(deliveries).where(condition).values(
            status="queued", batch_id=None, error_class=None, error_text=None, updated_at=utcnow())).rowcount
        if count and status == "sent":
            connection.execute(update(sends).where(sends.c.id == send_id).values(status="sending",
                                                                                finished_at=None))
    return int(count or 0)


def summary(store: Store, send_id: int) -> SendSummary:
    """The send's status and its rows counted by status, with the uncertain addresses."""
    with store.read() as connection:
        send = connection.execute(select(sends.c.status, sends.c.status_reason).where(sends.c.id == send_id)).one()
        counts = dict(connection.execute(
            select(deliveries.c.status, func.count()).where(deliveries.c.send_id == send_id)
            .group_by(deliveries.c.status)).all())
        uncertain = connection.scalars(
            select(deliveries.c.email).where(deliveries.c.send_id == send_id, deliveries.c.status == "uncertain")
            .order_by(deliveries.c.id)).all()
    return SendSummary(send_id=send_id, status=send.status, reason=send.status_reason or "",
                       counts={status: int(count) for status, count in counts.items()}, uncertain=tuple(uncertain))


def queued_count(store: Store, send_id: int) -> int:
    with store.read() as connection:
        return int(connection.scalar(select(func.count()).select_from(deliveries).where(
            deliveries.c.send_id == send_id, deliveries.c.status.in_(("queued", "sending")))) or 0)


# ---------------------------------------------------------------- test sends


async def send_test(settings: Settings, edition: Edition, addresses: list[str], *,
                    provider: Provider | None = None) -> list[Outcome]:
    """Send the edition to a few addresses, subject prefixed [TEST]; not recorded as the edition's send."""
    base = settings.publication.base_url
    return await send_direct(settings, label=f"test-{utcnow():%Y%m%dT%H%M%S}", subject=f"[TEST] {edition.subject}",
                             html=edition.email_html, text=edition.email_txt, addresses=addresses,
                             unsubscribe_url=f"{base}/u/test", view_url=f"{base}/archive/{edition.name}/",
                             provider=provider)


async def send_direct(settings: Settings, *, label: str, subject: str, html: str, text: str, addresses: list[str],
                      unsubscribe_url: str, view_url: str, provider: Provider | None = None) -> list[Outcome]:
    """One batch straight to the provider, outside the delivery log (test sends, staff notices)."""
    publication = settings.publication
    mail = Mail(label=label, subject=subject, html=html, text=text, sender=publication.from_,
                reply_to=publication.reply_to, list_id=messages.list_id(settings))
    recipients = tuple(
        messages.recipient(settings, label=label, delivery_id=number, email=address, name="",
                           unsubscribe_url=unsubscribe_url, view_url=view_url)
        for number, address in enumerate(addresses, start=1)
    )
    async with _provider(settings, provider) as chosen:
        return await chosen.send(Batch(id=uuid.uuid4().hex, mail=mail, recipients=recipients))


@asynccontextmanager
async def _provider(settings: Settings, given: Provider | None) -> AsyncIterator[Provider]:
    """The provider given, or one made from the settings and closed afterwards."""
    if given is not None:
        yield given
        return
    made = make_provider(settings)
    try:
        yield made
    finally:
        await made.aclose()


__all__ = ["Recipient", "SendSummary", "cancel_send", "create_send", "pause_send", "queued_count", "requeue",
           "run_send", "send_direct", "send_test", "summary"]
