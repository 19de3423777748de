"""Mail straight to the provider, outside the delivery log: test sends of an edition, and staff notices.

Neither is the publication's newsletter to its list, so neither carries the
list's headers (``List-Id``, ``List-Unsubscribe`` ...); staff notices say ``Auto-Submitted:
auto-generated`` (RFC 3834), so that no auto-responder answers them.
"""

from __future__ import annotations

import secrets
import uuid

from pipeline import messages, urls
from pipeline.config import Settings
from pipeline.mail import Batch, Mail, Outcome
from pipeline.providers.base import Provider
from pipeline.send.pump import provider_for
from pipeline.store import utcnow


async def send_test(settings: Settings, *, edition_name: str, subject: str, html: str, text: str,
                    addresses: list[str], provider: Provider | None = None) -> list[Outcome]:
    """Send an edition to a few addresses, subject prefixed [TEST]; not recorded as the edition's send."""
    return await send_direct(settings, label=f"test-{utcnow():%Y%m%dT%H%M%S}", subject=f"[TEST] {subject}",
                             html=html, text=text, addresses=addresses, view_url=urls.edition(settings, edition_name),
                             provider=provider)


async def send_direct(settings: Settings, *, label: str, subject: str, html: str, text: str, addresses: list[str],
                      view_url: str, notice: bool = False, provider: Provider | None = None) -> list[Outcome]:
    """One batch straight to the provider (a test send, or a staff ``notice``)."""
    publication = settings.publication
    mail = Mail(label=label, subject=subject, html=html, text=text, sender=publication.from_,
                reply_to=publication.reply_to)
    nonce = secrets.token_hex(8)
    recipients = tuple(
        messages.direct_recipient(settings, label=label, delivery_id=number, email=address, view_url=view_url,
                                  nonce=nonce, notice=notice)
        for number, address in enumerate(addresses, start=1)
    )
    async with provider_for(settings, provider) as chosen:
        return await chosen.send(Batch(id=uuid.uuid4().hex, mail=mail, recipients=recipients))
