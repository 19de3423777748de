"""Scheduling: an editor picks a time, or drops a draft with ``send_at``; it goes out on time, once.

    newsletter schedule DRAFT --at …  ─▶ sends (scheduled, scheduled_at)  ◀─ drafts with send_at
                                              │
    newsletter run: APScheduler 3 (jobs in the project's database) ── fire ─▶ claim ─▶ rebuild,
                    re-check ─▶ held | queue the audience ─▶ send.run_send ─▶ staff notice

Every ``poll_seconds`` the runner looks at the drafts folder and the store:
new or changed drafts with ``send_at`` are checked and scheduled (or reported),
each scheduled send gets a date job, sends later than ``max_lateness`` are
marked missed, and sends left in progress by a dead runner are resumed. A job
that fires *claims* its send in the database, so two runners on one database
send it once. On SIGTERM or SIGINT the runner takes no new work, lets the
batch in flight finish, and exits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select, update

from pipeline import send
from pipeline.build import Build, build_edition
from pipeline.checks import check_edition
from pipeline.config import Settings
from pipeline.dropped import DraftWatch, pick_up_drafts
from pipeline.errors import NewsletterError, ScheduleError
from pipeline.logs import format_counts
from pipeline.notices import notify_staff
from pipeline.store import Store, utcnow
from pipeline.store.tables import editions, sends
from pipeline.when import describe, localise, zone

log = logging.getLogger("newsletter.schedule")
JOBS_TABLE = "apscheduler_jobs"


@dataclass(frozen=True, kw_only=True)
class ScheduledLine:
    """A send on the calendar, for ``schedule list``."""

    id: int
    edition: str
    status: str
    at: dt.datetime | None
    timezone: str
    reason: str
    changed: str  # "no", "yes", or why the draft could not be compared


# ---------------------------------------------------------------- the calendar


def require_future(at: dt.datetime, tz: ZoneInfo) -> None:
    if at <= utcnow():
        raise ScheduleError(f"{describe(at, tz)} is in the past")


def schedule_build(store: Store, settings: Settings, build: Build, at: dt.datetime, *, timezone: str,
                   override_reason: str | None = None) -> int:
    """Schedule an (already checked) build for ``at``; its draft is rebuilt and re-checked then."""
    require_future(at, zone(timezone))
    return send.create_send(store, settings, build.edition, built_path=str(build.folder), status="scheduled",
                            scheduled_at=at.astimezone(dt.UTC), override_reason=override_reason,
                            draft_path=str(build.edition.draft.folder.resolve()), timezone=timezone)


def move(store: Store, send_id: int, at: dt.datetime) -> None:
    """Give a scheduled send another time."""
    if at <= utcnow():
        raise ScheduleError("the new time is in the past")
    with store.begin() as connection:
        moved = connection.execute(update(sends).where(sends.c.id == send_id, sends.c.status == "scheduled")
                                   .values(scheduled_at=at.astimezone(dt.UTC))).rowcount
    if not moved:
        raise ScheduleError(f"send {send_id} is not scheduled (see 'newsletter schedule list')")


def calendar(store: Store, settings: Settings) -> list[ScheduledLine]:
    """Every send that has or had a time, soonest first, with whether its draft changed since."""
    with store.read() as connection:
        rows = connection.execute(
            select(sends.c.id, sends.c.status, sends.c.scheduled_at, sends.c.timezone, sends.c.status_reason,
                   sends.c.draft_path, editions.c.name, editions.c.content_hash)
            .join(editions, editions.c.id == sends.c.edition_id)
            .where(sends.c.scheduled_at.is_not(None)).order_by(sends.c.scheduled_at, sends.c.id)).all()
    return [ScheduledLine(id=row.id, edition=row.name, status=row.status, at=row.scheduled_at,
                          timezone=row.timezone or settings.publication.timezone, reason=row.status_reason or "",
                          changed=_changed(settings, row.draft_path, row.content_hash) if row.status == "scheduled"
                          else "-") for row in rows]


def _changed(settings: Settings, draft_path: str | None, content_hash: str) -> str:
    from pipeline.draft import read_draft
    from pipeline.render import render_edition

    if not draft_path:
        return "-"
    try:
        return "yes" if render_edition(read_draft(Path(draft_path)), settings).content_hash != content_hash else "no"
    except NewsletterError as exc:
        return f"draft broken: {exc.reason}"


# ---------------------------------------------------------------- firing


def fire(store: Store, settings: Settings, send_id: int, should_stop=lambda: False) -> None:  # type: ignore[no-untyped-def]
    """Claim a due send, rebuild and re-check it, then send it (or hold it, saying why)."""
    me = send.runner_name()
    if not send.claim_scheduled(store, send_id, me):
        log.info("send %s: already taken by another runner or no longer scheduled", send_id)
        return
    with store.read() as connection:
        scheduled = connection.execute(
            select(sends.c.draft_path, sends.c.override_reason, editions.c.content_hash)
            .join(editions, editions.c.id == sends.c.edition_id).where(sends.c.id == send_id)).one()
    try:
        build = build_edition(Path(scheduled.draft_path), settings)
        report = check_edition(build.edition, settings, offline=settings.schedule.offline_checks)
    except NewsletterError as exc:
        _hold(store, settings, send_id, f"the draft could not be built: {exc}")
        return
    # An operator's override holds for the content it was given for, not for a changed draft.
    forced = scheduled.override_reason and scheduled.content_hash == build.edition.content_hash
    if not report.ok and not forced:
        problems = "; ".join(f"{problem.location}: {problem.message}" for problem in report.errors[:5])
        _hold(store, settings, send_id, f"{len(report.errors)} check error(s) at send time: {problems}")
        return
    send.queue_scheduled(store, settings, send_id, build.edition, built_path=str(build.folder))
    log.info("send %s: %s firing (content %s)", send_id, build.edition.name, build.edition.content_hash[:12])
    run(store, settings, send_id, should_stop)


def run(store: Store, settings: Settings, send_id: int, should_stop=lambda: False) -> None:  # type: ignore[no-untyped-def]
    """Send (or resume) ``send_id`` to the end, then tell the staff how it went."""
    try:
        summary = asyncio.run(send.run_send(store, settings, send_id, should_stop=should_stop))
    except NewsletterError as exc:
        log.error("send %s: %s", send_id, exc)
        notify_staff(settings, f"Send {send_id} failed", f"Send {send_id} could not go on: {exc}")
        return
    line = f"send {send_id}: {summary.status}: {format_counts(summary.counts)}"
    log.info(line + (f" ({summary.reason})" if summary.reason else ""))
    if summary.status in ("sent", "failed", "paused"):
        body = "\n".join([line, summary.reason, *(f"uncertain: {email}" for email in summary.uncertain[:50])])
        notify_staff(settings, f"Send {send_id} {summary.status}", body.strip())


def _hold(store: Store, settings: Settings, send_id: int, reason: str) -> None:
    send.transition(store, send_id, "held", reason, only_from=("sending",), release_runner=True)
    log.warning("send %s held: %s", send_id, reason)
    notify_staff(settings, f"Send {send_id} held: nothing was sent", reason)


# ---------------------------------------------------------------- the runner


class SharedJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store, shared by every runner on the database.

    Each runner may fire a job another runner also fired (the send's claim
    decides who sends); removing a job another runner already removed is then
    not an error.
    """

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        except JobLookupError:
            pass


