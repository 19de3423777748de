"""A send is owned by a lease renewed while its sender lives: a live sender is never taken over."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import ClassVar

import pytest
from sqlalchemy import func, select

from pipeline import send
from pipeline.config import Settings
from pipeline.emulator import run_emulator_in_thread
from pipeline.errors import SendBusy
from pipeline.mail import Batch, Outcome
from pipeline.store import Store, utcnow
from pipeline.store import sends as db
from pipeline.store.tables import deliveries, sends

from .conftest import SAMPLE, SECRET
from .test_schedule import _schedule_in, _stop, _wait_for
from .test_send import _audience, _edition, _many, _start


class Slow:
    """A provider at the unit's edge that takes ``seconds`` over each batch (a slow API)."""

    name: ClassVar[str] = "slow"
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int] = 100

    def __init__(self, seconds: float):
        self.seconds = seconds

    async def send(self, batch: Batch) -> list[Outcome]:
        await asyncio.sleep(self.seconds)
        return [Outcome(delivery_id=person.delivery_id, status="sent") for person in batch.recipients]

    async def aclose(self) -> None:
        pass


def _lease(settings: Settings, seconds: float) -> Settings:
    return settings.model_copy(update={"send": settings.send.model_copy(update={"lease_seconds": seconds})})


def test_a_sender_in_a_slow_call_keeps_its_lease_and_nobody_takes_over(project: Path, settings: Settings,
                                                                       store: Store) -> None:
    settings = _lease(settings, 0.6)
    _audience(store, project, _many(3))
    send_id = _start(store, settings, _edition(project, settings))
    attempts: list[BaseException | None] = []

    async def both() -> send.SendSummary:
        sending = asyncio.create_task(send.run_send(store, settings, send_id, provider=Slow(3.0)))  # 5 leases
        for _ in range(5):
            await asyncio.sleep(0.5)
            try:  # another sender, again and again, while the first waits on its provider
                await asyncio.to_thread(db.acquire, store, send_id, "elsewhere:2:other", lease_seconds=0.6,
                                        provider="outbox", idempotent=False)
                attempts.append(None)
            except SendBusy as exc:
                attempts.append(exc)
        return await sending

    summary = asyncio.run(both())
    assert all(isinstance(attempt, SendBusy) for attempt in attempts), attempts
    assert summary.counts == {"sent": 3} and summary.status == "sent"


def test_a_lost_lease_stops_the_sender_and_writes_nothing(project: Path, settings: Settings, store: Store) -> None:
    settings = _lease(settings, 30)
    _audience(store, project, _many(4))
    send_id = _start(store, settings, _edition(project, settings))
    settings = settings.model_copy(update={"provider": settings.provider.model_copy(update={"batch_size": 2,
                                                                                            "concurrency": 1})})

    class TakenOver(Slow):
        async def send(self, batch: Batch) -> list[Outcome]:
            with store.begin() as connection:  # meanwhile, the send was taken from this sender
                connection.execute(sends.update().values(runner="elsewhere:3:new",
                                                         lease_until=utcnow() + dt.timedelta(minutes=1)))
            return await super().send(batch)

    summary = asyncio.run(send.run_send(store, settings, send_id, provider=TakenOver(0)))
    assert summary.counts == {"sending": 2, "queued": 2}  # its outcomes were not written, no new batch claimed
    assert db.send_record(store, send_id).runner == "elsewhere:3:new"


# ---------------------------------------------------------------- real runners, a real emulator


def _postmark_through(project: Path, url: str, *, rate: float, lease: float) -> None:
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8").replace(
        '[provider]\nname = "outbox"',
        f'[provider]\nname = "postmark"\nbase_url = "{url}"\napi_key_env = "POSTMARK_SERVER_TOKEN"\n'
        f"batch_size = 20\nrate_per_second = {rate}")
    path.write_text(text + f"\n[send]\nlease_seconds = {lease}\n", encoding="utf-8")


@pytest.mark.timeout(180)
def test_runners_never_take_over_a_send_waiting_on_its_rate_limit(project: Path, settings: Settings,
                                                                   store: Store) -> None:
    """40 readers in batches of 20 at 3 messages a second: each batch waits about seven seconds for the rate
    limit, seven times the lease. Two runners watch the send; neither takes it from the other."""
    lease = 1.0
    with run_emulator_in_thread() as emulator:
        _postmark_through(project, emulator.url, rate=3, lease=lease)
        from pipeline.config import load_settings

        settings = load_settings(project / "newsletter.toml")
        _audience(store, project, _many(40))
        env = {**os.environ, "NEWSLETTER_SECRET": SECRET, "POSTMARK_SERVER_TOKEN": "emulator-key"}
        runners = [subprocess.Popen([sys.executable, "-m", "pipeline", "run"], cwd=project, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        try:
            started = time.monotonic()
            _schedule_in(project, settings, store, 1)
            _wait_for(lambda: db.send_record(store, 1).status == "sent", timeout=120)
            waited = time.monotonic() - started
        finally:
            logs = [_stop(runner) for runner in runners]
        received = Counter(message["to"] for message in emulator.messages(provider="postmark")
                           if "desk@example.org" not in message["to"])
    assert waited > 4 * lease, "the rate limit did not make the sender wait: nothing was tested"
    assert len(received) == 40 and set(received.values()) == {1}, received
    with store.read() as connection:
        rows: dict[str, int] = dict(connection.execute(
            select(deliveries.c.status, func.count()).group_by(deliveries.c.status)).all())
        attempts = set(connection.scalars(select(deliveries.c.attempts)))
    assert rows == {"sent": 40} and attempts == {1}, logs
    assert not any("is being sent by" in log or "lease is lost" in log for log in logs), logs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheduled", [1, 5])  # signalled after that many drafts were scheduled, more to come
def test_sigterm_while_dropped_drafts_are_being_picked_up_exits(project: Path, settings: Settings, store: Store,
                                                                scheduled: int) -> None:
    """The tick that picks up dropped drafts calls the scheduler while SIGTERM shuts it down: it must exit."""
    text = (project / "drafts" / SAMPLE / "draft.md").read_text(encoding="utf-8")
    at = utcnow() + dt.timedelta(hours=1)
    for number in range(12):  # enough drafts that the tick is still at work when the signal comes
        folder = project / "drafts" / f"2024-03-{number + 1:02d}-dropped"
        folder.mkdir()
        (folder / "draft.md").write_text(text.replace("date: 2024-02-22", f"send_at: {at.isoformat()}"),
                                         encoding="utf-8")
    env = {**os.environ, "NEWSLETTER_SECRET": SECRET}
    runner = subprocess.Popen([sys.executable, "-m", "pipeline", "run"], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: _sends(store) >= scheduled or runner.poll() is not None)
    runner.send_signal(signal.SIGTERM)
    try:
        _, err = runner.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        runner.kill()
        pytest.fail(f"newsletter run hung after SIGTERM with {scheduled} draft(s) picked up")
    assert runner.returncode == 0, err.decode()
    assert _sends(store) < 12, "the tick had finished before the signal: nothing was tested"


def _sends(store: Store) -> int:
    try:
        with store.read() as connection:
            return int(connection.scalar(select(func.count()).select_from(sends)) or 0)
    except Exception:  # noqa: BLE001 - the runner has not created the tables yet
        return 0
