"""Mail providers, registered by name; each lives in its own module behind ``base.Provider``.

    outbox    .eml files in a folder per send (no account needed)    outbox.py
    postmark  POST /email/batch                                       postmark.py
    sendgrid  POST /v3/mail/send                                      sendgrid.py
    mailgun   POST /v3/{domain}/messages                              mailgun.py
    resend    POST /emails/batch                                      resend.py
    smtp      any SMTP relay                                          smtp.py

A provider module is imported only when its provider is made, so that a
command that sends nothing pays for none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from pipeline.config import Settings
    from pipeline.providers.base import Provider

# name -> "module:class"; every class has ``from_settings(settings, client=None)``.
PROVIDERS: dict[str, str] = {
    "outbox": "outbox:OutboxProvider",
    "postmark": "postmark:PostmarkProvider",
    "sendgrid": "sendgrid:SendGridProvider",
    "mailgun": "mailgun:MailgunProvider",
    "resend": "resend:ResendProvider",
    "smtp": "smtp:SmtpProvider",
}

# Batches in flight when [provider] concurrency is unset, chosen by measurement (benchmarks/bench_send.py, to the
# sink): a Postmark batch is 500 whole messages, ~40 MB, and with 4 in flight the server waits whenever a batch
# ends and the next is claimed and encoded; 8 keep it fed (~6,200 -> ~7,100 recipients/s, 12 no better).
# SendGrid's and Mailgun's requests are small and Resend's are bound by their number: 4 or 8 made no difference.
CONCURRENCY: dict[str, int] = {"postmark": 8}
DEFAULT_CONCURRENCY = 4


def concurrency(settings: Settings) -> int:
    """Batches in flight at once: ``[provider] concurrency``, or what suits the provider when it is unset."""
    return settings.provider.concurrency or CONCURRENCY.get(settings.provider.name, DEFAULT_CONCURRENCY)


def check_name(name: str) -> str:
    """``name`` if it is a registered provider; an error listing the valid names otherwise."""
    if name not in PROVIDERS:
        raise ValueError(f"unknown provider {name!r}; choose one of: {', '.join(sorted(PROVIDERS))}")
    return name


def make_provider(settings: Settings, client: httpx.AsyncClient | None = None) -> Provider:
    """The provider named in ``[provider] name``.

    ``client`` (an ``httpx.AsyncClient``) is handed to HTTP providers; tests pass one
    built on ``httpx.MockTransport``. A provider never closes a client it was given.
    """
    name = settings.provider.name
    try:
        module, _, cls = PROVIDERS[check_name(name)].partition(":")
    except ValueError as exc:
        raise ConfigError(str(exc), path=settings.source) from None
    provider: Provider = getattr(import_module(f"pipeline.providers.{module}"), cls).from_settings(settings, client)
    return provider
