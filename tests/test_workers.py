"""The send workers on the real PostgreSQL, as real processes, against the real emulator over loopback.

Each test starts ``newsletter worker`` processes on a throwaway database and hands them a send: they share
it, exactly once; one killed with SIGKILL has its job run again by another, and the rows it had in flight
are uncertain (Postmark) or handed over again under their idempotency key (Resend), never sent twice;
pause and cancel reach every worker; ``send --now`` with no worker running says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from sqlalchemy import func, select, text

from pipeline import send, worker
from pipeline.config import Settings, load_settings
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.server import EmulatorHandle
from pipeline.errors import ConfigError
from pipeline.store import Store
from pipeline.store.parts import WORKERS
from pipeline.store.tables import deliveries, send_parts

from .conftest import SAMPLE, SECRET
from .test_providers_emulator import _assert_log_equals_emulator, _by_recipient, _rows
from .test_schedule import _schedule_in
from .test_send import _audience, _edition, _many, _start

KEY = "emu-workers-key"
VARIABLES = {"postmark": "POSTMARK_SERVER_TOKEN", "resend": "RESEND_API_KEY"}
STAFF = "desk@example.org"  # the staff notices go through the provider too
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def database() -> str:
    """Workers run on PostgreSQL only."""
    return "postgresql"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator_in_thread(keys=dict.fromkeys(VARIABLES, KEY)) as handle:
        yield handle


def _configure(project: Path, emulator: EmulatorHandle, provider: str = "postmark") -> Settings:
    """Workers on, with short heartbeats and leases so a dead one is noticed in seconds; ``provider`` at the
    emulator, 50 recipients a request, 200 rows a job."""
    path = project / "newsletter.toml"
    content = path.read_text(encoding="utf-8").replace("[workers]\nenabled = false\n", "")
    content = content.replace('name = "outbox"', f'name = "{provider}"\nbase_url = "{emulator.url}"\n'
                                                  f'api_key_env = "{VARIABLES[provider]}"\nbatch_size = 50\n'
                                                  'concurrency = 2\ntimeout = 10')
    content += ("\n[send]\nlease_seconds = 3\n"
                "\n[workers]\nheartbeat_seconds = 0.5\nstall_seconds = 3\npart_size = 200\n")
    path.write_text(content, encoding="utf-8")
    os.environ[VARIABLES[provider]] = KEY  # for the workers; the autouse clean_environ removes it before the next test
    return load_settings(path)


class Workers:
    """``newsletter worker`` processes on the project, each logging to its own file."""

    def __init__(self, project: Path):
        self.project = project
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self._files: list[IO[bytes]] = []

    def start(self, *args: str, command: str = "worker", without: str = "") -> subprocess.Popen[bytes]:
        """A process of ``command``; ``without``: an environment variable it does not get."""
        log = self.project / f"{command}-{len(self.processes)}.log"
        handle = log.open("wb")
        env = {name: value for name, value in os.environ.items() if name != without} | {"NEWSLETTER_SECRET": SECRET}
        process = subprocess.Popen([sys.executable, "-m", "pipeline", command, *args], cwd=self.project, env=env,
                                   stdout=handle, stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.logs.append(log)
        self._files.append(handle)
        return process

    def log(self, index: int) -> str:
        return self.logs[index].read_text(encoding="utf-8", errors="replace")

    def stop(self) -> list[str]:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in self._files:
            handle.close()
        return [self.log(index) for index in range(len(self.processes))]


@pytest.fixture
def workers(project: Path) -> Iterator[Workers]:
    started = Workers(project)
    yield started
    started.stop()


def _wait_for(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _live(store: Store, count: int) -> Callable[[], bool]:
    return lambda: _heartbeats(store) >= count


def _heartbeats(store: Store) -> int:
    try:
        return int(worker.handover.part_store.live_workers(store, 5))
    except Exception:  # noqa: BLE001 - no worker has migrated the database yet
        return 0


def _send(store: Store, settings: Settings, project: Path, audience: int) -> int:
    _audience(store, project, _many(audience))
    built = _edition(project, settings)
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder), owner=WORKERS)
    worker.hand_over(store, settings, send_id)
    return send_id


def _status(store: Store, send_id: int) -> str:
    return str(send.summary(store, send_id).status)


def _counts(store: Store, send_id: int) -> dict[str, int]:
    return send.summary(store, send_id).counts


def _records(emulator: EmulatorHandle, provider: str) -> list[dict[str, Any]]:
    return [record for record in emulator.messages(provider=provider) if STAFF not in record["to"]]


def _jobs_run_by(log: str) -> int:
    return len(re.findall(r"Job newsletter\.send_part\[\d+\]\(.*\) ended with status: Success", log))


# ---------------------------------------------------------------- settings


def test_stall_seconds_must_be_longer_than_the_heartbeat(project: Path, settings: Settings) -> None:
    path = project / "newsletter.toml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "[workers]\nenabled = false\n", "[workers]\nheartbeat_seconds = 10\nstall_seconds = 5\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"workers: stall_seconds \(5\) must be longer than heartbeat_seconds"):
        load_settings(path)


# ---------------------------------------------------------------- sharing a send


def test_two_workers_share_a_send_and_everyone_gets_it_once(project: Path, emulator: EmulatorHandle,
                                                            workers: Workers, run_cli) -> None:
    settings = _configure(project, emulator)
    emulator.set_faults({"latency_ms": 50})
    store = Store.from_settings(settings)
    _audience(store, project, _many(2000))
    for _ in range(2):
        workers.start()
    _wait_for(_live(store, 2), what="two workers")
    code, out, err = run_cli("send", SAMPLE, "--now", "--offline", "--no-progress")
    assert code == 0, (out, err, workers.stop())
    send_id = int(re.search(r"send (\d+): ", out)[1])  # type: ignore[index]
    assert f"send {send_id}: sent: 2,000 sent" in out or _counts(store, send_id) == {"sent": 2000}, out
    records = _records(emulator, "postmark")
    assert len(records) == 2000 and all(len(got) == 1 for got in _by_recipient(records).values())
    _assert_log_equals_emulator(_rows(store, send_id), records)
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(send_parts)) == 10
        attempts = set(connection.scalars(select(deliveries.c.attempts).where(deliveries.c.send_id == send_id)))
    assert attempts == {1}
    logs = workers.stop()
    assert all(_jobs_run_by(log) >= 1 for log in logs), logs  # both took part
    assert sum(_jobs_run_by(log) for log in logs) == 10
    store.dispose()


# ---------------------------------------------------------------- a worker killed


def _part_in_flight_of(store: Store, pid: int) -> bool:
    """Whether the worker ``pid`` holds a part with rows in flight at the provider."""
    with store.read() as connection:
        return bool(connection.scalar(
            select(func.count()).select_from(deliveries).join(send_parts, (send_parts.c.send_id == deliveries.c.send_id)
                                                              & deliveries.c.id.between(send_parts.c.first_id,
                                                                                        send_parts.c.last_id))
            .where(send_parts.c.runner.like(f"%:{pid}:%"), deliveries.c.status == "sending")))


@pytest.mark.parametrize("provider", ["postmark", "resend"])
def test_a_worker_killed_mid_send_has_its_job_run_again_and_nobody_is_sent_twice(
        provider: str, project: Path, emulator: EmulatorHandle, workers: Workers) -> None:
    settings = _configure(project, emulator, provider)
    emulator.set_faults({"latency_ms": 400})  # batches spend long enough at the provider to be killed there
    store = Store.from_settings(settings)
    doomed, survivor = workers.start(), workers.start()
    _wait_for(_live(store, 2), what="two workers")
    send_id = _send(store, settings, project, 2000)
    _wait_for(lambda: _part_in_flight_of(store, doomed.pid), what="the doomed worker to have a batch in flight")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    _wait_for(lambda: _status(store, send_id) != "sending", timeout=240, what="the send to end")
    summary = send.summary(store, send_id)
    records = _records(emulator, provider)
    rows = _rows(store, send_id)
    _assert_log_equals_emulator(rows, records)
    assert all(len(got) == 1 for got in _by_recipient(records).values())  # nobody twice
    assert summary.status == "sent" and summary.total == 2000
    if provider == "resend":  # the batch in flight was handed over again, as the same batch: nobody uncertain
        assert summary.counts == {"sent": 2000}
        with store.read() as connection:
            again = connection.scalar(select(func.count()).select_from(deliveries).where(
                deliveries.c.send_id == send_id, deliveries.c.attempts == 2))
        assert again and again % 50 == 0, again  # whole batches of 50, under their idempotency key
    else:
        assert set(summary.counts) == {"sent", "uncertain"} and summary.counts["uncertain"] >= 1, summary.counts
        uncertain = [row for row in rows if row.status == "uncertain"]
        assert all("in flight when its sender stopped" in row.error_text for row in uncertain)
    logs = workers.stop()
    assert "queued again" in logs[1], logs[1]  # the survivor's sweeper retried the dead worker's job
    assert survivor.returncode == 0
    store.dispose()


def test_a_worker_stopped_with_sigterm_leaves_its_part_to_the_other_and_nobody_is_uncertain(
        project: Path, emulator: EmulatorHandle, workers: Workers) -> None:
    settings = _configure(project, emulator)
    emulator.set_faults({"latency_ms": 300})
    store = Store.from_settings(settings)
    stopped, other = workers.start(), workers.start()
    _wait_for(_live(store, 2), what="two workers")
    send_id = _send(store, settings, project, 1000)
    _wait_for(lambda: _part_in_flight_of(store, stopped.pid), what="the worker to have a batch in flight")
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == 0
    _wait_for(lambda: _status(store, send_id) != "sending", timeout=240, what="the send to end")
    assert _counts(store, send_id) == {"sent": 1000}  # its batches in flight were settled before it exited
    records = _records(emulator, "postmark")
    assert len(records) == 1000
    _assert_log_equals_emulator(_rows(store, send_id), records)
    assert "left with" in workers.log(0) and "for the next worker" in workers.log(0), workers.log(0)
    assert other.poll() is None
    store.dispose()


def test_the_rate_limit_holds_for_all_workers_together(project: Path, emulator: EmulatorHandle,
                                                       workers: Workers) -> None:
    """Two workers at 100 messages a second between them: by the emulator's clock, the messages accepted by any
    moment never exceed one second's worth plus 100 a second since the first (and a batch in flight each).
    A bucket per worker would let twice that through."""
    _configure(project, emulator)
    path = project / "newsletter.toml"
    path.write_text(path.read_text(encoding="utf-8").replace("batch_size = 50\n",
                                                             "batch_size = 50\nrate_per_second = 100\n"),
                    encoding="utf-8")
    settings = load_settings(path)
    store = Store.from_settings(settings)
    for _ in range(2):
        workers.start()
    _wait_for(_live(store, 2), what="two workers")
    send_id = _send(store, settings, project, 1000)
    _wait_for(lambda: _status(store, send_id) != "sending", timeout=240, what="the send to end")
    assert _counts(store, send_id) == {"sent": 1000}
    logs = workers.stop()
    assert all(_jobs_run_by(log) >= 1 for log in logs), logs  # both sent
    arrivals = sorted(dt.datetime.fromisoformat(record["received_at"]) for record in _records(emulator, "postmark"))
    first = arrivals[0]
    for count, moment in enumerate(arrivals, start=1):
        assert count <= 100 + 100 * (moment - first).total_seconds() + 2 * 50, (count, moment - first)
    assert (arrivals[-1] - first).total_seconds() >= 7  # (1,000 - 100 at once - 100 in flight) / 100 a second
    store.dispose()


# ---------------------------------------------------------------- pause, resume, cancel


def _settled_still(store: Store, send_id: int) -> bool:
    return not _counts(store, send_id).get("sending")


def test_pause_stops_every_worker_resume_goes_on_and_cancel_ends_it(project: Path, emulator: EmulatorHandle,
                                                                    workers: Workers, run_cli) -> None:
    settings = _configure(project, emulator)
    emulator.set_faults({"latency_ms": 200})
    store = Store.from_settings(settings)
    for _ in range(2):
        workers.start()
    _wait_for(_live(store, 2), what="two workers")
    send_id = _send(store, settings, project, 2000)
    _wait_for(lambda: _counts(store, send_id).get("sent", 0) >= 200, what="some sent")
    code, out, err = run_cli("send", "--pause", str(send_id))
    assert code == 0, err
    _wait_for(lambda: _settled_still(store, send_id), what="batches in flight to settle")
    paused = _counts(store, send_id)
    time.sleep(2)  # every worker had time to claim again, had it not heard of the pause
    assert _counts(store, send_id) == paused and _status(store, send_id) == "paused"
    assert paused.get("queued", 0) > 0 and len(_records(emulator, "postmark")) == paused["sent"]

    worker.hand_over(store, settings, send_id)  # what 'send --resume' does before following it
    _wait_for(lambda: _counts(store, send_id).get("sent", 0) >= paused["sent"] + 200, what="sending again")
    code, out, err = run_cli("send", "--cancel", str(send_id))
    assert code in (0, 1), err
    _wait_for(lambda: _settled_still(store, send_id), what="batches in flight to settle")
    time.sleep(2)
    counts = _counts(store, send_id)
    assert _status(store, send_id) == "cancelled" and not counts.get("queued") and counts.get("cancelled", 0) > 0
    records = _records(emulator, "postmark")
    assert len(records) == counts["sent"]
    rows = _rows(store, send_id)
    assert not {row.email for row in rows if row.status == "cancelled"} & set(_by_recipient(records))
    _assert_log_equals_emulator([row for row in rows if row.status != "cancelled"], records)
    store.dispose()


# ---------------------------------------------------------------- no worker


def test_send_now_with_no_worker_says_so_and_a_worker_started_later_sends_it(
        project: Path, emulator: EmulatorHandle, workers: Workers, run_cli) -> None:
    settings = _configure(project, emulator)
    store = Store.from_settings(settings)
    _audience(store, project, _many(300))
    code, out, err = run_cli("send", SAMPLE, "--now", "--offline", "--no-progress")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no worker is running" in lines[0] and "newsletter worker" in lines[0], err
    assert "Traceback" not in err
    send_id = int(re.search(r"send (\d+): ", out)[1])  # type: ignore[index]
    assert _counts(store, send_id) == {"queued": 300}
    workers.start()
    _wait_for(lambda: _status(store, send_id) == "sent", what="the send to go out")
    assert _counts(store, send_id) == {"sent": 300}
    assert len(_records(emulator, "postmark")) == 300
    store.dispose()


# ---------------------------------------------------------------- a job that cannot work


def test_a_failing_job_runs_again_later_and_later_at_most_five_minutes_apart_fifty_times() -> None:
    from procrastinate.jobs import Job

    from pipeline.worker.tasks import RETRY

    def wait(attempts: int, error: Exception) -> float | None:
        job = Job(queue="sends", lock=None, queueing_lock=None, task_name="newsletter.send_part", attempts=attempts)
        decision = RETRY.get_retry_decision(exception=error, job=job)
        if decision is None:
            return None
        assert decision.retry_at is not None
        return round((decision.retry_at - dt.datetime.now(dt.UTC)).total_seconds())

    waits = [wait(attempts, ConnectionError("the database went away")) for attempts in range(50)]
    assert waits[:9] == [2, 4, 8, 16, 32, 64, 128, 256, 300] and set(waits[9:49]) == {300}
    assert waits[49] is None  # the 50th run was the last: the send is paused, saying why
    assert wait(0, ConfigError("no postmark API key")) is None  # no run could work: not run again at all



def test_a_worker_without_the_provider_key_pauses_the_send_saying_why_and_resume_sends_it(
        project: Path, emulator: EmulatorHandle, workers: Workers, run_cli) -> None:
    settings = _configure(project, emulator)
    store = Store.from_settings(settings)
    workers.start(without=VARIABLES["postmark"])
    _wait_for(_live(store, 1), what="the worker")
    send_id = _send(store, settings, project, 300)
    _wait_for(lambda: _status(store, send_id) == "paused", what="the send to pause")
    summary = send.summary(store, send_id)
    assert summary.counts == {"queued": 300} and not _records(emulator, "postmark")
    assert "on a worker whose settings are wrong" in summary.reason, summary.reason
    assert "POSTMARK_SERVER_TOKEN" in summary.reason, summary.reason
    time.sleep(1)
    with store.read() as connection:  # each part's job ran once, not again and again for nothing
        runs = connection.execute(text("SELECT status, attempts FROM procrastinate_jobs")).all()
    assert [tuple(run) for run in runs] == [("failed", 1)] * 2  # 300 rows, 200 a part
    log = workers.stop()[0]
    assert f"send {send_id}: part " in log and "failed on a worker whose settings are wrong" in log, log

    workers.start()
    _wait_for(_live(store, 1), what="a worker with the key")
    code, out, err = run_cli("send", "--resume", str(send_id), "--no-progress")
    assert code == 0, err
    _wait_for(lambda: _status(store, send_id) == "sent", what="the send to go out")
    assert _counts(store, send_id) == {"sent": 300}
    assert len(_records(emulator, "postmark")) == 300
    store.dispose()


def test_following_a_send_counts_the_rows_settled_before_its_first_look(project: Path, settings: Settings) -> None:
    """The progress of ``send --now`` counts from the rows left before the send was handed over: rows a worker
    settles before the command first looks are on the bar too."""
    store = Store.from_settings(settings)
    _audience(store, project, _many(30))
    send_id = _start(store, settings, _edition(project, settings))
    left = send.queued_count(store, send_id)
    asyncio.run(send.run_send(store, settings, send_id))  # as fast a worker as can be: done before the first look
    settled: list[int] = []
    summary = worker.follow(store, settings, send_id, on_progress=settled.append, unsettled=left)
    assert (left, settled, summary.counts) == (30, [30], {"sent": 30})
    store.dispose()


# ---------------------------------------------------------------- newsletter run


def test_newsletter_run_hands_a_due_send_to_the_workers_which_end_it_once(
        project: Path, emulator: EmulatorHandle, workers: Workers) -> None:
    settings = _configure(project, emulator)
    store = Store.from_settings(settings)
    _audience(store, project, _many(600))
    for _ in range(2):
        workers.start()
    workers.start(command="run")
    _wait_for(_live(store, 2), what="two workers")
    _schedule_in(project, settings, store, 1)
    _wait_for(lambda: _status(store, 1) == "sent", what="the scheduled send to go out")
    assert _counts(store, 1) == {"sent": 600}
    assert len(_records(emulator, "postmark")) == 600
    logs = workers.stop()
    assert "send 1: handed to the workers (3 job(s) queued)" in logs[2], logs[2]
    notices = [record for record in emulator.messages(provider="postmark") if STAFF in record["to"]]
    # The send ended once, by whichever job settled its last row: one summary to the staff.
    assert [notice["subject"] for notice in notices] == [f"[{settings.publication.name}] Send 1 sent"], notices
    store.dispose()


# ---------------------------------------------------------------- the schema


def test_migration_0010_downgrades_and_upgrades_again(pg_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from pipeline.store.engine import MIGRATIONS

    store = Store(pg_url)
    store.migrate()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def procrastinate_objects() -> int:
        with store.read() as connection:
            return int(connection.scalar(text(
                "SELECT (SELECT count(*) FROM pg_tables WHERE tablename LIKE 'procrastinate%') + "
                "(SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%') + "
                "(SELECT count(*) FROM pg_type WHERE typname LIKE 'procrastinate%')")) or 0)

    assert procrastinate_objects() > 10
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0009_races")
    assert procrastinate_objects() == 0
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    assert procrastinate_objects() > 10
    store.dispose()
