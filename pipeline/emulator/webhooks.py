"""The emulator's webhooks: what happened to each accepted message, posted back as the real provider posts it.

Started with a ``WebhookPlan`` (``newsletter emulator --webhook-url URL``), the emulator decides an outcome
for every message it records (seeded: hard bounce, soft bounce or complaint at the plan's rates, delivered
otherwise; a complaint follows a delivery, as in life) and posts it to ``URL/<provider>``:

* Postmark: one JSON object per event, HTTP Basic credentials on the request;
* SendGrid: JSON arrays of up to 1,000 events, signed with an ECDSA P-256 key (the public half in SendGrid's
  base64 DER form is ``keys.sendgrid_public_key``);
* Mailgun: one ``{"signature", "event-data"}`` per event, HMAC-signed with ``keys.mailgun_signing_key``;
* Resend: one event per request, Svix-signed with ``keys.resend_secret``.

Posting is asynchronous (on the emulator's event loop, a few requests at a time, after the send request was
answered), and a request that fails (no answer, or not 2xx) is tried again a few times with a growing pause,
as providers retry, then given up and counted. ``outcomes`` records every decision, so a test can read exactly
which addresses were bounced or complained, whatever became of the posting.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.emulator.state import Record
from pipeline.webhooks import signatures

SENDGRID_BATCH = 1000
CONCURRENCY = 4
KINDS = ("delivered", "bounced", "soft_bounced", "complained")


@dataclass(frozen=True, kw_only=True)
class WebhookPlan:
    """Where to post, and how often each bad outcome happens (per message)."""

    url: str  # events go to URL/postmark, URL/sendgrid, URL/mailgun, URL/resend
    bounce_rate: float = 0.0
    soft_bounce_rate: float = 0.0
    complaint_rate: float = 0.0
    seed: int | None = None
    retries: int = 4  # tries after the first
    retry_delay_s: float = 0.2  # doubled at each try
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        rates = (self.bounce_rate, self.soft_bounce_rate, self.complaint_rate)
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError("the webhook rates must be at least 0 and add up to at most 1")


@dataclass(frozen=True)
class WebhookKeys:
    """The keys the emulator signs with, made fresh for each run."""

    sendgrid_private_key: ec.EllipticCurvePrivateKey
    sendgrid_public_key: str  # base64 DER, as SendGrid shows it
    mailgun_signing_key: str
    resend_secret: str  # whsec_...
    postmark_user: str
    postmark_password: str

    @classmethod
    def generate(cls) -> WebhookKeys:
        private, public = signatures.new_sendgrid_key()
        return cls(sendgrid_private_key=private, sendgrid_public_key=public, mailgun_signing_key=secrets.token_hex(32),
                   resend_secret="whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
                   postmark_user="emulator", postmark_password=secrets.token_urlsafe(18))

    def environment(self) -> dict[str, str]:
        """The variables ``newsletter serve`` reads them from (the default names of ``[webhooks]``)."""
        return {"POSTMARK_WEBHOOK_USER": self.postmark_user, "POSTMARK_WEBHOOK_PASSWORD": self.postmark_password,
                "SENDGRID_WEBHOOK_PUBLIC_KEY": self.sendgrid_public_key,
                "MAILGUN_WEBHOOK_SIGNING_KEY": self.mailgun_signing_key, "RESEND_WEBHOOK_SECRET": self.resend_secret}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the emulator decided happened to one message."""

    provider: str
    email: str
    kind: str  # delivered | bounced | soft_bounced | complained
    message_id: str
    delivery: str | None  # our delivery id, from the message's metadata


@dataclass(frozen=True, slots=True)
class _Post:
    provider: str
    payload: Any  # the JSON: an object, or (SendGrid) an array of events
    svix_id: str = ""  # Resend: the svix-id header, the same on every try


