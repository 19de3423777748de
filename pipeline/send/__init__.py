"""Sending an edition: create a send, run it under a lease, act on it; test sends and notices.

    create_send ─▶ deliveries (queued) ─▶ run_send: the pump (pump.py) under a lease (lease.py),
                                          paced by the rate limit (ratelimit.py) ─▶ provider

The exactly-once rules are in ``pump.py``; the SQL is in ``store/sends.py``.
"""

from __future__ import annotations

import datetime as dt

from pipeline.checks import Report
from pipeline.config import Settings
from pipeline.render import Edition
from pipeline.send.direct import send_direct, send_test
from pipeline.send.lease import Lease, sender_id
from pipeline.send.pump import run_send
from pipeline.store import Store
from pipeline.store import sends as db
from pipeline.store.sends import SendSummary, StoredEdition, summary
from pipeline.store.states import SendStatus

__all__ = ["Lease", "SendSummary", "cancel_send", "create_send", "pause_send", "queued_count", "resend_uncertain",
           "retry_failed", "run_send", "schedule_send", "send_direct", "send_test", "sender_id", "stored", "summary"]


def stored(edition: Edition, built_path: str) -> StoredEdition:
    """What the store keeps of an edition: the exact parts sent, its archive page, and whether to publish it."""
    return StoredEdition(name=edition.name, content_hash=edition.content_hash, subject=edition.subject,
                         built_path=built_path, email_html=edition.email_html, email_txt=edition.email_txt,
                         web_html=edition.web_html, archived=edition.draft.meta.archive)


def create_send(store: Store, settings: Settings, edition: Edition, *, built_path: str,
                override_reason: str | None = None, owner: str | None = None, report: Report | None = None) -> int:
    """A send of ``edition`` to its audience, queued now; leased to ``owner`` if given (who runs it with a
    ``Lease`` of that owner), otherwise left for whichever sender acquires it. ``report``, the checks it
    passed, is kept with the send for staff to read."""
    return db.create_send(store, stored(edition, built_path), status=SendStatus.SENDING,
                          audience=edition.draft.meta.audience, provider=settings.provider.name,
                          override_reason=override_reason, owner=owner, lease_seconds=settings.send.lease_seconds,
                          check_report=report.to_dict() if report is not None else None)


def schedule_send(store: Store, settings: Settings, edition: Edition, *, built_path: str, at: dt.datetime,
                  timezone: str, override_reason: str | None = None, report: Report | None = None) -> int:
    """A send of ``edition`` at ``at``; its draft is rebuilt and re-checked then (that report replaces
    ``report``), and its audience queued."""
    return db.create_send(store, stored(edition, built_path), status=SendStatus.SCHEDULED,
                          audience=edition.draft.meta.audience, provider=settings.provider.name,
                          scheduled_at=at.astimezone(dt.UTC), override_reason=override_reason,
                          draft_path=str(edition.draft.folder.resolve()), timezone=timezone,
                          check_report=report.to_dict() if report is not None else None)


def pause_send(store: Store, send_id: int) -> None:
    """Stop after the batch in flight; ``--resume`` continues with the queued rows."""
    db.operator_move(store, send_id, "pause", "paused by the operator")


def cancel_send(store: Store, send_id: int, reason: str = "cancelled by the operator") -> None:
    """Cancel every row not yet handed to the provider; rows in flight are still recorded."""
    db.operator_move(store, send_id, "cancel", reason)


def retry_failed(store: Store, send_id: int) -> int:
    """Queue the transient failures again (never permanent ones); how many."""
    return db.requeue(store, send_id, "retry", error_class="transient")


def resend_uncertain(store: Store, send_id: int) -> int:
    """Queue the uncertain rows again: the operator accepts that some may get the edition twice."""
    return db.requeue(store, send_id, "resend")


def queued_count(store: Store, send_id: int) -> int:
    """Rows queued or in flight."""
    return db.unsettled_count(store, send_id)
