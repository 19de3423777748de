"""Staff notices: held, missed and failed sends, and each send's summary, mailed and logged.

Notices go through the configured provider to the ``[notify] staff``
addresses, marked ``Auto-Submitted: auto-generated``; a notice that cannot be
delivered is logged, never raised: a failing notice must not stop the scheduler.
"""

from __future__ import annotations

import asyncio
import html
import logging
import uuid

from pipeline import urls
from pipeline.config import Settings
from pipeline.errors import NewsletterError
from pipeline.logs import format_counts
from pipeline.send.direct import send_direct
from pipeline.store import utcnow
from pipeline.store.sends import SendSummary

log = logging.getLogger("newsletter.notices")


async def notify(settings: Settings, subject: str, body: str) -> bool:
    """Mail ``subject`` and ``body`` to the staff; True if every address was accepted."""
    log.info("notice: %s: %s", subject, body.replace("\n", " | "))
    staff = settings.notify.staff
    if not staff:
        return True
    text = f"{body}\n\n-- \n{settings.publication.name} newsletter pipeline\n"
    try:
        outcomes = await send_direct(
            settings, label=f"notice-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            subject=f"[{settings.publication.name}] {subject}", text=text,
            html=f"<!doctype html><html><body><pre>{html.escape(text)}</pre></body></html>",
            addresses=list(staff), view_url=urls.home(settings), notice=True)
    except NewsletterError as exc:
        log.error("the notice %r could not be sent: %s", subject, exc)
        return False
    failed = [outcome for outcome in outcomes if outcome.status != "sent"]
    for outcome in failed:
        log.error("the notice %r was not accepted for a staff address: %s", subject, outcome.error_text)
    return not failed


def notify_staff(settings: Settings, subject: str, body: str) -> bool:
    """``notify`` from the scheduler's threads, which have no event loop of their own."""
    return asyncio.run(notify(settings, subject, body))


def summary_notice(summary: SendSummary) -> tuple[str, str] | None:
    """Log how a send ended; the staff notice (subject, body) to mail if it is over or stopped."""
    line = f"send {summary.send_id}: {summary.status}: {format_counts(summary.counts)}"
    log.info(line + (f" ({summary.reason})" if summary.reason else ""))
    if summary.status not in ("sent", "failed", "paused"):
        return None
    body = "\n".join([line, summary.reason, *(f"uncertain: {email}" for email in summary.uncertain[:50])])
    return f"Send {summary.send_id} {summary.status}", body.strip()
