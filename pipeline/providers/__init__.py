"""Mail providers behind one small interface, registered by name.

A provider takes a ``Batch`` — what every recipient of a send shares, plus the
recipients with their own values — and returns one ``Outcome`` per recipient.
``idempotent`` says whether the provider honours an idempotency key, so that a
batch in flight at a crash may be handed over again without sending twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from pipeline.config import Settings
from pipeline.errors import ConfigError


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


def _outbox(settings: Settings) -> Provider:
    from pipeline.providers.outbox import OutboxProvider

    return OutboxProvider(settings.paths.outbox)


PROVIDERS: dict[str, Callable[[Settings], Provider]] = {"outbox": _outbox}


def make_provider(settings: Settings) -> Provider:
    """The provider named in ``[provider] name``; an unknown name lists the valid ones."""
    name = settings.provider.name
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}; choose one of: {', '.join(sorted(PROVIDERS))}",
                          path=settings.source)
    return PROVIDERS[name](settings)
