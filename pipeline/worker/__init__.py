"""Send workers on procrastinate (PostgreSQL): a send cut into parts, a job per part, any number of workers.

    send --now, send --resume, newsletter run ─▶ hand_over (handover.py): parts, a job each
    newsletter worker (run.py) ─▶ send_part (tasks.py) ─▶ pump.run_part: the part under its lease
                                  sweeper: jobs of a worker whose heartbeat stopped are queued again

The exactly-once rules are those of ``send/pump.py``; the SQL is in ``store/parts.py`` and
``store/sends.py``. On SQLite nothing here is used: sends run in-process.
"""

from pipeline.worker.handover import follow, hand_over, uses_workers

__all__ = ["follow", "hand_over", "uses_workers"]
