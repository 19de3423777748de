"""Mailgun: ``POST /v3/{domain}/messages``, multipart form data, batch sending.

Up to 1,000 ``to`` fields with ``recipient-variables``, so that Mailgun makes
each recipient their own message, which names nobody else. The edition travels
once, its placeholders written as recipient variables: ``%recipient.name_html%``
(the HTML-escaped name) in the HTML part, ``%recipient.name%`` in the text part,
likewise ``unsubscribe_url`` and ``view_url``.

Headers: Mailgun substitutes recipient variables in ``h:`` headers too, so a
header whose value differs between recipients — ``List-Unsubscribe`` —
is sent as ``%recipient.h_list_unsubscribe%`` with each recipient's whole value
as a variable; one every recipient shares (``List-Unsubscribe-Post``,
``List-Id``) is sent as it is. ``v:send`` and ``v:delivery``
(``%recipient.delivery%``) come back in Mailgun's events.

Answer: 200 ``{"id", "message"}`` means every recipient was queued; they all
get that id (without its angle brackets, as Mailgun's events show it).
Recipient variables are keyed by address, so the same address twice in a batch
goes out in separate requests. Mailgun has no idempotency key.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import httpx

from pipeline import placeholders
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.mail import Batch, Mail, Outcome, Recipient
from pipeline.providers.http import (
    HttpProvider,
    RetryPolicy,
    address,
    escaped_values,
    json_bytes,
    own_headers,
    post,
    read_json,
    send_parts,
    text_values,
    tokenised,
)

MAX_RECIPIENTS = 1000
REGION_URLS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


class MailgunProvider(HttpProvider):
    """Sends through Mailgun's messages API, one request per batch of up to 1,000 recipients."""

    name: ClassVar[str] = "mailgun"
    idempotent: ClassVar[bool] = False
    max_batch: ClassVar[int] = MAX_RECIPIENTS

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *,
                 policy: RetryPolicy | None = None):
        if not settings.provider.domain:
            raise ConfigError("[provider] domain is not set: Mailgun needs the sending domain (e.g. mg.example.org)",
                              path=settings.source)
        self.domain = settings.provider.domain
        super().__init__(settings, client, policy=policy)

    def default_url(self, settings: Settings) -> str:
        return REGION_URLS[settings.provider.region]

    async def send(self, batch: Batch) -> list[Outcome]:
        async def send_part(index: int, people: Sequence[Recipient]) -> list[Outcome]:
            return await self._send_part(batch.mail, people)

        return await send_parts(_unique_parts(batch.recipients, MAX_RECIPIENTS), send_part)

    def form(self, mail: Mail, people: Sequence[Recipient]) -> list[tuple[str, str]]:
        """The form fields of one request, in order (``to`` repeated)."""
        text, html = _content(mail)
        fields = [("from", mail.sender), *(("to", address(person)) for person in people),
                  ("subject", mail.subject)]
        fields += [(kind, value) for kind, value in (("text", text), ("html", html)) if value]
        if mail.reply_to:
            fields.append(("h:Reply-To", mail.reply_to))
        shared, own = _headers(people)
        fields += [(f"h:{name}", value) for name, value in (*mail.list_headers, *shared.items())]
        fields += [(f"h:{name}", f"%recipient.{variable}%") for name, variable in own.items()]
        fields += [("v:send", mail.label), ("v:delivery", "%recipient.delivery%")]
        variables = {person.email: _variables(mail, person, own) for person in people}
        fields.append(("recipient-variables", json_bytes(variables).decode()))
        return fields

    async def _send_part(self, mail: Mail, people: Sequence[Recipient]) -> list[Outcome]:
        url = f"{self.base_url}/v3/{self.domain}/messages"
        content, content_type = multipart(self.form(mail, people))
        response = await post(self.client, url, policy=self.policy, idempotent=False, key=self.key, content=content,
                              auth=("api", self.key.value),
                              headers={"Accept": "application/json", "Content-Type": content_type})
        answer = read_json(response)
        message_id = answer.get("id") if isinstance(answer, dict) else None
        message_id = message_id.strip("<>") if isinstance(message_id, str) else None
        return [Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=message_id)
                for person in people]


def multipart(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
    """The fields as one multipart/form-data body (httpx's encoding, boundary and all) and its Content-Type.

    Encoded whole before the request: handed to httpx as ``files``, 1,000 ``to`` fields go out as some
    four thousand small writes, each an await and a system call.
    """
    request = httpx.Request("POST", "http://form.invalid/", files=[(name, (None, value.encode()))
                                                                     for name, value in fields])
    return request.read(), request.headers["Content-Type"]


@functools.lru_cache(maxsize=8)
def _content(mail: Mail) -> tuple[str, str]:
    """(text, html) with recipient variables for the placeholders, worked out once per send."""
    return (tokenised(mail.text, lambda name: f"%recipient.{name}%"),
            tokenised(mail.html, lambda name: f"%recipient.{name}_html%"))


def _headers(people: Sequence[Recipient]) -> tuple[dict[str, str], dict[str, str]]:
    """Of the recipients' own headers: (those all share: name -> value, those that differ: name -> variable)."""
    headers = [own_headers(person) for person in people]
    shared: dict[str, str] = {}
    own: dict[str, str] = {}
    for name in dict.fromkeys(name for mine in headers for name in mine):
        values = {mine.get(name) for mine in headers}
        value = next(iter(values))
        if len(values) == 1 and value is not None:
            shared[name] = value
        else:
            own[name] = "h_" + name.lower().replace("-", "_")
    return shared, own


@functools.lru_cache(maxsize=8)
def _placeholders_used(mail: Mail) -> frozenset[str]:
    return frozenset(placeholders.PATTERN.findall(mail.text)) | frozenset(placeholders.PATTERN.findall(mail.html))


def _variables(mail: Mail, person: Recipient, own: dict[str, str]) -> dict[str, str]:
    used = _placeholders_used(mail)
    raw, escaped = text_values(person), escaped_values(person)
    variables = {name: raw[name] for name in placeholders.NAMES if name in used}
    variables |= {f"{name}_html": escaped[name] for name in placeholders.NAMES if name in used}
    headers = own_headers(person)
    variables |= {variable: headers.get(name, "") for name, variable in own.items()}
    variables["delivery"] = str(person.delivery_id)
    return variables


def _unique_parts(people: Sequence[Recipient], size: int) -> list[list[Recipient]]:
    """Runs of at most ``size`` recipients in which no address appears twice (variables are keyed by it)."""
    parts: list[list[Recipient]] = []
    seen: list[set[str]] = []
    for person in people:
        key = person.email.lower()
        for part, addresses in zip(parts, seen, strict=True):
            if key not in addresses and len(part) < size:
                part.append(person)
                addresses.add(key)
                break
        else:
            parts.append([person])
            seen.append({key})
    return parts
