"""A provider's webhook JSON as typed records: one ``ProviderEvent`` per event, whichever provider sent it.

Each provider names its events in its own words; ``kind`` is ours:

    delivered | bounced (hard) | soft_bounced | complained | unsubscribed | other (kept with its raw type)

A parser is lenient about fields it does not need (a provider adds fields without notice) and strict only
about the shape it cannot do without: an event is a JSON object. Every event carries an ``event_key`` that is
the same when the provider sends it again: its own event id, or (Postmark, which has none for every record
type) a hash of the event's canonical JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.errors import WebhookMalformed


class EventKind(StrEnum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"  # a hard bounce: the address does not exist, or will never take mail
    SOFT_BOUNCED = "soft_bounced"  # a temporary failure: a full mailbox, a server that is down
    COMPLAINED = "complained"  # marked as spam
    UNSUBSCRIBED = "unsubscribed"  # through the provider's own unsubscribe link or list
    OTHER = "other"  # opened, clicked, deferred, ... recorded, nothing else


@dataclass(frozen=True, kw_only=True)
class ProviderEvent:
    """One thing a provider reports about one message to one recipient."""

    provider: str
    kind: EventKind
    raw_type: str  # the provider's own name for it ("bounce", "HardBounce", "email.bounced" ...)
    email: str | None
    provider_message_id: str | None  # as the send API returned it (SendGrid: the X-Message-Id part)
    delivery_id: int | None  # our delivery row, from the metadata the provider echoes back
    send_label: str | None  # our send's label (its id), from the same metadata
    occurred_at: dt.datetime | None
    event_key: str  # the same when the provider repeats the event
    detail: str | None  # a bounce's reason
    payload: Mapping[str, Any]

    @property
    def email_key(self) -> str | None:
        return self.email.strip().lower() if self.email else None


# -- the parts every parser shares ------------------------------------------------------------------------------

def canonical_hash(value: Any) -> str:
    """A key for an event without an id of its own: the sha256 of its canonical JSON."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _delivery(value: Any) -> int | None:
    """Our delivery id as the provider echoes it: a string (or number) of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 19:
        value = int(value.strip())
    return value if isinstance(value, int) and 0 < value < 2**62 else None


def _label(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _iso(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _unix(value: Any) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise WebhookMalformed(f"{what} must be a JSON object")
    return value


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


# -- Postmark: one JSON object per request, named by RecordType ---------------------------------------------------

POSTMARK_HARD = frozenset({"HardBounce", "BadEmailAddress", "ManuallyDeactivated"})
POSTMARK_SOFT = frozenset({"SoftBounce", "Transient", "DnsError"})


def postmark(body: Any) -> list[ProviderEvent]:
    """A Postmark webhook: ``Delivery``, ``Bounce`` (its ``Type`` tells hard from soft), ``SpamComplaint``,
    ``SubscriptionChange`` (``SuppressSending``), or another RecordType (Open, Click ...)."""
    event = _object(body, "a Postmark webhook")
    record = str(event.get("RecordType") or "")
    bounce_type = str(event.get("Type") or "")
    kind, email, at = EventKind.OTHER, event.get("Email"), event.get("BouncedAt")
    if record == "Delivery":
        kind, email, at = EventKind.DELIVERED, event.get("Recipient"), event.get("DeliveredAt")
    elif record == "Bounce":
        kind = (EventKind.COMPLAINED if bounce_type == "SpamComplaint" else
                EventKind.UNSUBSCRIBED if bounce_type == "Unsubscribe" else
                EventKind.BOUNCED if bounce_type in POSTMARK_HARD else
                EventKind.SOFT_BOUNCED if bounce_type in POSTMARK_SOFT else EventKind.OTHER)
    elif record == "SpamComplaint":
        kind = EventKind.COMPLAINED
    elif record == "SubscriptionChange":
        email, at = event.get("Recipient"), event.get("ChangedAt")
        if event.get("SuppressSending") is True:
            reason = event.get("SuppressionReason")
            kind = (EventKind.BOUNCED if reason == "HardBounce" else
                    EventKind.COMPLAINED if reason == "SpamComplaint" else EventKind.UNSUBSCRIBED)
    elif "Recipient" in event:
        email = event.get("Recipient")
    metadata = _mapping(event.get("Metadata"))
    return [ProviderEvent(
        provider="postmark", kind=kind, raw_type=f"{record}:{bounce_type}" if bounce_type else record,
        email=_text(email), provider_message_id=_text(event.get("MessageID")),
        delivery_id=_delivery(metadata.get("delivery")), send_label=_label(metadata.get("send")),
        occurred_at=_iso(at) or _iso(event.get("ReceivedAt")), event_key=canonical_hash(event),
        detail=_text(event.get("Description")) or _text(event.get("Details")), payload=event)]


# -- SendGrid: a JSON array of up to ~1,000 events, our custom_args at each event's top level --------------------

SENDGRID_KINDS = {"delivered": EventKind.DELIVERED, "spamreport": EventKind.COMPLAINED,
                  "unsubscribe": EventKind.UNSUBSCRIBED, "group_unsubscribe": EventKind.UNSUBSCRIBED}


def sendgrid(body: Any) -> list[ProviderEvent]:
    """SendGrid's Event Webhook: ``bounce`` is hard unless its ``type`` is ``blocked`` (a block, temporary);
    ``deferred`` is SendGrid still trying, and ``dropped`` is SendGrid refusing to try: both ``other``."""
    if not isinstance(body, list):
        raise WebhookMalformed("a SendGrid webhook must be a JSON array of events")
    return [_sendgrid_event(_object(event, "a SendGrid event")) for event in body]


def _sendgrid_event(event: Mapping[str, Any]) -> ProviderEvent:
    name = str(event.get("event") or "")
    kind = SENDGRID_KINDS.get(name, EventKind.OTHER)
    if name == "bounce":
        kind = EventKind.SOFT_BOUNCED if event.get("type") == "blocked" else EventKind.BOUNCED
    message_id = _text(event.get("sg_message_id"))
    return ProviderEvent(
        provider="sendgrid", kind=kind, raw_type=name, email=_text(event.get("email")),
        # "<X-Message-Id>.filterNNNN...": the part the send API returned is before the first dot.
        provider_message_id=message_id.split(".", 1)[0] if message_id else None,
        delivery_id=_delivery(event.get("delivery")), send_label=_label(event.get("send")),
        occurred_at=_unix(event.get("timestamp")),
        event_key=_text(event.get("sg_event_id")) or canonical_hash(event),
        detail=_text(event.get("reason")) or _text(event.get("response")), payload=event)


# -- Mailgun: one event per request, {"signature": {...}, "event-data": {...}} ------------------------------------

MAILGUN_KINDS = {"delivered": EventKind.DELIVERED, "complained": EventKind.COMPLAINED,
                 "unsubscribed": EventKind.UNSUBSCRIBED}


def mailgun(body: Any) -> list[ProviderEvent]:
    """A Mailgun webhook: ``failed`` with ``severity`` permanent is a hard bounce, temporary a soft one."""
    data = _object(_object(body, "a Mailgun webhook").get("event-data"), "a Mailgun webhook's event-data")
    name = str(data.get("event") or "")
    kind = MAILGUN_KINDS.get(name, EventKind.OTHER)
    if name == "failed":
        kind = EventKind.BOUNCED if data.get("severity") == "permanent" else EventKind.SOFT_BOUNCED
    variables = _mapping(data.get("user-variables"))
    headers = _mapping(_mapping(data.get("message")).get("headers"))
    message_id = _text(headers.get("message-id"))
    status = _mapping(data.get("delivery-status"))
    return [ProviderEvent(
        provider="mailgun", kind=kind, raw_type=name, email=_text(data.get("recipient")),
        provider_message_id=message_id.strip("<>") if message_id else None,
        delivery_id=_delivery(variables.get("delivery")), send_label=_label(variables.get("send")),
        occurred_at=_unix(data.get("timestamp")), event_key=_text(data.get("id")) or canonical_hash(data),
        detail=_text(status.get("description")) or _text(status.get("message")) or _text(data.get("reason")),
        payload=data)]


# -- Resend: one event per request, {"type", "created_at", "data"}, keyed by its svix-id -------------------------

RESEND_KINDS = {"email.delivered": EventKind.DELIVERED, "email.complained": EventKind.COMPLAINED}


def resend(body: Any, *, message_id: str) -> list[ProviderEvent]:
    """A Resend webhook: ``email.bounced`` is hard unless its bounce ``type`` is Transient. ``message_id`` is
    the request's ``svix-id``, which Resend keeps when it retries."""
    event = _object(body, "a Resend webhook")
    name = str(event.get("type") or "")
    data = _mapping(event.get("data"))
    bounce = _mapping(data.get("bounce"))
    kind = RESEND_KINDS.get(name, EventKind.OTHER)
    if name == "email.bounced":
        kind = EventKind.SOFT_BOUNCED if bounce.get("type") == "Transient" else EventKind.BOUNCED
    recipients = data.get("to")
    email = recipients[0] if isinstance(recipients, list) and recipients else recipients
    tags = _resend_tags(data.get("tags"))
    return [ProviderEvent(
        provider="resend", kind=kind, raw_type=name, email=_text(email),
        provider_message_id=_text(data.get("email_id")),
        delivery_id=_delivery(tags.get("delivery")), send_label=_label(tags.get("send")),
        occurred_at=_iso(event.get("created_at")), event_key=message_id, detail=_text(bounce.get("message")),
        payload=event)]


def _resend_tags(tags: Any) -> Mapping[str, Any]:
    """Tags as the webhook gives them: an object, or (as they were sent) a list of {name, value}."""
    if isinstance(tags, list):
        return {str(tag.get("name")): tag.get("value") for tag in tags if isinstance(tag, dict)}
    return _mapping(tags)