@dataclass
class WebhookPoster:
    """Decides outcomes for recorded messages and posts their events; lives on the emulator's event loop."""

    plan: WebhookPlan
    keys: WebhookKeys = field(default_factory=WebhookKeys.generate)
    client: httpx.AsyncClient | None = None

    def __post_init__(self) -> None:
        self.random = random.Random(self.plan.seed)
        self.outcomes: list[Outcome] = []
        self.queue: asyncio.Queue[_Post] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.sendgrid_pending: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()  # posted, retried, given_up
        self.in_flight = 0

    # -- deciding ------------------------------------------------------------------------------------------------

    def accepted(self, records: Iterable[Record]) -> None:
        """Messages just accepted: decide their outcomes and queue their events (called on the event loop)."""
        for record in records:
            outcome = self._decide(record)
            self.outcomes.append(outcome)
            kinds = ("delivered", "complained") if outcome.kind == "complained" else (outcome.kind,)
            for kind in kinds:
                self._queue(record, kind)
        self._flush_sendgrid()

    def _decide(self, record: Record) -> Outcome:
        point, kind = self.random.random(), "delivered"
        for name, rate in (("bounced", self.plan.bounce_rate), ("soft_bounced", self.plan.soft_bounce_rate),
                           ("complained", self.plan.complaint_rate)):
            if point < rate:
                kind = name
                break
            point -= rate
        delivery = record.metadata.get("delivery")
        return Outcome(record.provider, record.to, kind, record.id, None if delivery is None else str(delivery))

    def _queue(self, record: Record, kind: str) -> None:
        # A complaint comes after the delivery it complains of (here a second later, in life often days).
        moment = time.time() + (1.0 if kind == "complained" else 0.0)
        payload = BUILDERS[record.provider](record, kind, self.random, moment)
        if record.provider == "sendgrid":
            self.sendgrid_pending.append(payload)
        else:
            svix_id = "msg_" + base64.b32encode(self.random.randbytes(15)).decode().lower()
            self._put(_Post(record.provider, payload, svix_id if record.provider == "resend" else ""))

    def _flush_sendgrid(self) -> None:
        while self.sendgrid_pending:
            events, self.sendgrid_pending = (self.sendgrid_pending[:SENDGRID_BATCH],
                                             self.sendgrid_pending[SENDGRID_BATCH:])
            self._put(_Post("sendgrid", events))

    def _put(self, post: _Post) -> None:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.workers = [asyncio.get_running_loop().create_task(self._work()) for _ in range(CONCURRENCY)]
        self.queue.put_nowait(post)

    # -- posting -------------------------------------------------------------------------------------------------

    @property
    def settled(self) -> bool:
        """Nothing waiting and nothing in flight."""
        return (self.queue is None or self.queue.empty()) and not self.in_flight and not self.sendgrid_pending

    async def _work(self) -> None:
        assert self.queue is not None
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.plan.timeout_s)
        while True:
            post = await self.queue.get()
            self.in_flight += 1
            try:
                await self._deliver(post)
            finally:
                self.in_flight -= 1
                self.queue.task_done()

    async def _deliver(self, post: _Post) -> None:
        assert self.client is not None
        url = f"{self.plan.url.rstrip('/')}/{post.provider}"
        for attempt in range(self.plan.retries + 1):
            if attempt:
                self.counts["retried"] += 1
                await asyncio.sleep(self.plan.retry_delay_s * 2 ** (attempt - 1))
            body, headers = self._signed(post)
            try:
                response = await self.client.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                continue
            if 200 <= response.status_code < 300:
                self.counts["posted"] += 1
                return
        self.counts["given_up"] += 1

    def _signed(self, post: _Post) -> tuple[bytes, dict[str, str]]:
        """The body and headers of one try, signed now (a retry is signed again, with a new timestamp)."""
        stamp, keys = int(time.time()), self.keys
        payload = post.payload
        if post.provider == "mailgun":
            token = secrets.token_hex(25)
            payload = {"signature": {"timestamp": str(stamp), "token": token,
                                     "signature": signatures.mailgun_signature(keys.mailgun_signing_key,
                                                                               str(stamp), token)},
                       "event-data": payload["event-data"]}
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "User-Agent": f"newsletter-emulator ({post.provider})"}
        if post.provider == "postmark":
            headers["Authorization"] = signatures.basic_authorization(keys.postmark_user, keys.postmark_password)
        elif post.provider == "sendgrid":
            headers |= signatures.sign_sendgrid(keys.sendgrid_private_key, body, stamp)
        elif post.provider == "resend":
            headers |= signatures.sign_resend(signatures.svix_webhook(keys.resend_secret), post.svix_id,
                                              stamp, body)
        return body, headers

    async def aclose(self) -> None:
        """Stop posting (what is still queued is dropped) and close the client."""
        for worker in self.workers:
            worker.cancel()
        await asyncio.gather(*self.workers, return_exceptions=True)
        self.workers = []
        if self.client is not None:
            await self.client.aclose()

    def summary(self) -> dict[str, Any]:
        decided = Counter(outcome.kind for outcome in self.outcomes)
        return {"url": self.plan.url, "outcomes": {kind: decided[kind] for kind in KINDS},
                "posted": self.counts["posted"], "retried": self.counts["retried"],
                "given_up": self.counts["given_up"], "settled": self.settled}

    def addresses(self, kind: str) -> list[str]:
        return [outcome.email for outcome in self.outcomes if outcome.kind == kind]


# -- each provider's events, in its documented shape --------------------------------------------------------------

def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _metadata(record: Record) -> dict[str, str]:
    return {str(name): str(value) for name, value in record.metadata.items()}


