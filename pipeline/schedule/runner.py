"""``newsletter run``: the long-running scheduler, on APScheduler 3 with its jobs in the project's database.

Every ``poll_seconds`` a tick looks at the drafts folder and the store: new or
changed drafts with ``send_at`` are checked and scheduled (or reported), each
scheduled send gets a date job, sends later than ``max_lateness`` are marked
missed, a send whose runner died before it queued its audience is scheduled
again, and a send whose sender's lease expired is resumed. A job that fires
*claims* its send in the database, so two runners on one database send it once.

On SIGTERM or SIGINT the runner takes no new work, lets every job in progress
finish (a send finishes the batch in flight), and exits. It waits for its own
jobs before it shuts APScheduler down: ``shutdown(wait=True)`` holds the job
stores' lock while it waits, and a tick in progress needs that lock to add
its jobs, so waiting inside ``shutdown`` could wait for ever.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from pipeline.config import Settings
from pipeline.errors import NewsletterError
from pipeline.notices import notify_staff
from pipeline.schedule.dropped import DraftWatch, pick_up_drafts
from pipeline.schedule.firing import fire, resume
from pipeline.store import Store, utcnow
from pipeline.store import calendar as db
from pipeline.store.sends import move, refire_abandoned
from pipeline.store.states import SendStatus

log = logging.getLogger("newsletter.schedule")
JOBS_TABLE = "apscheduler_jobs"


class SharedJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, shared by every runner on the database.

    Each runner may fire a job another runner also fired (the send's claim
    decides who sends); removing a job another runner already removed is then
    not an error. Its table is made by the store's migrations (``tables.apscheduler_jobs``),
    under their lock: starting creates nothing, so two runners starting on an
    empty database do not race to create it.
    """

    def start(self, scheduler: Any, alias: str) -> None:
        BaseJobStore.start(self, scheduler, alias)  # not SQLAlchemyJobStore.start, which creates the table

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            pass


class Runner:
    """The scheduler: its APScheduler, its ticks, and the jobs it has running."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.stopping = threading.Event()
        self.drafts = DraftWatch()
        self._running = 0
        self._idle = threading.Condition()
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SharedJobStore(engine=store.engine, tablename=JOBS_TABLE),
                       "local": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=dt.UTC,
        )

    def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(self.tick, "interval", seconds=self.settings.schedule.poll_seconds, id="tick",
                               jobstore="local", next_run_time=dt.datetime.now(dt.UTC), replace_existing=True)

    def stop(self) -> None:
        """Take no new work; wait for the jobs in progress (a send finishes its batch in flight); shut down."""
        self.stopping.set()
        with self._idle:
            self._idle.wait_for(lambda: self._running == 0)
        self.scheduler.shutdown(wait=True)  # nothing of ours runs now: this returns at once

    def job(self, work: Callable[..., None], *args: Any) -> None:
        """Run one job's ``work``, counted, unless the runner is stopping."""
        with self._idle:
            self._running += 1
        try:
            if not self.stopping.is_set():  # checked after counting: stop() waits for whoever passed here
                work(*args)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def busy(self) -> bool:
        """Whether anything is scheduled or being sent."""
        return db.busy(self.store)

    def tick(self) -> None:
        self.job(self._tick)

    def _tick(self) -> None:
        for step in (functools.partial(pick_up_drafts, self.store, self.settings, self.drafts,
                                          self.stopping.is_set), self._plan):
            try:
                step()
            except NewsletterError as exc:  # the database is busy or gone: the next tick tries again
                log.error("%s", exc)

    def _plan(self) -> None:
        now = utcnow()
        late = dt.timedelta(seconds=self.settings.schedule.max_lateness)
        for send in db.live(self.store):
            if self.stopping.is_set():
                return
            if send.status == SendStatus.SENDING:
                if not send.lease_expired(now):
                    continue
                if not send.queued:
                    if refire_abandoned(self.store, send.id):
                        log.warning("send %s: its runner stopped before it queued the audience; fired again",
                                    send.id)
                    continue
                self._resume(send.id)
            elif send.at is not None and now - send.at > late:
                self._miss(send.id, send.at, now)
            else:
                job = self.scheduler.get_job(f"send-{send.id}")
                if job is None or job.next_run_time != send.at:
                    self.scheduler.add_job(_fire_job, "date", run_date=send.at, args=[send.id], id=f"send-{send.id}",
                                           replace_existing=True)

    def _resume(self, send_id: int) -> None:
        job_id = f"resume-{send_id}"
        if self.scheduler.get_job(job_id) is None:
            self.scheduler.add_job(self.job, args=[functools.partial(resume, self.store, self.settings),
                                                   send_id, self.stopping.is_set],
                                   id=job_id, jobstore="local", replace_existing=True)

    def _miss(self, send_id: int, scheduled_at: dt.datetime, now: dt.datetime) -> None:
        late = (f"{(now - scheduled_at).total_seconds() / 60:.0f} min late when the scheduler came back; "
                f"max_lateness is {self.settings.schedule.max_lateness / 60:.0f} min")
        if move(self.store, send_id, "miss", late):
            reason = f"due {scheduled_at:%Y-%m-%d %H:%M} UTC; it was not sent"
            log.warning("send %s missed: %s", send_id, reason)
            notify_staff(self.settings, f"Send {send_id} missed", reason)
            try:
                self.scheduler.remove_job(f"send-{send_id}")
            except JobLookupError:
                pass


_RUNNER: Runner | None = None


def _fire_job(send_id: int) -> None:
    """The job stored in the database: it names only the send, the runner supplies the rest."""
    runner = _RUNNER
    if runner is not None:
        runner.job(fire, runner.store, runner.settings, send_id, runner.stopping.is_set)


def run_forever(store: Store, settings: Settings, *, until_idle: bool = False) -> int:
    """Run the scheduler until SIGTERM or SIGINT (or, with ``until_idle``, until nothing is left to send)."""
    global _RUNNER
    runner = Runner(store, settings)
    _RUNNER = runner
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    runner.start()
    log.info("scheduler running (poll every %.1f s); SIGTERM or Ctrl+C stops it", settings.schedule.poll_seconds)
    try:
        while not done.wait(settings.schedule.poll_seconds):
            if until_idle and not runner.busy():
                break
    finally:
        log.info("stopping: no new work; finishing the batch in flight")
        runner.stop()
        _RUNNER = None
    return 0
