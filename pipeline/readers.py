"""What readers do for themselves: leave in one click, sign up with double opt-in, change or erase their data.

The web pages (``pipeline/web/reader.py``) are a thin layer over this. Links carry
opaque tokens (``tokens.py``): an unsubscribe token names a subscriber and the
send it came in, a preferences token a subscriber, a confirmation token a signup
and the time it was asked for, so it expires (``[web] confirm_hours``).

A signup answers the same whether or not the address is known; it mails a
confirmation through the configured provider (a message to one person, outside
the newsletter's delivery log and without its list headers), at most once per
``[web] resend_minutes`` for an address whose signup is still waiting.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from pipeline import tokens, urls
from pipeline.config import Settings
from pipeline.errors import SubscriberError
from pipeline.oneline import breaking_character
from pipeline.providers.base import Provider
from pipeline.send.direct import send_direct
from pipeline.store import Store
from pipeline.store import readers as db

MAX_NAME = 200
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, kw_only=True)
class ConfirmationMail:
    """The confirmation message of a signup, composed by the caller (the web side has the templates)."""

    subject: str
    html: str
    text: str


def _secret(settings: Settings) -> str:
    if settings.secret is None:
        raise SubscriberError("no signing secret: set NEWSLETTER_SECRET or NEWSLETTER_SECRET_FILE")
    return settings.secret.get_secret_value()


def preferences_token(settings: Settings, subscriber_id: int) -> str:
    return tokens.seal(_secret(settings), "preferences", subscriber_id)


def read_preferences_token(settings: Settings, token: str) -> int | None:
    found = tokens.unseal(_secret(settings), "preferences", token, 1)
    return None if found is None else found[0]


def confirm_token(settings: Settings, signup_id: int, asked_at: dt.datetime) -> str:
    return tokens.seal(_secret(settings), "confirm", signup_id, int((asked_at - _EPOCH).total_seconds()))


@dataclass(frozen=True)
class ConfirmToken:
    signup_id: int
    expired: bool


def read_confirm_token(settings: Settings, token: str, now: dt.datetime) -> ConfirmToken | None:
    """The signup a genuine confirmation token names, and whether it is older than ``[web] confirm_hours``."""
    found = tokens.unseal(_secret(settings), "confirm", token, 2)
    if found is None:
        return None
    asked = _EPOCH + dt.timedelta(seconds=found[1])
    return ConfirmToken(found[0], now - asked > dt.timedelta(hours=settings.web.confirm_hours))


def checked_email(text: str) -> tuple[str, str]:
    """(address as given, its key) of a signup form's address; SubscriberError saying what is wrong."""
    text = text.strip()
    if not text:
        raise SubscriberError("enter your email address")
    if len(text) > 320 or breaking_character(text):
        raise SubscriberError("this is not an email address")
    try:
        found = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise SubscriberError(f"this is not an email address: {exc}") from None
    return found.normalized, found.normalized.lower()


def checked_name(text: str) -> str:
    name = text.strip()
    if len(name) > MAX_NAME:
        raise SubscriberError(f"the name is {len(name)} characters long; the most is {MAX_NAME}")
    if breaking_character(name):
        raise SubscriberError("the name must be one line")
    return name


def checked_topics(settings: Settings, chosen: list[str]) -> tuple[str, ...]:
    offered = settings.web.topics
    unknown = [topic for topic in chosen if topic not in offered]
    if unknown:
        raise SubscriberError(f"unknown topic {unknown[0]!r}")
    return tuple(sorted(set(chosen)))


async def request_signup(settings: Settings, store: Store, *, email: str, key: str, name: str,
                         topics: tuple[str, ...], now: dt.datetime, compose: Callable[[str], ConfirmationMail],
                         provider: Provider | None = None) -> bool:
    """Record a signup and mail its confirmation link when due; True when a message was sent now.

    ``compose`` makes the message from the confirmation URL. A provider that fails raises its
    ``ProviderError``; the signup stays, and the next attempt mails it again.
    """
    web = settings.web
    ticket = db.open_signup(store, email=email, email_key=key, name=name, tags=topics, now=now,
                            valid_for=dt.timedelta(hours=web.confirm_hours),
                            resend_after=dt.timedelta(minutes=web.resend_minutes))
    if not ticket.due:
        return False
    mail = compose(urls.confirm(settings, confirm_token(settings, ticket.id, ticket.created_at)))
    outcomes = await send_direct(settings, label=f"signup-{ticket.id}", subject=mail.subject, html=mail.html,
                                 text=mail.text, addresses=[email], view_url=urls.home(settings), notice=True,
                                 provider=provider)
    if any(outcome.status == "sent" for outcome in outcomes):
        db.mark_mailed(store, ticket.id, now)
        return True
    detail = "; ".join(filter(None, (outcome.error_text for outcome in outcomes)))
    raise SubscriberError(f"the confirmation could not be sent: {detail or 'the provider did not accept it'}")
