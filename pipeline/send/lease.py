"""A sender's lease on its send, renewed on a timer for as long as the sender lives.

A send is owned by one sender at a time: ``sends.runner`` names it (host, pid
and a random id, one per sender) until ``sends.lease_until``. A thread extends
the lease every third of its length, whatever the sender is doing — waiting on
the rate limit, on a slow provider, on the disk — so a live sender is never
taken for a dead one (APScheduler's ``extend_acquired_job_leases`` is the
model). Another sender may take the send over only once the lease has expired:
the sender died, or lost its database for longer than a lease.

If a renewal finds the send no longer ours, or the lease runs out before one
succeeds, the lease is ``lost``: the sender takes no new batch, and its claims
and outcome writes, which check ownership in their own transactions, change
nothing.

A worker's job holds the same kind of lease on one ``part`` of a send (``store/parts.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType

from pipeline.errors import StoreError
from pipeline.store import Store, parts
from pipeline.store.sends import renew_lease

log = logging.getLogger("newsletter.send")


def sender_id() -> str:
    """A name for one sender: where it runs, and a random part no other sender shares."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """``owner``'s lease on ``send_id`` (or on that ``part`` of it), ``seconds`` long; ``keep()`` renews it
    until ``stop()``."""

    def __init__(self, store: Store, send_id: int, *, seconds: float, owner: str | None = None,
                 part: parts.Part | None = None):
        self.store, self.send_id, self.seconds, self.part = store, send_id, seconds, part
        self.owner = owner or sender_id()
        self.lost = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._valid_until = time.monotonic() + seconds

    def keep(self) -> Lease:
        """Start renewing (the lease must be held already: taken with ``acquire`` or a claim)."""
        if self._thread is None:
            self._valid_until = time.monotonic() + self.seconds
            self._thread = threading.Thread(target=self._renew, name=f"lease-{self.send_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Lease:
        return self.keep()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def _renew(self) -> None:
        while not self._stopping.wait(self.seconds / 3):
            started = time.monotonic()
            try:
                kept = (renew_lease(self.store, self.send_id, self.owner, lease_seconds=self.seconds)
                        if self.part is None else parts.renew(self.store, self.part, self.owner,
                                                              lease_seconds=self.seconds))
            except StoreError as exc:
                if time.monotonic() < self._valid_until:
                    log.warning("send %s: cannot renew the lease yet (%s); trying again", self.send_id, exc)
                    continue
                kept = False
            if not kept:
                log.error("send %s: the lease is lost; this sender takes no more batches", self.send_id)
                self.lost.set()
                return
            self._valid_until = started + self.seconds
