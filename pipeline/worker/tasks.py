"""The procrastinate app over the project's PostgreSQL, and its one task: send a part of a send.

A job names a send and a part; the worker that runs it supplies the store and the settings (its
``additional_context``). Jobs of one part share a procrastinate ``lock`` (never two at once) and a
``queueing_lock`` (never two waiting): handing a send over twice queues nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from pipeline.config import Settings
from pipeline.notices import notify, summary_notice
from pipeline.send.pump import run_part
from pipeline.store import Store
from pipeline.store import parts as part_store
from pipeline.store import sends as db
from pipeline.store.parts import Part

log = logging.getLogger("newsletter.worker")
TASK = "newsletter.send_part"
QUEUE = "sends"
# A job that raised (the database went away, say) is tried again, later and later; a job whose worker died is
# retried by the sweeper (``run.py``), which counts as an attempt too.
RETRY = procrastinate.RetryStrategy(max_attempts=50, wait=2, exponential_wait=2)


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
    done = await run_part(store, settings, part, should_stop=stopping.is_set)
    if done.left and stopping.is_set():
        lock = _lock(send_id, number)
        try:
            await context.app.configure_task(TASK, lock=lock, queueing_lock=lock).defer_async(send_id=send_id,
                                                                                           number=number)
        except AlreadyEnqueued:
            pass
        log.info("send %s: part %s left with %d row(s) to send, for the next worker", send_id, number, done.left)
    if done.finished is not None or done.stopped:
        summary = await asyncio.to_thread(db.summary, store, send_id)
        notice = summary_notice(summary)
        if notice is not None:
            await notify(settings, *notice)
