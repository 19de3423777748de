"""Postmark: ``POST /email/batch``, one personalised message per recipient.

Postmark answers a batch with HTTP 200 even when some messages fail; each item
of the answer (in input order) has its own ``ErrorCode``:

    0              sent (its MessageID kept)
    406            failed, permanent, and the address is suppressed (inactive recipient:
                   it bounced, complained or unsubscribed at Postmark before)
    300, 411       failed, permanent (an invalid message or attachment fails again as it is)
    anything else  failed, transient: the codes concern the account or sender (405 not
                   allowed to send, 400/401 sender signature missing or unconfirmed, 410 too
                   many batch messages, 412 account pending ...), which the operator can fix
                   without changing the message, so the row may be queued again.

A request holds at most 500 messages and 50 MB; a larger batch is split. A
message over Postmark's 10 MB limit fails (permanent) without being sent.
Postmark has no idempotency key.

Each message is spliced, not encoded whole: the edition's parts are JSON-encoded
once per send between their placeholders (``http.json_parts``), and a message
is its few own fields, encoded, around those pieces joined with the recipient's
values — what encoding ``message`` gives, parsed alike, at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import httpx

from pipeline.config import Settings
from pipeline.mail import Batch, Mail, Outcome, Recipient
from pipeline.messages import personalise
from pipeline.providers.http import (
    HttpProvider,
    Pieces,
    RetryPolicy,
    address,
    json_array,
    message_headers,
    post,
    read_json,
    send_parts,
    spliced_chunks,
    yielding,
)

MAX_MESSAGES = 500
MAX_REQUEST_BYTES = 50 * 1000 * 1000
MAX_MESSAGE_BYTES = 10 * 1000 * 1000
SUPPRESS_CODES = frozenset({406})
PERMANENT_CODES = frozenset({300, 406, 411})


class PostmarkProvider(HttpProvider):
    """Sends through Postmark's batch email API."""

    name: ClassVar[str] = "postmark"
    idempotent: ClassVar[bool] = False
    max_batch: ClassVar[int] = MAX_MESSAGES
    default_base_url: ClassVar[str] = "https://api.postmarkapp.com"

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *,
                 policy: RetryPolicy | None = None):
        super().__init__(settings, client, policy=policy)
        self.message_stream = settings.provider.message_stream or "broadcast"

    async def send(self, batch: Batch) -> list[Outcome]:
        mail = batch.mail
        encoded = [item async for item in yielding(batch.recipients, lambda person: self._chunks(mail, person))]
        sized = [(person, chunks, sum(map(len, chunks))) for person, chunks in encoded]
        too_large = [_too_large(person, size) for person, _, size in sized if size > MAX_MESSAGE_BYTES]
        parts = _parts([(person, chunks, size) for person, chunks, size in sized if size <= MAX_MESSAGE_BYTES])
        groups = [[person for person, _, _ in part] for part in parts]
        bodies = [json_array([chunks for _, chunks, _ in part]) for part in parts]
        del encoded, sized, parts  # while the requests are out, hold each message once: in its request's pieces

        async def send_part(index: int, people: Sequence[Recipient]) -> list[Outcome]:
            return await self._send_part(people, bodies[index])

        return await send_parts(groups, send_part) + too_large

    def message(self, mail: Mail, person: Recipient) -> dict[str, Any]:
        """One recipient's message as Postmark's JSON object (what ``_encode`` sends, as a dict)."""
        html, text = personalise(mail, person)
        return {**self._head(mail, person), "HtmlBody": html, "TextBody": text, **self._tail(mail, person)}

    def _head(self, mail: Mail, person: Recipient) -> dict[str, Any]:
        return {"From": mail.sender, "To": address(person), "Subject": mail.subject}

    def _tail(self, mail: Mail, person: Recipient) -> dict[str, Any]:
        tail: dict[str, Any] = {
            "Headers": [{"Name": name, "Value": value} for name, value in message_headers(mail, person).items()],
            "MessageStream": self.message_stream,
            "Metadata": {"send": mail.label, "delivery": str(person.delivery_id)},
        }
        if mail.reply_to:
            tail["ReplyTo"] = mail.reply_to
        return tail

    def _encode(self, mail: Mail, person: Recipient) -> bytes:
        """``message`` as JSON, spliced: the head and tail objects encoded, the bodies joined from pieces."""
        return b"".join(self._chunks(mail, person))

    def _chunks(self, mail: Mail, person: Recipient) -> list[bytes]:
        """What ``_encode`` joins: the request body joins every message's chunks at once."""
        return spliced_chunks(mail, person, self._head(mail, person), ("HtmlBody", "TextBody"),
                              self._tail(mail, person))

    async def _send_part(self, people: Sequence[Recipient], body: Pieces) -> list[Outcome]:
        response = await post(self.client, f"{self.base_url}/email/batch", policy=self.policy, idempotent=False,
                              key=self.key, content=body,
                              headers={"X-Postmark-Server-Token": self.key.value, "Accept": "application/json",
                                       "Content-Type": "application/json"})
        answers = read_json(response)
        if not isinstance(answers, list):
            answers = []
        # zip: a recipient without an answer is left out, and the send records it as uncertain.
        return [_outcome(person, answer) for person, answer in zip(people, answers, strict=False)]


Message = tuple[Recipient, list[bytes], int]  # a recipient, their message's chunks and its size in bytes


def _parts(encoded: list[Message]) -> list[list[Message]]:
    """Runs of at most 500 messages whose JSON array stays under 50 MB."""
    parts: list[list[Message]] = []
    total = 0
    for person, chunks, size in encoded:
        if not parts or len(parts[-1]) >= MAX_MESSAGES or total + size + 1 > MAX_REQUEST_BYTES - 2:
            parts.append([])
            total = 0
        parts[-1].append((person, chunks, size))
        total += size + 1
    return parts


def _outcome(person: Recipient, answer: Any) -> Outcome:
    if not isinstance(answer, dict):
        return Outcome(delivery_id=person.delivery_id, status="uncertain", error_class="uncertain",
                       error_text=f"unreadable answer from Postmark: {str(answer)[:80]!r}")
    code = answer.get("ErrorCode", 0)
    if code == 0:
        return Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=answer.get("MessageID"))
    return Outcome(delivery_id=person.delivery_id, status="failed",
                   error_class="permanent" if code in PERMANENT_CODES else "transient",
                   error_text=f"Postmark error {code}: {answer.get('Message', '')}",
                   suppress=code in SUPPRESS_CODES)


def _too_large(person: Recipient, size: int) -> Outcome:
    return Outcome(delivery_id=person.delivery_id, status="failed", error_class="permanent",
                   error_text=f"message of {size:,} bytes is over Postmark's 10 MB limit")
