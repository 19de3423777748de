"""Run a send: claim batches of its queued rows and keep them in flight with the provider, under a lease.

    acquire the lease ─▶ claim a batch (sending) ─▶ provider ─▶ settle (sent | failed | uncertain) ─▶ … ─▶ release

The rules that make a send exactly-once across crashes:

- Every audience member got a row when the send was created; nobody is ever
  skipped without a status (``suppressed`` and ``skipped`` rows say why).
- A batch is claimed in a transaction (status ``sending``, a batch id,
  attempts + 1) before it is handed to the provider, and its outcomes are
  settled in another: a row moves forward only.
- The send is owned by one sender's lease (``lease.py``), renewed on a timer
  while it lives; every claim and every outcome write checks it. A sender
  takes a send over only once the lease has expired.
- A claim or an outcome write that meets a database outage (a restart, a
  lost connection) is tried again, with backoff, for up to a lease: both are
  safe to repeat (a claim under the same batch id returns that batch; a
  settle moves only rows still in flight). Only then does the sender give up,
  leaving the rows in flight to the rule below.
- Rows found ``sending`` by a sender taking a send over were in flight when
  their sender stopped: they are handed over again — as the same batch, under
  the same id, so the provider recognises its idempotency key — only if the
  provider honours one; otherwise they become ``uncertain`` and are listed for
  the operator, who decides with ``--resend-uncertain``. Nobody is ever sent
  twice by the pipeline.
- A send handed to the workers (PostgreSQL) is cut into parts, ranges of its
  rows; a worker's job sends one part (``run_part``) under a lease on that
  part, by the same rules. Whichever job settles the send's last row ends
  the send, once (``store.sends.finish_if_settled``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from pipeline import messages, providers, urls
from pipeline.config import Settings
from pipeline.errors import (
    ProviderAmbiguous,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    StoreUnavailable,
)
from pipeline.mail import Batch, Mail, Outcome
from pipeline.providers import make_provider
from pipeline.providers.base import Provider
from pipeline.send.lease import Lease
from pipeline.send.ratelimit import TokenBucket
from pipeline.store import Store, utcnow
from pipeline.store import parts as part_store
from pipeline.store import sends as db
from pipeline.store.parts import Part
from pipeline.store.states import DeliveryStatus, SendStatus

log = logging.getLogger("newsletter.send")
ProgressHook = Callable[[int], object]
_T = TypeVar("_T")
StopCheck = Callable[[], bool]


async def run_send(store: Store, settings: Settings, send_id: int, *, provider: Provider | None = None,
                   on_progress: ProgressHook | None = None, should_stop: StopCheck = lambda: False,
                   lease: Lease | None = None) -> db.SendSummary:
    """Send every queued row of ``send_id`` until none is left, or it is paused, cancelled or stopped.

    With ``lease`` (already held: the send was just created or fired by its
    owner) the send is continued under it; otherwise the send is acquired (see
    ``store.sends.acquire``). Up to ``[provider] concurrency`` batches are in
    flight at once, paced by the token bucket of ``rate_per_second``.
    ``should_stop`` is asked before each batch is claimed: a stopping sender
    takes no new work and finishes what is in flight.
    """
    async with provider_for(settings, provider) as chosen:
        if lease is None:
            lease = Lease(store, send_id, seconds=settings.send.lease_seconds)
            record = db.acquire(store, send_id, lease.owner, lease_seconds=lease.seconds,
                                provider=settings.provider.name, idempotent=chosen.idempotent)
        else:
            record = db.send_record(store, send_id)
        lease.keep()
        try:
            await _Pump(store, settings, lease, record, chosen, on_progress).run(should_stop)
        finally:
            lease.stop()
            db.release(store, send_id, lease.owner)
    return db.summary(store, send_id)


@dataclass(frozen=True, kw_only=True)
class PartDone:
    """How a job left its part: the status it ended the send with, if it was the one (None otherwise);
    whether its pump stopped the send itself (paused after failed batches, refused credentials); and the
    part's rows still to send (a stopping worker leaves them to the next job)."""

    finished: SendStatus | None
    stopped: bool
    left: int


async def run_part(store: Store, settings: Settings, part: Part, *, provider: Provider | None = None,
                   should_stop: StopCheck = lambda: False) -> PartDone:
    """Send the queued rows of one part of a send handed to the workers, under a lease on the part; then end
    the send if its last row is settled. A part another sender holds is waited for until its lease expires
    (its sender died, or is finishing the batch in flight after a pause)."""
    async with provider_for(settings, provider) as chosen:
        lease = Lease(store, part.send_id, seconds=settings.send.lease_seconds, part=part)
        stopped = False
        if await _acquire_part(store, lease, chosen.idempotent, should_stop):
            record = await asyncio.to_thread(db.send_record, store, part.send_id)
            lease.keep()
            pump = _Pump(store, settings, lease, record, chosen, None)
            try:
                await pump.run(should_stop)
            finally:
                lease.stop()
                await asyncio.to_thread(part_store.release, store, part, lease.owner)
            stopped = pump.stopped
    finished = await asyncio.to_thread(db.finish_if_settled, store, part.send_id)
    left = await asyncio.to_thread(part_store.rows_to_send, store, part)
    return PartDone(finished=finished, stopped=stopped, left=left)


