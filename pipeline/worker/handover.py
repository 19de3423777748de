"""Handing a send to the workers, and following it from a command until it is over.

    hand_over: move resume, runner = workers ─▶ cut into parts (once) ─▶ a job per part with rows to send
    follow:    count the settled rows every moment until the send is no longer ``sending``; say so, and stop
               following, when no worker is alive
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.config import Settings
from pipeline.errors import SendError
from pipeline.store import Store
from pipeline.store import parts as part_store
from pipeline.store import sends as db
from pipeline.store.states import SendStatus
from pipeline.worker.tasks import defer_parts

ProgressHook = Callable[[int], object]
POLL_SECONDS = 0.5


def uses_workers(store: Store, settings: Settings) -> bool:
    """Whether sends go to the workers: on PostgreSQL, unless ``[workers] enabled = false``."""
    return not store.is_sqlite and settings.workers.enabled


def hand_over(store: Store, settings: Settings, send_id: int, *, owner: str | None = None) -> int:
    """Give the send to the workers (from ``owner``, the runner whose lease it is under, if any); how many jobs
    were queued for it (parts with rows to send)."""
    parts = db.hand_to_workers(store, send_id, provider=settings.provider.name,
                               part_size=settings.workers.part_size, owner=owner)
    if not parts:  # nothing to send: the send is over now
        db.finish_if_settled(store, send_id)
        return 0
    return defer_parts(store, parts)


def follow(store: Store, settings: Settings, send_id: int, *, on_progress: ProgressHook | None = None,
           poll_seconds: float = POLL_SECONDS, unsettled: int | None = None) -> db.SendSummary:
    """Wait while the workers send it; report settled rows to ``on_progress`` (those settled since there were
    ``unsettled`` rows left, counted before it was handed over; else since the first look); the summary once it
    is no longer ``sending``. SendError, in one line, when no worker has had a heartbeat for ``stall_seconds``
    (none is running): the send waits for one, queued."""
    stall = settings.workers.stall_seconds
    left: int | None = unsettled  # rows queued or in flight at the last look
    first = True
    silent_since: float | None = None
    while True:
        status = db.send_record(store, send_id).status
        now_left = db.unsettled_count(store, send_id)
        if on_progress is not None and left is not None and now_left < left:
            on_progress(left - now_left)
        left = now_left if left is None else min(left, now_left)
        if status != SendStatus.SENDING:
            return db.summary(store, send_id)
        if part_store.live_workers(store, stall):
            silent_since = None
        elif silent_since is None:
            silent_since = time.monotonic()
        if silent_since is not None and (first or time.monotonic() - silent_since > stall):
            raise SendError(f"send {send_id} is queued for the workers, but no worker is running (none has had a "
                            f"heartbeat in the last {stall:g} s): start one with 'newsletter worker'; it sends "
                            f"from where it is ('newsletter logs {send_id}' shows it)")
        first = False
        time.sleep(poll_seconds)