class Runner:
    """``newsletter run``: the long-running scheduler."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.stopping = threading.Event()
        self.drafts = DraftWatch()
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
        """Take no new work; let sends finish the batch in flight."""
        self.stopping.set()
        self.scheduler.shutdown(wait=True)

    def busy(self) -> bool:
        """Whether anything is scheduled or being sent."""
        with self.store.read() as connection:
            return connection.scalar(select(sends.c.id).where(
                sends.c.status.in_(("scheduled", "sending")))) is not None

    def tick(self) -> None:
        if self.stopping.is_set():
            return
        try:
            pick_up_drafts(self.store, self.settings, self.drafts)
            self._plan()
        except NewsletterError as exc:
            log.error("%s", exc)

    def _plan(self) -> None:
        now = utcnow()
        late = dt.timedelta(seconds=self.settings.schedule.max_lateness)
        with self.store.read() as connection:
            rows = connection.execute(select(sends.c.id, sends.c.status, sends.c.scheduled_at, sends.c.runner,
                                             sends.c.heartbeat_at)
                                      .where(sends.c.status.in_(("scheduled", "sending")))).all()
        for row in rows:
            job_id = f"send-{row.id}"
            if row.status == "sending":
                if row.runner is None or send.runner_is_dead(row.runner, row.heartbeat_at, now):
                    self._submit(f"resume-{row.id}", run, row.id, when=None)
            elif row.scheduled_at is not None and now - row.scheduled_at > late:
                self._miss(row.id, row.scheduled_at, now)
            else:
                job = self.scheduler.get_job(job_id)
                if job is None or job.next_run_time != row.scheduled_at:
                    self._submit(job_id, fire, row.id, when=row.scheduled_at)

    def _submit(self, job_id: str, function, send_id: int, *, when: dt.datetime | None) -> None:  # type: ignore[no-untyped-def]
        if job_id.startswith("resume-"):
            if self.scheduler.get_job(job_id) is None:
                self.scheduler.add_job(function, args=[self.store, self.settings, send_id, self.stopping.is_set],
                                       id=job_id, jobstore="local", replace_existing=True)
            return
        self.scheduler.add_job(_fire_job, "date", run_date=when, args=[send_id], id=job_id,
                               replace_existing=True)

    def _miss(self, send_id: int, scheduled_at: dt.datetime, now: dt.datetime) -> None:
        late = (f"{(now - scheduled_at).total_seconds() / 60:.0f} min late when the scheduler came back; "
                f"max_lateness is {self.settings.schedule.max_lateness / 60:.0f} min")
        if send.transition(self.store, send_id, "missed", late, only_from=("scheduled",)):
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
    if runner is None or runner.stopping.is_set():
        return
    fire(runner.store, runner.settings, send_id, runner.stopping.is_set)


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


def localise_send_at(settings: Settings, value: dt.datetime) -> dt.datetime:
    """A draft's ``send_at``: its own offset, or local time in the publication's zone."""
    if value.tzinfo is not None:
        return value
    return localise(value, settings.publication.zone)
