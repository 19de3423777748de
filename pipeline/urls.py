"""Every public address of the publication, built in one place from ``[publication] base_url``.

The emails link to these and the web routes serve them, so the two cannot drift:

    /u/<token>          unsubscribe (RFC 8058 one-click POST, or a confirmation page)
    /p/<token>          a subscriber's preferences
    /confirm/<token>    confirm a signup (double opt-in)
    /archive/<edition>/ the edition in a browser; /archive/ lists them; /archive/feed.xml
    /subscribe          the signup form
    /webhooks/<name>    a mail provider's events
    /static/<file>      the web pages' style sheet
    /staff/             the staff console (signed in)
"""

from __future__ import annotations

from urllib.parse import quote

from pipeline.config import Settings

UNSUBSCRIBE = "/u/"
PREFERENCES = "/p/"
CONFIRM = "/confirm/"
ARCHIVE = "/archive/"
SUBSCRIBE = "/subscribe"
FEED = "/archive/feed.xml"
WEBHOOKS = "/webhooks/"
STATIC = "/static/"
CONSOLE = "/staff"


def _base(settings: Settings) -> str:
    return settings.publication.base_url


def home(settings: Settings) -> str:
    return f"{_base(settings)}/"


def unsubscribe(settings: Settings, token: str) -> str:
    return f"{_base(settings)}{UNSUBSCRIBE}{token}"


def preferences(settings: Settings, token: str) -> str:
    return f"{_base(settings)}{PREFERENCES}{token}"


def confirm(settings: Settings, token: str) -> str:
    return f"{_base(settings)}{CONFIRM}{token}"


def archive(settings: Settings) -> str:
    return f"{_base(settings)}{ARCHIVE}"


def edition(settings: Settings, name: str) -> str:
    """The edition's page in the archive: the "view in browser" address."""
    return f"{_base(settings)}{ARCHIVE}{quote(name)}/"


def subscribe(settings: Settings) -> str:
    return f"{_base(settings)}{SUBSCRIBE}"


def feed(settings: Settings) -> str:
    """The archive's Atom feed."""
    return f"{_base(settings)}{FEED}"


def webhook(settings: Settings, provider: str) -> str:
    """Where ``provider`` is told to post its events."""
    return f"{_base(settings)}{WEBHOOKS}{provider}"


def static(settings: Settings, name: str) -> str:
    return f"{_base(settings)}{STATIC}{name}"


def console(settings: Settings, tail: str = "") -> str:
    """A page of the staff console: ``tail`` such as "/sends/12"."""
    return f"{_base(settings)}{CONSOLE}{tail}"


def path_of(url: str) -> str:
    """The path of one of these addresses, as the web app routes it (``base_url`` may have a path)."""
    from urllib.parse import urlsplit

    return urlsplit(url).path