def _postmark(record: Record, kind: str, draw: random.Random, moment: float) -> dict[str, Any]:
    common = {"MessageID": record.id, "MessageStream": str(record.options.get("MessageStream", "broadcast")),
              "Metadata": _metadata(record), "Tag": "", "ServerID": 1}
    if kind == "delivered":
        return {"RecordType": "Delivery", "Recipient": record.to, "DeliveredAt": _iso(moment),
                "Details": "Test SMTP response: 250 2.0.0 OK", **common}
    types = {"bounced": ("Bounce", "HardBounce", 1, "Hard bounce"),
             "soft_bounced": ("Bounce", "SoftBounce", 4096, "Soft bounce"),
             "complained": ("SpamComplaint", "SpamComplaint", 512, "Spam complaint")}
    record_type, bounce_type, code, name = types[kind]
    return {"RecordType": record_type, "ID": draw.getrandbits(62), "Type": bounce_type, "TypeCode": code,
            "Name": name, "Email": record.to, "From": record.sender, "BouncedAt": _iso(moment),
            "Description": f"{name} reported by the emulator", "Details": "smtp; 550 5.1.1 emulated",
            "Inactive": kind != "soft_bounced", "CanActivate": True, "DumpAvailable": False,
            "Subject": str(record.subject), **common}


def _sendgrid(record: Record, kind: str, draw: random.Random, moment: float) -> dict[str, Any]:
    event = {"email": record.to, "timestamp": int(moment), "smtp-id": f"<{record.id}@emulator>",
             "event": {"delivered": "delivered", "bounced": "bounce", "soft_bounced": "bounce",
                       "complained": "spamreport"}[kind],
             "sg_event_id": base64.urlsafe_b64encode(draw.randbytes(16)).decode().rstrip("="),
             "sg_message_id": f"{record.id}.filterdrecv-emulator-1-{draw.getrandbits(32):08X}-0.0",
             **_metadata(record)}  # custom_args travel at each event's top level
    if kind == "delivered":
        event["response"] = "250 OK"
    elif kind in ("bounced", "soft_bounced"):
        event |= {"type": "bounce" if kind == "bounced" else "blocked", "status": "5.1.1" if kind == "bounced"
                  else "4.2.2", "reason": "550 5.1.1 emulated: no such user" if kind == "bounced"
                  else "452 4.2.2 emulated: mailbox full", "bounce_classification": "Invalid Address"
                  if kind == "bounced" else "Reputation"}
    return event


def _mailgun(record: Record, kind: str, draw: random.Random, moment: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": base64.urlsafe_b64encode(draw.randbytes(16)).decode().rstrip("="), "timestamp": moment,
        "event": {"delivered": "delivered", "bounced": "failed", "soft_bounced": "failed",
                  "complained": "complained"}[kind],
        "log-level": "info" if kind in ("delivered", "complained") else "error",
        "recipient": record.to, "recipient-domain": record.to.rpartition("@")[2],
        "message": {"headers": {"message-id": record.id.strip("<>"), "to": record.to, "from": record.sender,
                                "subject": str(record.subject)}},
        "user-variables": _metadata(record), "tags": [], "flags": {"is-test-mode": False}}
    if kind in ("bounced", "soft_bounced"):
        data |= {"severity": "permanent" if kind == "bounced" else "temporary", "reason": "bounce" if kind == "bounced"
                 else "generic", "delivery-status": {"code": 550 if kind == "bounced" else 452,
                                                     "message": "emulated", "description": "emulated failure"}}
    elif kind == "delivered":
        data["delivery-status"] = {"code": 250, "message": "OK", "description": ""}
    return {"event-data": data}


def _resend(record: Record, kind: str, draw: random.Random, moment: float) -> dict[str, Any]:
    data: dict[str, Any] = {"email_id": record.id, "created_at": _iso(moment), "from": record.sender, "to": [record.to],
                            "subject": str(record.subject), "tags": _metadata(record)}
    if kind in ("bounced", "soft_bounced"):
        data["bounce"] = {"type": "Permanent" if kind == "bounced" else "Transient",
                          "subType": "General" if kind == "bounced" else "MailboxFull",
                          "message": "emulated bounce", "diagnosticCode": ["smtp; 550 5.1.1 emulated"]}
    name = {"delivered": "email.delivered", "bounced": "email.bounced", "soft_bounced": "email.bounced",
            "complained": "email.complained"}[kind]
    return {"type": name, "created_at": _iso(moment), "data": data}


BUILDERS = {"postmark": _postmark, "sendgrid": _sendgrid, "mailgun": _mailgun, "resend": _resend}


def environment_lines(keys: WebhookKeys) -> list[str]:
    """``export NAME=value`` for each key, for a shell that starts ``newsletter serve``."""
    return [f"export {name}={value}" for name, value in keys.environment().items()]


def outcomes_json(poster: WebhookPoster) -> dict[str, Any]:
    """The summary and every decision, for ``GET /_emulator/webhooks``."""
    return {**poster.summary(), "events": [
        {"provider": o.provider, "email": o.email, "kind": o.kind, "message_id": o.message_id, "delivery": o.delivery}
        for o in poster.outcomes]}
