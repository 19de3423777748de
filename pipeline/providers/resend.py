"""Resend: ``POST /emails/batch``, up to 100 personalised emails, with an idempotency key.

Every request carries ``Idempotency-Key: <batch id>`` (``<batch id>.<n>`` for
the n-th further part of a batch larger than 100), so a request whose answer
was lost may be made again: Resend sends nothing twice for the same key. That
makes this provider ``idempotent``, and ``post`` repeats a timed-out request.

Answer: 200 ``{"data": [{"id"}, ...]}`` in input order; every email is sent with
its id. Resend validates the whole batch at once: a 422 fails all of it. Tags
``send`` and ``delivery`` come back in Resend's webhooks.

Each email is spliced like Postmark's (``http.json_parts``): the edition's
pieces encoded once per send, each email its own few fields around them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from pipeline.mail import Batch, Mail, Outcome, Recipient
from pipeline.messages import personalise
from pipeline.providers.http import (
    HttpProvider,
    address,
    chunks,
    json_array,
    message_headers,
    post,
    read_json,
    send_parts,
    spliced_chunks,
)

MAX_EMAILS = 100


class ResendProvider(HttpProvider):
    """Sends through Resend's batch email API."""

    name: ClassVar[str] = "resend"
    idempotent: ClassVar[bool] = True
    max_batch: ClassVar[int] = MAX_EMAILS
    default_base_url: ClassVar[str] = "https://api.resend.com"

    async def send(self, batch: Batch) -> list[Outcome]:
        async def send_part(index: int, people: Sequence[Recipient]) -> list[Outcome]:
            key = batch.id if index == 0 else f"{batch.id}.{index}"
            return await self._send_part(batch.mail, people, key)

        return await send_parts(chunks(batch.recipients, MAX_EMAILS), send_part)

    def email(self, mail: Mail, person: Recipient) -> dict[str, Any]:
        """One recipient's email as a Resend ``SendEmailRequest`` (what ``encode`` sends, as a dict)."""
        html, text = personalise(mail, person)
        return {**_head(mail, person), "html": html, "text": text, **_tail(mail, person)}

    def encode(self, mail: Mail, person: Recipient) -> bytes:
        """``email`` as JSON, spliced: the head and tail objects encoded, the bodies joined from pieces."""
        return b"".join(_chunks(mail, person))

    async def _send_part(self, mail: Mail, people: Sequence[Recipient], idempotency_key: str) -> list[Outcome]:
        body = json_array([_chunks(mail, person) for person in people])
        response = await post(self.client, f"{self.base_url}/emails/batch", policy=self.policy, idempotent=True,
                              key=self.key, content=body,
                              headers={"Authorization": f"Bearer {self.key.value}", "Accept": "application/json",
                                       "Content-Type": "application/json", "Idempotency-Key": idempotency_key})
        answer = read_json(response)
        emails = answer.get("data") if isinstance(answer, dict) else None
        ids = [item.get("id") if isinstance(item, dict) else None for item in emails or []]
        # zip: a recipient without an id in the answer is left out, and the send records it as uncertain.
        return [Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=message_id)
                for person, message_id in zip(people, ids, strict=False)]


def _chunks(mail: Mail, person: Recipient) -> list[bytes]:
    return spliced_chunks(mail, person, _head(mail, person), ("html", "text"), _tail(mail, person))


def _head(mail: Mail, person: Recipient) -> dict[str, Any]:
    return {"from": mail.sender, "to": [address(person)], "subject": mail.subject}


def _tail(mail: Mail, person: Recipient) -> dict[str, Any]:
    tail: dict[str, Any] = {
        "headers": message_headers(mail, person),
        "tags": [{"name": "send", "value": _tag(mail.label)}, {"name": "delivery", "value": str(person.delivery_id)}],
    }
    if mail.reply_to:
        tail["reply_to"] = mail.reply_to
    return tail


def _tag(value: str) -> str:
    """Resend tags allow ASCII letters, digits, underscores and dashes only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", value)[:256]
