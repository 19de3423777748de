"""A database outage in the middle of a send: waited out when short, given up cleanly when not.

The database is a real PostgreSQL server, stopped and started again while a batch is with the provider (a
provider at the unit's edge, which says when it has been handed each batch). Also: the event loop keeps
running while the database holds a sender's write back (SQLite locked by another connection).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import text

from pipeline import send
from pipeline.errors import StoreUnavailable
from pipeline.mail import Batch, Outcome
from pipeline.store import Store
from pipeline.store import sends as db

from .test_flow import _with
from .test_send import _audience, _edition, _many, _rows, _start


class Handing:
    """Answers every batch as sent; before answering batch ``at`` (counted from 1) it runs ``during``."""

    name: ClassVar[str] = "handing"
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int] = 10

    def __init__(self, at: int, during):
        self.at, self.during, self.count = at, during, 0

    async def send(self, batch: Batch) -> list[Outcome]:
        self.count += 1
        if self.count == self.at:
            await asyncio.to_thread(self.during)
        return [Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=f"m-{person.delivery_id}")
                for person in batch.recipients]

    async def aclose(self) -> None:
        pass


@pytest.fixture
def unretrieved(caplog: pytest.LogCaptureFixture):
    """The asyncio log lines about task exceptions nobody looked at, after the test's event loop is gone."""
    caplog.set_level(logging.ERROR, logger="asyncio")

    def lines() -> list[str]:
        gc.collect()
        return [record.getMessage() for record in caplog.records if "never retrieved" in record.getMessage()]
    return lines


@pytest.mark.postgresql
def test_a_short_outage_while_a_batch_is_out_is_waited_out(project: Path, settings, store: Store, pg_cluster,
                                                           unretrieved) -> None:
    _audience(store, project, _many(50))
    send_id = _start(store, settings, _edition(project, settings))

    def outage() -> None:  # the server goes away while batch 2 is with the provider, and is back 2 s later
        pg_cluster.down()
        threading.Timer(2.0, pg_cluster.up).start()

    provider = Handing(at=2, during=outage)
    summary = asyncio.run(send.run_send(store, _with(settings, batch_size=10, concurrency=1), send_id,
                                        provider=provider))
    assert summary.counts == {"sent": 50}  # batch 2's outcomes were recorded once the server was back
    assert provider.count == 5  # and nobody was handed over twice
    assert _rows(store, send_id) == {"sent": 50}
    assert unretrieved() == []


@pytest.mark.postgresql
def test_an_outage_longer_than_a_lease_stops_the_send_and_its_batch_becomes_uncertain(
        project: Path, settings, store: Store, pg_cluster, unretrieved) -> None:
    _audience(store, project, _many(30))
    send_id = _start(store, settings, _edition(project, settings))
    settings = _with(settings, batch_size=10, concurrency=1).model_copy(
        update={"send": settings.send.model_copy(update={"lease_seconds": 2.0})})
    back = threading.Event()

    def recover() -> None:
        pg_cluster.up()
        back.set()

    def outage() -> None:  # down for longer than the sender tries (a lease, 2 s)
        pg_cluster.down()
        threading.Timer(5.0, recover).start()

    try:
        with pytest.raises(StoreUnavailable, match="database unavailable"):
            asyncio.run(send.run_send(store, settings, send_id, provider=Handing(at=2, during=outage)))
    finally:
        back.wait(60)
    assert unretrieved() == []
    # Batch 2 was accepted by the provider but never recorded: it is in flight, and a resume (once the lease
    # has run out) lists it uncertain rather than sending it again.
    assert _rows(store, send_id) == {"sent": 10, "sending": 10, "queued": 10}
    time.sleep(2.1)
    provider = Handing(at=0, during=None)
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=provider))
    assert summary.counts == {"sent": 20, "uncertain": 10}
    assert provider.count == 1


def test_claiming_again_under_the_same_batch_id_returns_that_batch(project: Path, settings, store: Store) -> None:
    """The retry of a claim whose commit went unacknowledged: the rows it took, not a second batch."""
    _audience(store, project, _many(12))
    send_id = _start(store, settings, _edition(project, settings))
    runner = "test-sender"
    db.acquire(store, send_id, runner, lease_seconds=30, provider=settings.provider.name, idempotent=False)
    first = db.claim_batch(store, send_id, runner, 5, lease_seconds=30, batch_id="b" * 32)
    again = db.claim_batch(store, send_id, runner, 5, lease_seconds=30, batch_id="b" * 32)
    assert first is not None and again is not None
    assert [row.delivery_id for row in again.rows] == [row.delivery_id for row in first.rows]
    assert _rows(store, send_id) == {"sending": 5, "queued": 7}


def test_the_event_loop_runs_while_the_database_holds_a_write_back(project: Path, settings, store: Store,
                                                                   database: str) -> None:
    """Another connection holds the database's write lock for a moment just as a batch's outcomes are to be
    written: the sender's loop keeps turning (a ticker task counts) while its database thread waits."""
    _audience(store, project, _many(20))
    send_id = _start(store, settings, _edition(project, settings))
    ticks = 0
    seen: dict[str, int] = {}
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.begin() as connection:
            if database == "sqlite":
                connection.execute(text("UPDATE sends SET status_reason = status_reason WHERE id = :id"),
                                   {"id": send_id})  # BEGIN IMMEDIATE already holds the write lock
            else:
                connection.execute(text("SELECT 1 FROM sends WHERE id = :id FOR UPDATE"), {"id": send_id})
            held.set()
            release.wait(10)

    def during() -> None:
        threading.Thread(target=hold, daemon=True).start()
        held.wait(10)

    async def main() -> None:
        nonlocal ticks

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())

        def let_go() -> None:
            held.wait(10)
            seen["before"] = ticks
            time.sleep(0.5)
            seen["after"] = ticks
            release.set()

        loop = asyncio.get_running_loop()
        letting = loop.run_in_executor(None, let_go)
        await send.run_send(store, _with(settings, batch_size=10, concurrency=1), send_id,
                            provider=Handing(at=1, during=during))
        await letting
        ticking.cancel()

    # The lock is taken while batch 1 is out, and let go half a second later.
    asyncio.run(main())
    assert _rows(store, send_id) == {"sent": 20}
    assert seen["after"] - seen["before"] >= 10  # the loop ticked while the write waited on the lock
