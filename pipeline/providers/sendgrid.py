"""SendGrid: ``POST /v3/mail/send``, the edition once and a personalization per recipient.

The content travels once per request. Its placeholders become SendGrid
substitution keys, and each personalization carries the recipient's values.
SendGrid substitutes in the subject and in every content part alike, so the
HTML and the text part use different keys — ``-name_html-`` holds the
HTML-escaped name, ``-name-`` the name as it is (likewise ``-unsubscribe_url-``
and ``-view_url-``) — and the result is exactly what ``personalise`` makes.
Should the edition itself contain one of those keys, a numbered variant
(``-name1-`` ...) is used instead.

Answer: 202 means SendGrid accepted every personalization; each recipient's
``provider_message_id`` is the request's ``X-Message-Id`` (SendGrid's event
``sg_message_id`` starts with it; ``custom_args.delivery`` names the row).
SendGrid has no idempotency key.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, ClassVar

from pipeline import placeholders
from pipeline.mail import Batch, Mail, Outcome, Recipient
from pipeline.providers.http import (
    HttpProvider,
    chunks,
    escaped_values,
    json_bytes,
    own_headers,
    post,
    send_parts,
    text_values,
    tokenised,
)

MAX_PERSONALIZATIONS = 1000
_PROBE = {name: f"\x00{name}\x00" for name in placeholders.NAMES}


@dataclass(frozen=True, kw_only=True)
class Content:
    """A send's parts with substitution keys, and which keys each part uses."""

    text: str
    html: str
    text_keys: dict[str, str]  # placeholder name -> key, for the placeholders the text part uses
    html_keys: dict[str, str]


class SendGridProvider(HttpProvider):
    """Sends through SendGrid's v3 mail send API."""

    name: ClassVar[str] = "sendgrid"
    idempotent: ClassVar[bool] = False
    max_batch: ClassVar[int] = MAX_PERSONALIZATIONS
    default_base_url: ClassVar[str] = "https://api.sendgrid.com"

    async def send(self, batch: Batch) -> list[Outcome]:
        async def send_part(index: int, people: Sequence[Recipient]) -> list[Outcome]:
            return await self._send_part(batch.mail, people)

        return await send_parts(chunks(batch.recipients, MAX_PERSONALIZATIONS), send_part)

    def request_body(self, mail: Mail, people: Sequence[Recipient]) -> dict[str, Any]:
        """The v3 mail send body: shared parts once, a personalization per recipient."""
        content = substitution_content(mail)
        body: dict[str, Any] = {
            "personalizations": [_personalization(mail, content, person) for person in people],
            "from": _mailbox(mail.sender),
            "subject": mail.subject,
            # SendGrid requires text/plain before text/html; empty parts are not allowed.
            "content": [{"type": kind, "value": value}
                        for kind, value in (("text/plain", content.text), ("text/html", content.html)) if value],
        }
        if mail.list_headers:  # the list's headers, the same for everyone
            body["headers"] = dict(mail.list_headers)
        if mail.reply_to:
            body["reply_to"] = _mailbox(mail.reply_to)
        return body

    async def _send_part(self, mail: Mail, people: Sequence[Recipient]) -> list[Outcome]:
        body = json_bytes(self.request_body(mail, people))
        response = await post(self.client, f"{self.base_url}/v3/mail/send", policy=self.policy, idempotent=False,
                              key=self.key, content=body,
                              headers={"Authorization": f"Bearer {self.key.value}", "Accept": "application/json",
                                       "Content-Type": "application/json"})
        message_id = response.headers.get("X-Message-Id")
        return [Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=message_id)
                for person in people]


@functools.lru_cache(maxsize=8)
def substitution_content(mail: Mail) -> Content:
    """The mail's parts with substitution keys, worked out once per send (cached per Mail)."""
    for number in itertools.count():
        suffix = str(number) if number else ""
        text_keys = {name: f"-{name}{suffix}-" for name in placeholders.NAMES}
        html_keys = {name: f"-{name}_html{suffix}-" for name in placeholders.NAMES}
        text, html = tokenised(mail.text, text_keys.__getitem__), tokenised(mail.html, html_keys.__getitem__)
        keys = [*text_keys.items(), *html_keys.items()]
        if (_substituted(text, keys) == placeholders.PATTERN.sub(lambda m: _PROBE[m[1]], mail.text)
                and _substituted(html, keys) == placeholders.PATTERN.sub(lambda m: _PROBE[m[1]], mail.html)
                and _substituted(mail.subject, keys) == mail.subject):
            return Content(text=text, html=html, text_keys=_used(mail.text, text_keys),
                           html_keys=_used(mail.html, html_keys))
    raise AssertionError("unreachable")  # pragma: no cover


def _substituted(text: str, keys: list[tuple[str, str]]) -> str:
    """What SendGrid would make of ``text`` with probe values: it must be the placeholders, nothing else."""
    for name, key in keys:
        text = text.replace(key, _PROBE[name])
    return text


def _used(text: str, keys: dict[str, str]) -> dict[str, str]:
    found = set(placeholders.PATTERN.findall(text))
    return {name: key for name, key in keys.items() if name in found}


def _personalization(mail: Mail, content: Content, person: Recipient) -> dict[str, Any]:
    raw, escaped = text_values(person), escaped_values(person)
    substitutions = {key: raw[name] for name, key in content.text_keys.items()}
    substitutions |= {key: escaped[name] for name, key in content.html_keys.items()}
    headers = own_headers(person)
    return {
        "to": [_recipient(person)],
        "substitutions": substitutions,
        "headers": headers,
        "custom_args": {"send": mail.label, "delivery": str(person.delivery_id)},
    }


def _recipient(person: Recipient) -> dict[str, str]:
    # SendGrid mis-parses a to.name holding a comma or semicolon (sendgrid-ruby#77): drop them.
    name = " ".join(person.name.replace(",", " ").replace(";", " ").split())
    return {"email": person.email, "name": name} if name else {"email": person.email}


def _mailbox(value: str) -> dict[str, str]:
    name, email = parseaddr(value)
    return {"email": email, "name": name} if name else {"email": email}
