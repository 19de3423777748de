"""Staff notices: held, missed and failed sends, and each send's summary, mailed and logged.

Notices go through the configured provider to the ``[notify] staff``
addresses; a notice that cannot be delivered is logged, never raised: a
failing notice must not stop the scheduler.
"""

from __future__ import annotations

import asyncio
import html
import logging
import uuid

from pipeline import messages
from pipeline.config import Settings
from pipeline.errors import NewsletterError
from pipeline.providers import Batch, Mail, make_provider
from pipeline.store import utcnow

log = logging.getLogger("newsletter.notices")


def notify_staff(settings: Settings, subject: str, body: str) -> bool:
    """Mail ``subject`` and ``body`` to the staff; True if every address was accepted."""
    log.info("notice: %s: %s", subject, body.replace("\n", " | "))
    staff = settings.notify.staff
    if not staff:
        return True
    label = f"notice-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    text = f"{body}\n\n-- \n{settings.publication.name} newsletter pipeline\n"
    mail = Mail(label=label, subject=f"[{settings.publication.name}] {subject}", text=text,
                html=f"<!doctype html><html><body><pre>{html.escape(text)}</pre></body></html>",
                sender=settings.publication.from_, reply_to=settings.publication.reply_to,
                list_id=messages.list_id(settings))
    people = tuple(messages.recipient(settings, label=label, delivery_id=number, email=address, name="",
                                      unsubscribe_url=f"{settings.publication.base_url}/",
                                      view_url=f"{settings.publication.base_url}/")
                   for number, address in enumerate(staff, start=1))
    try:
        outcomes = asyncio.run(_send(settings, Batch(id=uuid.uuid4().hex, mail=mail, recipients=people)))
    except NewsletterError as exc:
        log.error("the notice %r could not be sent: %s", subject, exc)
        return False
    failed = [outcome for outcome in outcomes if outcome.status != "sent"]
    for outcome in failed:
        log.error("the notice %r was not accepted for a staff address: %s", subject, outcome.error_text)
    return not failed


async def _send(settings: Settings, batch: Batch):  # type: ignore[no-untyped-def]
    provider = make_provider(settings)
    try:
        return await provider.send(batch)
    finally:
        await provider.aclose()