async def _acquire_part(store: Store, lease: Lease, idempotent: bool, should_stop: StopCheck) -> bool:
    """Take the part's lease, waiting while another sender's runs; False if the send stopped being
    ``sending`` (paused, cancelled) or this worker is stopping first."""
    assert lease.part is not None
    while not should_stop():
        record = await asyncio.to_thread(db.send_record, store, lease.send_id)
        if record.status != SendStatus.SENDING:
            return False
        held = await asyncio.to_thread(part_store.acquire, store, lease.part, lease.owner,
                                       lease_seconds=lease.seconds, idempotent=idempotent)
        if held is None:
            return True
        log.info("send %s: part %s is held by %s until %s; waiting", lease.send_id, lease.part.number,
                 held.runner, f"{held.until:%H:%M:%S}")
        await asyncio.sleep(min(max((held.until - utcnow()).total_seconds(), 0.1), lease.seconds))
    return False


class _Pump:
    """Claims batches and keeps up to ``concurrency`` of them in flight with the provider."""

    def __init__(self, store: Store, settings: Settings, lease: Lease, record: db.SendRecord, provider: Provider,
                 on_progress: ProgressHook | None):
        self.store, self.settings, self.lease = store, settings, lease
        self.send_id = lease.send_id
        self.provider, self.on_progress = provider, on_progress
        self.batch_size = min(settings.provider.batch_size or provider.max_batch, provider.max_batch)
        self.concurrency = providers.concurrency(settings)
        self.record = record
        name, subject, html, text = db.sent_parts(store, self.send_id)
        publication = settings.publication
        self.mail = Mail(label=str(self.send_id), subject=subject, html=html, text=text, sender=publication.from_,
                         reply_to=publication.reply_to,
                         list_headers=messages.list_headers(settings, label=str(self.send_id), edition=name))
        self.view_url = urls.edition(settings, name)
        self.failures_in_a_row = 0
        self.stopped = False
        # One thread does this sender's database work, in the order it was asked for: the event loop only
        # moves bytes, and SQLite sees one writer per process.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"send-{self.send_id}-db")
        self.bucket = TokenBucket(store, provider.name, settings.provider.rate_per_second,
                                  run=functools.partial(self._durable, "taking from the rate limit"))

    async def _call(self, function: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._db, functools.partial(function, *args,
                                                                                            **kwargs))

    async def _durable(self, what: str, function: Callable[..., _T], *args: object, **kwargs: object) -> _T:
        """``function`` on the database thread, tried again through an outage for up to a lease: only for
        operations that are safe to repeat. Gives up with the last ``StoreUnavailable``."""
        def warn(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("send %s: %s: %s; trying again in %.1f s", self.send_id, what, error, wait)

        retrying = AsyncRetrying(retry=retry_if_exception_type(StoreUnavailable), reraise=True,
                                 stop=stop_after_delay(self.lease.seconds), before_sleep=warn,
                                 wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2))
        return await retrying(self._call, function, *args, **kwargs)

    async def run(self, should_stop: StopCheck) -> None:
        try:
            await self._run(should_stop)
        finally:
            self._db.shutdown(wait=True)  # a transaction under way is finished, never left half-done

    async def _run(self, should_stop: StopCheck) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        orphans = await self._durable("reading the batches left in flight", db.orphaned_batches, self.store,
                                      self.send_id, self.lease.part)
        done: set[asyncio.Task[None]] = set()
        try:
            while not self.stopped and not self.lease.lost.is_set() and not should_stop():
                if len(in_flight) >= self.concurrency:
                    finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    done |= finished
                    if any(task.exception() for task in finished):
                        break  # a batch that could not be recorded stops the send
                    continue
                # Wait for the rate limit before claiming, not after: rows claimed and then kept waiting
                # would be in flight, and uncertain, if the sender died during the wait.
                await self.bucket.take(self.batch_size)
                claimed = await self._next(orphans)
                await self.bucket.give_back(self.batch_size - (len(claimed.rows) if claimed else 0))
                if claimed is None:
                    break
                in_flight.add(asyncio.create_task(self._deliver(claimed)))
        finally:
            if in_flight:  # finish what is in flight, whatever stopped the loop
                await asyncio.wait(in_flight)
            done |= in_flight
        # Every batch's end is looked at (no task exception goes unretrieved); the first failure is raised.
        failures = [error for task in done if (error := task.exception()) is not None]
        if failures:
            raise failures[0]

    async def _next(self, orphans: list[str]) -> db.Claimed | None:
        owner, seconds = self.lease.owner, self.lease.seconds
        while orphans:
            batch_id = orphans.pop(0)
            claimed = await self._durable(f"taking over batch {batch_id}", db.reclaim_batch, self.store,
                                          self.send_id, owner, batch_id, lease_seconds=seconds, part=self.lease.part)
            if claimed is not None:
                return claimed
        return await self._durable("claiming a batch", db.claim_batch, self.store, self.send_id, owner,
                                   self.batch_size, lease_seconds=seconds, batch_id=uuid.uuid4().hex,
                                   part=self.lease.part)

    def _batch(self, claimed: db.Claimed) -> Batch:
        settings = self.settings
        recipients = tuple(
            messages.recipient(settings, label=self.mail.label, delivery_id=row.delivery_id, email=row.email,
                               name=row.name, nonce=self.record.nonce, view_url=self.view_url,
                               unsubscribe_url=urls.unsubscribe(settings, messages.unsubscribe_token(
                                   settings, row.subscriber_id, self.send_id)))
            for row in claimed.rows
        )
        return Batch(id=claimed.batch_id, mail=self.mail, recipients=recipients)

    async def _deliver(self, claimed: db.Claimed) -> None:
        batch = self._batch(claimed)
        outcomes, error = await hand_over(self.provider, batch)
        emails = {row.delivery_id: row.email for row in claimed.rows}  # as stored: the suppression's key
        settled = [db.Settled(delivery_id=outcome.delivery_id, status=DeliveryStatus(outcome.status),
                              provider_message_id=outcome.provider_message_id, error_class=outcome.error_class,
                              error_text=outcome.error_text, suppress=outcome.suppress,
                              email=emails.get(outcome.delivery_id, "")) for outcome in outcomes]
        if not await self._durable(f"recording batch {batch.id}", db.settle, self.store, self.send_id,
                                   self.lease.owner, batch.id, settled, lease_seconds=self.lease.seconds,
                                   part=self.lease.part):
            self.lease.lost.set()
            log.error("send %s: the lease was lost with batch %s in flight; its %d outcome(s) are not recorded "
                      "(the sender that took the send over settles those rows)", self.send_id, batch.id,
                      len(settled))
            return
        if self.on_progress is not None:
            self.on_progress(len(batch.recipients))
        self._judge(outcomes, error)

    def _judge(self, outcomes: list[Outcome], error: ProviderError | None) -> None:
        """Stop the send on refused credentials; pause it after too many failed batches in a row."""
        if isinstance(error, ProviderAuthError):
            self._stop("fail", f"the provider refused the credentials: {error}")
        elif error is not None or (outcomes and all(o.status != "sent" for o in outcomes)):
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.settings.provider.pause_after_failures:
                self._stop("pause", f"paused after {self.failures_in_a_row} failed batches in a row; last: "
                                    f"{error or outcomes[-1].error_text}")
        else:
            self.failures_in_a_row = 0

    def _stop(self, move: str, reason: str) -> None:
        self.stopped = True
        db.move(self.store, self.send_id, move, reason)


