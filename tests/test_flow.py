"""Flow control of a send: batches in flight, the persisted token bucket, batch-wide provider errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline import providers, send
from pipeline.errors import ProviderAmbiguous, ProviderAuthError, ProviderUnavailable, SendError
from pipeline.mail import Batch, Outcome
from pipeline.providers.http import make_client
from pipeline.send.ratelimit import TokenBucket
from pipeline.store import Store

from .conftest import sender_died
from .test_send import _audience, _edition, _many, _start


def _with(settings, **provider):
    return settings.model_copy(update={"provider": settings.provider.model_copy(update=provider)})


class Recording:
    """A provider at the unit's edge: records batches, can fail some, tracks how many are in flight."""

    name: ClassVar[str] = "recording"
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int] = 5

    def __init__(self, fail_with: BaseException | None = None, fail_batches: set[int] | None = None,
                 gather: int = 0):
        self.batches: list[Batch] = []
        self.gather = gather  # hold each batch (up to 2 s) until this many are in flight: a slow provider
        self.in_flight = self.most_in_flight = 0
        self.fail_with, self.fail_batches = fail_with, fail_batches

    async def send(self, batch: Batch) -> list[Outcome]:
        number = len(self.batches)
        self.batches.append(batch)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        for _ in range(400):
            if self.in_flight >= self.gather:
                break
            await asyncio.sleep(0.005)
        self.in_flight -= 1
        if self.fail_with is not None and (self.fail_batches is None or number in self.fail_batches):
            raise self.fail_with
        return [Outcome(delivery_id=p.delivery_id, status="sent", provider_message_id=f"x{p.delivery_id}")
                for p in batch.recipients]

    async def aclose(self) -> None:
        pass


def test_batches_in_flight_never_exceed_concurrency(project: Path, settings, store: Store) -> None:
    _audience(store, project, _many(60))
    send_id = _start(store, settings, _edition(project, settings))
    provider = Recording(gather=3)
    summary = asyncio.run(send.run_send(store, _with(settings, concurrency=3), send_id, provider=provider))
    assert summary.counts == {"sent": 60}
    assert provider.most_in_flight == 3
    assert all(len(batch.recipients) <= 5 for batch in provider.batches)


@pytest.mark.parametrize(("name", "expected"), [("postmark", 8), ("outbox", 4)])
def test_concurrency_unset_is_what_suits_the_provider(project: Path, settings, store: Store, name: str,
                                                       expected: int) -> None:
    _audience(store, project, _many(60))
    settings = _with(settings, name=name, concurrency=None)
    send_id = _start(store, settings, _edition(project, settings))
    provider = Recording(gather=expected)
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=provider))
    assert summary.counts == {"sent": 60}
    assert provider.most_in_flight == expected == providers.concurrency(settings)
    assert providers.concurrency(_with(settings, concurrency=2)) == 2  # set, it is what it says
    assert make_client(_with(settings, name="postmark"))._transport._pool._max_connections == 8  # type: ignore


def test_refused_credentials_stop_the_send_and_mark_nothing_sent(project: Path, settings, store: Store) -> None:
    _audience(store, project, _many(20))
    send_id = _start(store, settings, _edition(project, settings))
    provider = Recording(fail_with=ProviderAuthError("401 from the provider: check $POSTMARK_SERVER_TOKEN"))
    summary = asyncio.run(send.run_send(store, _with(settings, concurrency=1), send_id, provider=provider))
    assert summary.status == "failed" and "refused the credentials" in summary.reason
    assert summary.counts == {"queued": 20}
    assert len(provider.batches) == 1


def test_consecutive_failed_batches_pause_the_send(project: Path, settings, store: Store) -> None:
    _audience(store, project, _many(40))
    send_id = _start(store, settings, _edition(project, settings))
    provider = Recording(fail_with=ProviderUnavailable("503 after 5 retries"))
    summary = asyncio.run(send.run_send(store, _with(settings, concurrency=1, pause_after_failures=3), send_id,
                                        provider=provider))
    assert summary.status == "paused" and "after 3 failed batches in a row" in summary.reason
    assert summary.counts == {"failed": 15, "queued": 25}
    assert send.retry_failed(store, send_id) == 15


def test_an_ambiguous_batch_is_uncertain_the_rest_sent(project: Path, settings, store: Store) -> None:
    _audience(store, project, _many(15))
    send_id = _start(store, settings, _edition(project, settings))
    provider = Recording(fail_with=ProviderAmbiguous("no answer within 30 s"), fail_batches={1})
    summary = asyncio.run(send.run_send(store, _with(settings, concurrency=1), send_id, provider=provider))
    assert summary.counts == {"sent": 10, "uncertain": 5} and summary.status == "sent"
    assert len(summary.uncertain) == 5


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
        self.slept: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += dt.timedelta(seconds=seconds)


def test_token_bucket_paces_and_survives_a_restart(store: Store) -> None:
    clock = Clock()
    bucket = TokenBucket(store, "postmark", 100, sleep=clock.sleep, clock=clock)
    waits = [asyncio.run(bucket.take(50)) for _ in range(4)]
    assert waits == [0.0, 0.0, pytest.approx(0.5), pytest.approx(0.5)]  # 100 at once, then 100 a second
    # A new sender (a restart) right after: the debt is remembered, no burst.
    restarted = TokenBucket(store, "postmark", 100, sleep=clock.sleep, clock=clock)
    assert asyncio.run(restarted.take(100)) == pytest.approx(1.0)
    clock.now += dt.timedelta(hours=1)  # a long pause refills only one second's worth
    assert asyncio.run(restarted.take(100)) == 0.0
    assert asyncio.run(restarted.take(100)) == pytest.approx(1.0)


def test_no_rate_means_no_waiting(store: Store) -> None:
    assert asyncio.run(TokenBucket(store, "outbox", 0).take(10_000)) == 0.0


class _Crash(BaseException):
    """The process dying mid-batch."""


class Idempotent(Recording):
    idempotent: ClassVar[bool] = True


def test_an_idempotent_providers_batch_in_flight_is_handed_over_again_unchanged(project: Path, settings,
                                                                                store: Store) -> None:
    _audience(store, project, _many(12))
    send_id = _start(store, settings, _edition(project, settings))
    settings = _with(settings, concurrency=1)
    crashing = Idempotent(fail_with=_Crash(), fail_batches={1})
    with pytest.raises(_Crash):
        asyncio.run(send.run_send(store, settings, send_id, provider=crashing))
    lost = crashing.batches[1]
    sender_died(store, send_id)
    survivor = Idempotent()
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=survivor))
    assert summary.counts == {"sent": 12} and not summary.uncertain
    again = survivor.batches[0]
    assert again.id == lost.id  # the same idempotency key ...
    assert [p.delivery_id for p in again.recipients] == [p.delivery_id for p in lost.recipients]  # ... same rows
    assert [p.values for p in again.recipients] == [p.values for p in lost.recipients]


def test_resuming_with_another_provider_is_refused(project: Path, settings, store: Store) -> None:
    _audience(store, project, _many(2))
    send_id = _start(store, settings, _edition(project, settings))
    with pytest.raises(SendError, match="was started with the outbox provider"):
        asyncio.run(send.run_send(store, _with(settings, name="resend"), send_id, provider=Recording()))
