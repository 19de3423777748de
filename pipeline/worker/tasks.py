"""The procrastinate app over the project's PostgreSQL, and its one task: send a part of a send.

A job names a send and a part; the worker that runs it supplies the store and the settings (its
``additional_context``). Jobs of one part share a procrastinate ``lock`` (never two at once) and a
``queueing_lock`` (never two waiting): handing a send over twice queues nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Iterable

import procrastinate
import procrastinate.jobs
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.notices import notify, summary_notice
from pipeline.send.pump import run_part
from pipeline.store import Store
from pipeline.store import parts as part_store
from pipeline.store import sends as db
from pipeline.store.parts import Part

log = logging.getLogger("newsletter.worker")
TASK = "newsletter.send_part"
QUEUE = "sends"
ATTEMPTS = 50  # runs of a part's job, the first included, before its send is paused
LONGEST_WAIT = 300  # seconds, at most, between two runs


class Backoff(procrastinate.BaseRetryStrategy):
    """A job that raised (the database went away, say) is run again 2, 4, 8 … s later, at most
    ``LONGEST_WAIT`` apart, ``ATTEMPTS`` times in all (a job whose worker died is queued again by the sweeper,
    ``run.py``, which counts too). One that cannot work on any run (this worker's settings are wrong: the
    provider's key is missing, say) is not run again."""

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job
                           ) -> procrastinate.RetryDecision | None:
        if isinstance(exception, ConfigError) or job.attempts + 1 >= ATTEMPTS:
            return None
        return procrastinate.RetryDecision(retry_in={"seconds": min(2 ** (job.attempts + 1), LONGEST_WAIT)})


RETRY = Backoff()


def conninfo(store: Store) -> str:
    """The store's URL as libpq takes it (no SQLAlchemy driver name)."""
    return make_url(store.url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(store: Store, *, sync: bool = False) -> procrastinate.App:
    """The app, over an async connector (a worker) or a sync one (a command handing a send over)."""
    connector: procrastinate.BaseConnector = (procrastinate.SyncPsycopgConnector(conninfo=conninfo(store)) if sync
                                              else procrastinate.PsycopgConnector(conninfo=conninfo(store)))
    app = procrastinate.App(connector=connector)
    app.task(name=TASK, queue=QUEUE, pass_context=True, retry=RETRY)(send_part)
    return app


def _lock(send_id: int, number: int) -> str:
    return f"send-{send_id}-part-{number}"


def defer_parts(store: Store, parts: Iterable[Part]) -> int:
    """Queue a job for each part (none for a part that has one waiting already); how many were queued."""
    app = make_app(store, sync=True)
    queued = 0
    with app.open():
        for part in parts:
            lock = _lock(part.send_id, part.number)
            try:
                app.configure_task(TASK, lock=lock, queueing_lock=lock).defer(send_id=part.send_id,
                                                                             number=part.number)
                queued += 1
            except AlreadyEnqueued:
                pass
    return queued


async def send_part(context: procrastinate.JobContext, send_id: int, number: int) -> None:
    """The task: send part ``number`` of ``send_id`` (``pump.run_part``); tell the staff if this job ended or
    stopped the send; queue the part again if this worker stopped with rows of it left."""
    extra = context.additional_context
    store: Store = extra["store"]
    settings: Settings = extra["settings"]
    stopping: threading.Event = extra["stopping"]
    part = await asyncio.to_thread(part_store.get, store, send_id, number)
    if part is None:
        log.warning("send %s has no part %s: nothing to do", send_id, number)
        return
    try:
        done = await run_part(store, settings, part, should_stop=stopping.is_set)
    except Exception as exc:
        job = context.job
        if job is not None and RETRY.get_retry_decision(exception=exc, job=job) is None:
            await _give_up(store, settings, part, exc, job.attempts + 1)
        raise
    if done.left and stopping.is_set():
        lock = _lock(send_id, number)
        try:
            await context.app.configure_task(TASK, lock=lock, queueing_lock=lock).defer_async(send_id=send_id,
                                                                                           number=number)
        except AlreadyEnqueued:
            pass
        log.info("send %s: part %s left with %d row(s) to send, for the next worker", send_id, number, done.left)
    if done.finished is not None or done.stopped:
        await _tell_staff(store, settings, send_id)


async def _tell_staff(store: Store, settings: Settings, send_id: int) -> None:
    """Mail the staff the send's summary, if it is over or stopped (``notices.summary_notice``)."""
    notice = summary_notice(await asyncio.to_thread(db.summary, store, send_id))
    if notice is not None:
        await notify(settings, *notice)


async def _give_up(store: Store, settings: Settings, part: Part, error: BaseException, runs: int) -> None:
    """The part's job will not run again: pause its send (the other parts stop at their next claim), say why,
    and tell the staff. ``send --resume`` hands it to the workers again once the cause is mended."""
    if isinstance(error, ConfigError):
        where = f"{socket.gethostname()}:{os.getpid()}"
        reason = f"part {part.number} failed on a worker whose settings are wrong ({where}): {error}"
    else:
        reason = f"part {part.number} failed {runs} times on the workers; last: {error}"
    if not await asyncio.to_thread(db.move, store, part.send_id, "pause", reason):
        return  # paused, cancelled or ended meanwhile: nothing to add
    log.error("send %s: %s", part.send_id, reason)
    await _tell_staff(store, settings, part.send_id)
