"""The records a send hands to a mail provider, and what it gets back.

    Mail (what every recipient of a send shares) + Recipient (one person's values and headers)
      = Batch ─▶ Provider.send ─▶ Outcome per recipient

They live apart from the providers and the sender so that both, and the
message builders between them (``messages``, ``mime``), depend on this module
and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from email_validator import EmailNotValidError, validate_email

OutcomeStatus = Literal["sent", "failed", "uncertain", "queued"]


@dataclass(frozen=True, kw_only=True)
class Mail:
    """What every recipient of one send shares: the edition's parts, with placeholders, and the headers of the
    list it is sent to (List-Id, List-Archive, Feedback-ID; none for a test send or a staff notice)."""

    label: str  # the send's id, or "test-..." for a test send
    subject: str
    html: str
    text: str
    sender: str
    reply_to: str | None
    list_headers: tuple[tuple[str, str], ...] = ()  # (name, value), hashable: a Mail keys per-send caches


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """One recipient of a batch: the delivery row, their values and their own headers.

    ``email`` is the address as mail is sent to it: an internationalised domain in its
    ASCII (IDNA) form, so that only a local part that is not ASCII needs SMTPUTF8.
    """

    delivery_id: int
    email: str
    name: str
    values: dict[str, str]  # placeholder name -> value (name, unsubscribe_url, view_url)
    headers: dict[str, str]  # Message-ID, and List-Unsubscribe(-Post) or Auto-Submitted: every one is sent

    @property
    def needs_smtputf8(self) -> bool:
        """Whether the address can only be sent to with SMTPUTF8 (RFC 6531): its local part is not ASCII."""
        return not self.email.isascii()


@dataclass(frozen=True, kw_only=True)
class Batch:
    """Recipients handed to the provider at once; ``id`` doubles as the idempotency key."""

    id: str
    mail: Mail
    recipients: tuple[Recipient, ...]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What the provider did with one recipient."""

    delivery_id: int
    status: OutcomeStatus  # queued: not accepted, to be sent again
    provider_message_id: str | None = None
    error_class: str | None = None  # "permanent" or "transient" for failures
    error_text: str | None = None
    suppress: bool = field(default=False)  # the provider says the address must not be mailed again


def sendable(address: str) -> str:
    """``address`` as mail is sent to it: the domain in IDNA (``eve@xn--bcher-kva.de`` for ``eve@bücher.de``)
    when the local part is ASCII; unchanged otherwise, or when it is not an address at all (the provider says
    so for that one recipient)."""
    return address if address.isascii() else _internationalised(address)


@lru_cache(maxsize=4096)
def _internationalised(address: str) -> str:
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return address
    return checked.ascii_email or checked.normalized
