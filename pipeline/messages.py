"""Per-recipient messages: placeholders filled, unsubscribe links signed, headers set.

The edition is compiled once; here each recipient only gets their own values:
their name (HTML-escaped in the HTML part), an unsubscribe URL
(``<base_url>/u/<token>``, the token an opaque seal of subscriber and send, see
``tokens.py``) and the view-in-browser URL. Every message carries
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058 one-click),
``List-Id`` and a ``Message-ID`` unique to its delivery.
"""

from __future__ import annotations

import hashlib
from email.utils import parseaddr
from functools import lru_cache
from urllib.parse import urlsplit

from pipeline import placeholders, tokens, urls
from pipeline.config import Settings
from pipeline.errors import SendError
from pipeline.mail import Mail, Recipient, sendable


def _secret(settings: Settings) -> str:
    if settings.secret is None:
        raise SendError("no signing secret for unsubscribe links: set NEWSLETTER_SECRET or NEWSLETTER_SECRET_FILE")
    return settings.secret.get_secret_value()


@lru_cache(maxsize=64)  # the publication's few addresses, parsed once rather than twice per recipient
def _bare_address(value: str) -> str:
    return parseaddr(value)[1]


def unsubscribe_token(settings: Settings, subscriber_id: int, send_id: int) -> str:
    """An opaque token naming the subscriber and the send they unsubscribe from."""
    return tokens.seal(_secret(settings), "unsubscribe", subscriber_id, send_id)


def read_unsubscribe_token(settings: Settings, token: str) -> tuple[int, int] | None:
    """(subscriber id, send id) of a genuine token; None for a forged or damaged one."""
    found = tokens.unseal(_secret(settings), "unsubscribe", token, 2)
    return None if found is None else (found[0], found[1])


def sender_domain(settings: Settings) -> str:
    return _bare_address(settings.publication.from_).rpartition("@")[2] or "localhost"


def list_id(settings: Settings) -> str:
    """RFC 2919 List-Id: the publication's name and a stable id under its own domain."""
    publication = settings.publication
    return _list_id(publication.name, publication.base_url, publication.from_)


@lru_cache(maxsize=16)  # asked for every recipient's headers
def _list_id(publication: str, base_url: str, sender: str) -> str:
    host = urlsplit(base_url).hostname or _bare_address(sender).rpartition("@")[2] or "localhost"
    name = publication.replace('"', "'")
    return f'"{name}" <{_slug(publication)}.{host}>'


def list_headers(settings: Settings, *, label: str, edition: str) -> tuple[tuple[str, str], ...]:
    """The headers every message of a send of ``edition`` to the list shares: RFC 2919 ``List-Id``, RFC 2369
    ``List-Archive``, and Gmail's ``Feedback-ID`` (``send:edition:newsletter:publication``, so that its
    feedback loop reports complaints per send; ASCII, and nothing personal)."""
    publication = _slug(settings.publication.name)
    feedback = ":".join(part[:40] for part in (_slug(label), _slug(edition), "newsletter", publication))
    return (("List-Id", list_id(settings)), ("List-Archive", f"<{urls.archive(settings)}>"),
            ("Feedback-ID", feedback))


def _slug(text: str) -> str:
    return "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def message_id(settings: Settings, label: str, delivery_id: int, nonce: str) -> str:
    """A Message-ID for one delivery: stable across its retries, so a retried delivery is recognisably the same
    message, and unique to its send by ``nonce`` (random per send), so a fresh or restored database never
    reuses one for other mail (Gmail drops a message whose id it has seen)."""
    digest = hashlib.sha256(f"{nonce}|{settings.publication.base_url}|{label}|{delivery_id}".encode()).hexdigest()
    return f"<{label}.{delivery_id}.{digest[:16]}@{sender_domain(settings)}>"


def recipient(settings: Settings, *, label: str, delivery_id: int, email: str, name: str, unsubscribe_url: str,
              view_url: str, nonce: str) -> Recipient:
    """A recipient with their values and the headers every message must carry."""
    sender = _bare_address(settings.publication.reply_to or settings.publication.from_)
    headers = {
        "List-Unsubscribe": f"<{unsubscribe_url}>, <mailto:{sender}?subject=unsubscribe>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Message-ID": message_id(settings, label, delivery_id, nonce),
    }
    values = {
        placeholders.NAME: name.strip() or placeholders.NAME_FALLBACK,
        placeholders.UNSUBSCRIBE_URL: unsubscribe_url,
        placeholders.VIEW_URL: view_url,
    }
    return Recipient(delivery_id=delivery_id, email=sendable(email), name=name, values=values, headers=headers)


def personalise(mail: Mail, person: Recipient) -> tuple[str, str]:
    """(html, text) of one recipient's message: the parts, split at their placeholders once per text, joined
    with the recipient's values (HTML-escaped in the HTML part). The providers that send a message per
    recipient splice already encoded pieces instead (``providers.http.json_parts``, ``mime``)."""
    return (placeholders.template(mail.html).fill(person.values, escape=True),
            placeholders.template(mail.text).fill(person.values, escape=False))


def direct_recipient(settings: Settings, *, label: str, delivery_id: int, email: str, view_url: str, nonce: str,
                     notice: bool) -> Recipient:
    """A recipient of a test send or a staff notice: not a subscriber, so no list headers; a notice is
    ``Auto-Submitted: auto-generated`` (RFC 3834). The unsubscribe link of an edition's body leads home."""
    headers = {"Message-ID": message_id(settings, label, delivery_id, nonce)}
    if notice:
        headers["Auto-Submitted"] = "auto-generated"
    values = {
        placeholders.NAME: placeholders.NAME_FALLBACK,
        placeholders.UNSUBSCRIBE_URL: urls.home(settings),
        placeholders.VIEW_URL: view_url,
    }
    return Recipient(delivery_id=delivery_id, email=sendable(email), name="", values=values, headers=headers)
