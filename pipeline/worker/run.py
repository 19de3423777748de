"""``newsletter worker``: a procrastinate worker running jobs of sends, and the sweeper of dead workers' jobs.

Every worker writes a heartbeat to ``procrastinate_workers`` every ``heartbeat_seconds``. Procrastinate
has no process that retries the jobs of a worker that died; here each worker is one: every
``heartbeat_seconds`` it takes the jobs still ``doing`` under a worker silent for ``stall_seconds`` and
queues them again, then forgets that worker. The job run again waits for the part's lease to expire and
handles the rows left in flight by the exactly-once rules (``send/pump.py``).

SIGTERM or SIGINT: no new job; each job in progress finishes the batch it has in flight, queues its part
again for another worker, and the worker exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import procrastinate
from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker

from pipeline.config import Settings
from pipeline.send.lease import sender_id
from pipeline.store import Store
from pipeline.worker.tasks import QUEUE, make_app

log = logging.getLogger("newsletter.worker")


async def run_worker(store: Store, settings: Settings, *, concurrency: int | None = None) -> int:
    """Run jobs until SIGTERM or SIGINT; ``concurrency`` jobs at once (default: ``[workers] concurrency``)."""
    options = settings.workers
    stopping = threading.Event()
    app = make_app(store)
    async with app.open_async():
        worker = Worker(app, queues=[QUEUE], name=sender_id(), concurrency=concurrency or options.concurrency,
                        install_signal_handlers=False, update_heartbeat_interval=options.heartbeat_seconds,
                        stalled_worker_timeout=options.stall_seconds,
                        additional_context={"store": store, "settings": settings, "stopping": stopping})

        def stop() -> None:
            if not stopping.is_set():
                log.info("stopping: no new job; each job finishes the batch in flight")
            stopping.set()
            worker.stop()

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        sweeper = asyncio.create_task(_sweep(app, settings))
        log.info("worker %s running %d job(s) at once; SIGTERM or Ctrl+C stops it", worker.worker_name,
                 worker.concurrency)
        try:
            await worker.run()
        finally:
            sweeper.cancel()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return 0


async def _sweep(app: procrastinate.App, settings: Settings) -> None:
    """Every heartbeat, queue again the jobs of workers whose heartbeat is ``stall_seconds`` old."""
    stall = settings.workers.stall_seconds
    while True:
        await asyncio.sleep(settings.workers.heartbeat_seconds)
        try:
            await sweep_once(app, stall)
        except ConnectorException as exc:  # the database is away: the next round tries again
            log.error("cannot look for stalled jobs: %s", exc)


async def sweep_once(app: procrastinate.App, stall_seconds: float) -> int:
    """Queue again each job of a stalled worker; how many this worker queued (another may be first)."""
    manager = app.job_manager
    retried = 0
    for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=stall_seconds):
        try:
            await manager.retry_job(job)
        except ConnectorException:  # another worker's sweeper queued it first
            continue
        retried += 1
        log.warning("job %s (%s) was running on a worker silent for %g s: queued again", job.id,
                    job.call_string, stall_seconds)
    await manager.prune_stalled_workers(stall_seconds)
    return retried
