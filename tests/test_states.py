"""The state machines of sending, as tables: every legal move, and nothing else, on a real store."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pipeline import send
from pipeline.config import Settings
from pipeline.errors import SendError
from pipeline.store import Store, utcnow
from pipeline.store import sends as db
from pipeline.store.states import (
    DELIVERY_TRANSITIONS,
    SEND_MOVES,
    SEND_TRANSITIONS,
    DeliveryStatus,
    SendStatus,
    send_moves_from,
)
from pipeline.store.tables import deliveries, sends

from .test_send import _audience, _edition, _many

S, D = SendStatus, DeliveryStatus

# from -> the statuses a send may move to. Written out by hand: a change to the table must change this too.
EXPECTED_SEND = {
    S.SCHEDULED: {S.SENDING, S.MISSED, S.SCHEDULED, S.CANCELLED},
    S.SENDING: {S.SENDING, S.PAUSED, S.SENT, S.FAILED, S.HELD, S.SCHEDULED, S.CANCELLED},
    S.PAUSED: {S.SENDING, S.CANCELLED},
    S.SENT: {S.PAUSED},
    S.FAILED: {S.SENDING, S.CANCELLED},
    S.HELD: {S.SCHEDULED, S.CANCELLED},
    S.MISSED: {S.SCHEDULED, S.CANCELLED},
    S.CANCELLED: set(),
}
EXPECTED_DELIVERY = {
    D.QUEUED: {D.SENDING, D.CANCELLED, D.SUPPRESSED},
    D.SENDING: {D.SENT, D.FAILED, D.UNCERTAIN, D.QUEUED},
    D.SENT: set(),
    D.FAILED: {D.QUEUED},
    D.UNCERTAIN: {D.QUEUED, D.SENT},
    D.SUPPRESSED: set(),
    D.SKIPPED: set(),
    D.CANCELLED: set(),
}


@pytest.mark.parametrize("source", list(SendStatus))
@pytest.mark.parametrize("target", list(SendStatus))
def test_the_send_table(source: SendStatus, target: SendStatus) -> None:
    assert (target in SEND_TRANSITIONS[source]) == (target in EXPECTED_SEND[source])


@pytest.mark.parametrize("source", list(DeliveryStatus))
@pytest.mark.parametrize("target", list(DeliveryStatus))
def test_the_delivery_table(source: DeliveryStatus, target: DeliveryStatus) -> None:
    assert (target in DELIVERY_TRANSITIONS[source]) == (target in EXPECTED_DELIVERY[source])


def test_a_cancelled_send_has_no_move_and_a_sent_one_only_reopens() -> None:
    assert send_moves_from(S.CANCELLED) == ()
    assert send_moves_from(S.SENT) == ("reopen",)


def _send_in(store: Store, settings: Settings, project: Path, status: SendStatus) -> int:
    """A send of three readers, forced into ``status`` (as the moves would have left it)."""
    _audience(store, project, _many(3))
    send_id = send.create_send(store, settings, _edition(project, settings).edition, built_path="build")
    with store.begin() as connection:
        connection.execute(update(sends).where(sends.c.id == send_id).values(
            status=status, scheduled_at=utcnow() + dt.timedelta(hours=1), status_reason="why"))
    return send_id


@pytest.mark.parametrize("status", list(SendStatus))
@pytest.mark.parametrize("name", ["pause", "cancel"])
def test_operator_moves_follow_the_table(project: Path, settings: Settings, store: Store, status: SendStatus,
                                         name: str) -> None:
    send_id = _send_in(store, settings, project, status)
    if status in SEND_MOVES[name].sources:
        assert db.operator_move(store, send_id, name, "by hand").status == SEND_MOVES[name].target
    else:
        with pytest.raises(SendError, match=f"send {send_id} is {status}, so it cannot be"):
            db.operator_move(store, send_id, name, "by hand")
        assert db.send_record(store, send_id).status == status


@pytest.mark.parametrize("status", [S.SCHEDULED, S.HELD, S.MISSED, S.SENT, S.CANCELLED])
def test_resume_refuses_what_it_cannot_send_and_changes_nothing(project: Path, settings: Settings, store: Store,
                                                                status: SendStatus) -> None:
    send_id = _send_in(store, settings, project, status)
    with pytest.raises(SendError, match=f"send {send_id} is {status}, so it cannot be resumed: "):
        asyncio.run(send.run_send(store, settings, send_id))
    record = db.send_record(store, send_id)
    assert record.status == status and record.runner is None
    assert send.summary(store, send_id).counts == {"queued": 3}


@pytest.mark.parametrize("status", [S.SCHEDULED, S.HELD, S.MISSED])
def test_resume_of_a_send_that_has_not_gone_out_is_exit_2_with_what_to_do(project: Path, settings: Settings,
                                                                          store: Store, run_cli,
                                                                          status: SendStatus) -> None:
    send_id = _send_in(store, settings, project, status)
    code, out, err = run_cli("send", "--resume", str(send_id))
    assert code == 2 and out == ""
    assert f"send {send_id} is {status}, so it cannot be resumed" in err and "schedule move" in err
    assert err.count("\n") == 1
    assert db.send_record(store, send_id).status == status


def test_a_held_or_missed_send_can_be_scheduled_again(project: Path, settings: Settings, store: Store,
                                                      run_cli) -> None:
    send_id = _send_in(store, settings, project, S.MISSED)
    code, out, _ = run_cli("schedule", "move", str(send_id), "--at", "2030-06-02 10:00")
    assert code == 0 and db.send_record(store, send_id).status == S.SCHEDULED


class _Refusing:
    name = "refusing"
    idempotent = False
    smtputf8 = False
    max_batch = 100

    async def send(self, batch):
        from pipeline.mail import Outcome

        return [Outcome(delivery_id=p.delivery_id, status="failed", error_class="permanent", error_text="no")
                for p in batch.recipients]

    async def aclose(self) -> None:
        pass


def test_a_send_whose_rows_all_failed_is_failed_not_sent(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(3))
    send_id = send.create_send(store, settings, _edition(project, settings).edition, built_path="build")
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=_Refusing()))  # type: ignore[arg-type]
    assert summary.status == S.FAILED and summary.counts == {"failed": 3}
    assert "nobody was sent it" in summary.reason


def test_a_send_that_fired_but_never_queued_is_fired_again_not_finished(project: Path, settings: Settings,
                                                                        store: Store) -> None:
    build = _edition(project, settings)
    _audience(store, project, _many(2))
    send_id = send.schedule_send(store, settings, build.edition, built_path=str(build.folder),
                                 at=utcnow() + dt.timedelta(minutes=1), timezone="UTC")
    assert db.claim_scheduled(store, send_id, "elsewhere:1:dead", lease_seconds=30)  # ... and then it died
    with pytest.raises(SendError, match="before it queued the audience"):
        asyncio.run(send.run_send(store, settings, send_id))
    assert not db.refire_abandoned(store, send_id), "its lease still runs: it may be alive"
    with store.begin() as connection:
        connection.execute(update(sends).values(lease_until=utcnow() - dt.timedelta(seconds=1)))
    assert db.refire_abandoned(store, send_id)
    assert db.send_record(store, send_id).status == S.SCHEDULED
    with store.read() as connection:
        assert connection.scalar(select(deliveries.c.id)) is None
