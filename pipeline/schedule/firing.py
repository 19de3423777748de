"""What a scheduler job does: fire a due send, or resume one whose sender's lease expired.

    fire: claim (move fire, under a new lease) ─▶ rebuild and re-check the draft ─▶ held | queue the audience
          ─▶ run the send under that same lease ─▶ staff notice

Both run in a scheduler thread, the one place below the CLI that starts an
event loop. A send another runner holds is left to it, quietly: only what an
operator must act on becomes a notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from pipeline import send
from pipeline.config import Settings
from pipeline.errors import NewsletterError, SendBusy
from pipeline.notices import notify_staff, summary_notice
from pipeline.prepare import checked
from pipeline.store import Store
from pipeline.store import sends as db
from pipeline.worker import hand_over, uses_workers

log = logging.getLogger("newsletter.schedule")
StopCheck = Callable[[], bool]


def fire(store: Store, settings: Settings, send_id: int, should_stop: StopCheck = lambda: False) -> None:
    """Claim a due send, rebuild and re-check it, then send it (or hold it, saying why)."""
    lease = send.Lease(store, send_id, seconds=settings.send.lease_seconds)
    if not db.claim_scheduled(store, send_id, lease.owner, lease_seconds=lease.seconds):
        log.info("send %s: already taken by another runner or no longer scheduled", send_id)
        return
    lease.keep()  # rebuilding and checking links can take longer than a lease
    try:
        queued = _rebuild_and_queue(store, settings, send_id, lease)
    except Exception as exc:  # noqa: BLE001 - whatever broke the rebuild, the send is held and staff told why
        queued = _hold(store, settings, send_id, lease, f"the draft could not be rebuilt: {type(exc).__name__}: "
                                                          f"{exc}")
    except BaseException:
        lease.stop()  # the lease runs out and the next runner fires the send again (move refire)
        raise
    if not queued:
        lease.stop()
        return
    _send(store, settings, send_id, should_stop, lease)


def _rebuild_and_queue(store: Store, settings: Settings, send_id: int, lease: send.Lease) -> bool:
    """Rebuild and re-check the draft, then queue the audience; False if the send was held instead."""
    record = db.send_record(store, send_id)
    try:
        if not record.draft_path:
            raise NewsletterError("the send has no draft to rebuild")
        build, report = asyncio.run(checked(Path(record.draft_path), settings,
                                            offline=settings.schedule.offline_checks))
    except NewsletterError as exc:
        return _hold(store, settings, send_id, lease, f"the draft could not be built: {exc}")
    # An operator's override holds for the content it was given for, not for a changed draft.
    forced = record.override_reason and record.content_hash == build.edition.content_hash
    if not report.ok and not forced:
        problems = "; ".join(f"{problem.location}: {problem.message}" for problem in report.errors[:5])
        return _hold(store, settings, send_id, lease, f"{len(report.errors)} check error(s) at send time: {problems}")
    edition = build.edition
    if not db.queue_fired(store, send_id, lease.owner, send.stored(edition, str(build.folder)),
                          audience=edition.draft.meta.audience, provider=settings.provider.name,
                          check_report=report.to_dict()):
        log.warning("send %s: the lease was lost while the draft was rebuilt; left to whoever holds it", send_id)
        return False
    log.info("send %s: %s firing (content %s)", send_id, edition.name, edition.content_hash[:12])
    return True


def _hold(store: Store, settings: Settings, send_id: int, lease: send.Lease, reason: str) -> bool:
    lease.stop()
    if db.move(store, send_id, "hold", reason, owner=lease.owner):
        log.warning("send %s held: %s", send_id, reason)
        notify_staff(settings, f"Send {send_id} held: nothing was sent", reason)
    return False


def resume(store: Store, settings: Settings, send_id: int, should_stop: StopCheck = lambda: False) -> None:
    """Take over a send whose sender's lease expired, and send it to the end."""
    _send(store, settings, send_id, should_stop, None)


def _send(store: Store, settings: Settings, send_id: int, should_stop: StopCheck, lease: send.Lease | None) -> None:
    """Send (or resume) ``send_id`` to the end, then tell the staff how it went; on PostgreSQL, hand it to the
    workers instead (the job that ends it tells the staff)."""
    if uses_workers(store, settings):
        _hand_over(store, settings, send_id, lease)
        return
    try:
        summary = asyncio.run(send.run_send(store, settings, send_id, should_stop=should_stop, lease=lease))
    except SendBusy as exc:  # another runner was first: it is that runner's send now
        log.info("%s", exc)
        return
    except NewsletterError as exc:
        log.error("send %s: %s", send_id, exc)
        notify_staff(settings, f"Send {send_id} failed", f"Send {send_id} could not go on: {exc}")
        return
    notice = summary_notice(summary)
    if notice is not None:
        notify_staff(settings, *notice)


def _hand_over(store: Store, settings: Settings, send_id: int, lease: send.Lease | None) -> None:
    owner = None
    if lease is not None:  # the runner that fired it hands it over: no more renewals, the workers own it now
        lease.stop()
        owner = lease.owner
    try:
        jobs = hand_over(store, settings, send_id, owner=owner)
    except SendBusy as exc:
        log.info("%s", exc)
        return
    except NewsletterError as exc:
        log.error("send %s: %s", send_id, exc)
        notify_staff(settings, f"Send {send_id} failed", f"Send {send_id} could not be handed to the workers: {exc}")
        return
    log.info("send %s: handed to the workers (%d job(s) queued)", send_id, jobs)