async def hand_over(provider: Provider, batch: Batch) -> tuple[list[Outcome], ProviderError | None]:
    """The provider's outcomes, and the error that failed the whole batch if one did.

    A recipient the provider cannot take at all — an address whose local part is
    not ASCII, for a provider without SMTPUTF8 — fails on its own, permanently,
    and is not handed over. What each batch-wide error means for its rows (the
    exactly-once rules): refused credentials: nothing was accepted, so the rows
    go back to the queue; unavailable: nothing was accepted, a transient failure;
    rejected as invalid: permanent failure; no answer after sending (ambiguous):
    ``uncertain``.
    """
    refused = [] if provider.smtputf8 else [person for person in batch.recipients if person.needs_smtputf8]
    if refused:
        batch = replace(batch, recipients=tuple(person for person in batch.recipients if not person.needs_smtputf8))
    unsendable = [Outcome(delivery_id=person.delivery_id, status="failed", error_class="permanent",
                          error_text=f"{provider.name} cannot send to an address whose local part is not ASCII "
                                     "(it would need SMTPUTF8)") for person in refused]
    if not batch.recipients:
        return unsendable, None
    outcomes, error = await _hand_over(provider, batch)
    return outcomes + unsendable, error


async def _hand_over(provider: Provider, batch: Batch) -> tuple[list[Outcome], ProviderError | None]:
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


@asynccontextmanager
async def provider_for(settings: Settings, given: Provider | None) -> AsyncIterator[Provider]:
    """The provider given, or one made from the settings and closed afterwards."""
    if given is not None:
        yield given
        return
    made = make_provider(settings)
    try:
        yield made
    finally:
        await made.aclose()
