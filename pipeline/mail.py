"""The records a send hands to a mail provider, and what it gets back.

    Mail (what every recipient of a send shares) + Recipient (one person's values and headers)
      = Batch ─▶ Provider.send ─▶ Outcome per recipient

They live apart from the providers and the sender so that both, and the
message builders between them (``messages``, ``mime``), depend on this module
and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

OutcomeStatus = Literal["sent", "failed", "uncertain", "queued"]


@dataclass(frozen=True, kw_only=True)
class Mail:
    """What every recipient of one send shares: the edition's parts, with placeholders."""

    label: str  # the send's id, or "test-..." for a test send
    subject: str
    html: str
    text: str
    sender: str
    reply_to: str | None
    list_id: str


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """One recipient of a batch: the delivery row, their values and their own headers."""

    delivery_id: int
    email: str
    name: str
    values: dict[str, str]  # placeholder name -> value (name, unsubscribe_url, view_url)
    headers: dict[str, str]  # List-Unsubscribe, List-Unsubscribe-Post, Message-ID ...


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
