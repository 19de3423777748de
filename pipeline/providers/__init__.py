"""Mail providers behind one small interface, registered by name.

A provider takes a ``Batch`` — what every recipient of a send shares, plus the
recipients with their own values — and returns one ``Outcome`` per recipient.
``idempotent`` says whether the provider honours an idempotency key, so that a
batch in flight at a crash may be handed over again without sending twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from pipeline.config import Settings
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import httpx


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
    status: Literal["sent", "failed", "uncertain", "queued"]  # queued: not accepted, to be sent again
    provider_message_id: str | None = None
    error_class: str | None = None  # "permanent" or "transient" for failures
    error_text: str | None = None
    suppress: bool = field(default=False)  # the provider says the address must not be mailed again


class Provider(Protocol):
    """A mail provider: hand it batches, close it when done."""

    name: ClassVar[str]
    idempotent: ClassVar[bool]
    max_batch: ClassVar[int]

    async def send(self, batch: Batch) -> list[Outcome]: ...

    async def aclose(self) -> None: ...


def _outbox(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.outbox import OutboxProvider

    return OutboxProvider(settings.paths.outbox)


def _postmark(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.postmark import PostmarkProvider

    return PostmarkProvider(settings, client)


def _sendgrid(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.sendgrid import SendGridProvider

    return SendGridProvider(settings, client)


def _mailgun(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.mailgun import MailgunProvider

    return MailgunProvider(settings, client)


def _resend(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.resend import ResendProvider

    return ResendProvider(settings, client)


# name -> factory(settings, client=None); an HTTP provider uses the client given, or makes (and closes) its own.
def _smtp(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    from pipeline.providers.smtp import SmtpProvider

    return SmtpProvider.from_settings(settings)


PROVIDERS: dict[str, Callable[..., Provider]] = {
    "outbox": _outbox,
    "postmark": _postmark,
    "sendgrid": _sendgrid,
    "mailgun": _mailgun,
    "resend": _resend,
    "smtp": _smtp,
}


def make_provider(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    """The provider named in ``[provider] name``; an unknown name lists the valid ones.

    ``client`` (an ``httpx.AsyncClient``) is handed to HTTP providers; tests pass one
    built on ``httpx.MockTransport``. A provider never closes a client it was given.
    """
    name = settings.provider.name
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}; choose one of: {', '.join(sorted(PROVIDERS))}",
                          path=settings.source)
    return PROVIDERS[name](settings, client)
