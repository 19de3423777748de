"""The one error root of the pipeline.

    NewsletterError
    ├── ConfigError        newsletter.toml is missing or invalid
    ├── DraftError         a draft directory cannot be read
    ├── RenderError        a template or the MJML/CSS stages failed
    ├── ChecksFailed       pre-flight checks found errors (exit code 1)
    ├── StoreError         the database cannot be opened or used
    │   └── StoreUnavailable    it did not answer (connection refused or lost): trying again may succeed
    ├── SubscriberError    a subscriber file or address cannot be used
    ├── SendError          a send cannot start, resume or change state
    │   └── SendBusy           another sender holds the send's lease
    ├── ScheduleError      a time or a schedule cannot be used
    ├── ProviderError      the mail provider refused or failed
    │   ├── ProviderRejected     it refused the request as invalid (400, 413, 422): not retried
    │   ├── ProviderAuthError    it refused the key (401, 403): the whole send stops
    │   ├── ProviderUnavailable  it could not be reached or was overloaded, before accepting anything
    │   └── ProviderAmbiguous    no answer after the request was sent: it may have accepted the batch
    ├── PreviewError       the headless browser could not take a screenshot
    └── WebhookError       a provider's webhook request cannot be taken
        ├── WebhookUnsigned      its signature, credentials or timestamp do not hold (401)
        └── WebhookMalformed     its body is not the provider's JSON (400)

Each error builds its one-line message from its context (file, line), so the
command line prints it as it is and exits with ``exit_code``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path


class NewsletterError(Exception):
    """Anything the pipeline reports to a person as one line."""

    exit_code = 2

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None):
        self.path, self.line, self.reason = path, line, message
        where = "" if path is None else (f"{path}:{line}: " if line else f"{path}: ")
        super().__init__(f"{where}{message}")


class ConfigError(NewsletterError):
    """The settings file is missing, unreadable or invalid."""


class DraftError(NewsletterError):
    """A draft directory, its front matter or its body cannot be used."""


class RenderError(NewsletterError):
    """A template failed to render, or MJML or the CSS inliner rejected the result."""


class ChecksFailed(NewsletterError):
    """The pre-flight checks found errors, so the edition may not be sent."""

    exit_code = 1


class StoreError(NewsletterError):
    """The database cannot be opened, migrated or used."""


class StoreUnavailable(StoreError):
    """The database did not answer: the connection was refused or lost (a restart, a network cut). The
    transaction was rolled back, or its commit may not have been acknowledged: only an operation that is
    safe to repeat is tried again."""


class StoreConflict(StoreUnavailable):
    """The database rolled the transaction back to resolve a conflict with another one (PostgreSQL found a
    deadlock, or could not serialise the two): nothing of it was written, and the whole of it may be tried
    again as it was."""


class SubscriberError(NewsletterError):
    """A subscriber file or address cannot be used."""


class SendError(NewsletterError):
    """A send cannot be started, resumed, paused or cancelled as asked."""


class SendBusy(SendError):
    """Another sender owns the send: its lease has not expired."""

    def __init__(self, send_id: int, runner: str, until: dt.datetime):
        self.send_id, self.runner, self.until = send_id, runner, until
        super().__init__(f"send {send_id} is being sent by {runner} (its lease runs until {until:%H:%M:%S} UTC, "
                         "and is renewed while that sender lives); it can be resumed once that sender stops")


class ScheduleError(NewsletterError):
    """A time cannot be read, does not exist, is ambiguous or past; a schedule cannot change."""


class ProviderError(NewsletterError):
    """The mail provider refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, body: str = ""):
        self.status, self.body = status, body
        super().__init__(message)


class ProviderRejected(ProviderError):
    """The provider refused the request as invalid; sending it again would fail again."""


class ProviderAuthError(ProviderError):
    """The provider refused the credentials: nothing can be sent until they are fixed."""


class ProviderUnavailable(ProviderError):
    """The provider could not be reached, or was overloaded, and accepted nothing."""


class ProviderAmbiguous(ProviderError):
    """The request went out but no answer came: the provider may or may not have accepted it."""


class PreviewError(NewsletterError):
    """The headless browser could not be started or could not take a screenshot."""


class WebhookError(NewsletterError):
    """A webhook request that is not taken; ``status`` is the HTTP answer."""

    status = 400


class WebhookUnsigned(WebhookError):
    status = 401


class WebhookMalformed(WebhookError):
    status = 400
