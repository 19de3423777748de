"""What the emulator remembers: recorded messages, faults to inject, idempotency keys, counters.

Everything lives in plain lists and dicts of one process and is touched only from the
server's event loop, so no locks are needed. Bodies personalised by SendGrid
substitutions or Mailgun recipient variables are kept as one split template plus each
recipient's values, and bodies sent whole per recipient (Postmark, Resend) as lines shared
between messages; both are joined only when a message is read back, so a 100,000-recipient
rehearsal costs kilobytes per recipient, not a copy of the email each.
"""

from __future__ import annotations

import base64
import random
import re
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pipeline.emulator.digest import BodyDigest

if TYPE_CHECKING:
    from pipeline.emulator.webhooks import WebhookPoster

PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend")
DEFAULT_KEY = "emulator-key"
IDEMPOTENCY_TTL_S = 24 * 3600  # Resend keeps idempotency keys for 24 hours


# -- personalised text -------------------------------------------------------------------------------------------

class Template:
    """A text split once at its placeholders; each recipient's copy is then one join."""

    __slots__ = ("literals", "tokens", "names")

    def __init__(self, literals: list[str], tokens: list[str], names: list[str]):
        self.literals, self.tokens, self.names = literals, tokens, names

    @classmethod
    def split(cls, text: str, pattern: re.Pattern[str]) -> Template | str:
        """``text`` split at every match of ``pattern`` (group 1 names the value); the text itself if none."""
        literals, tokens, names, start = [], [], [], 0
        for match in pattern.finditer(text):
            literals.append(text[start:match.start()])
            tokens.append(match.group(0))
            names.append(match.group(1))
            start = match.end()
        if not tokens:
            return text
        literals.append(text[start:])
        return cls(literals, tokens, names)

    def render(self, values: Mapping[str, Any]) -> str:
        """The text with each placeholder replaced by its value; a placeholder without a value stays as it is."""
        parts = [self.literals[0]]
        for token, name, literal in zip(self.tokens, self.names, self.literals[1:], strict=True):
            value = values.get(name)
            parts.append(token if value is None else str(value))
            parts.append(literal)
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class Personalized:
    """One recipient's copy of a template, joined only when read."""

    template: Template
    values: Mapping[str, Any]

    def __str__(self) -> str:
        return self.template.render(self.values)


def personalize(text: Template | str | None, values: Mapping[str, Any]) -> Personalized | str | None:
    return Personalized(text, values) if isinstance(text, Template) else text


class SharedLines:
    """A body kept as references to lines shared with other messages' bodies."""

    __slots__ = ("lines",)

    def __init__(self, lines: tuple[str, ...]):
        self.lines = lines

    def __str__(self) -> str:
        return "".join(self.lines)


class LinePool:
    """Lines of bodies, each kept once.

    Postmark and Resend carry a whole body per recipient, which differ from one another in
    a few lines (a name, an unsubscribe link): kept as references into this pool, a
    personalised copy of a 60 KB edition costs about 8 KB, for some 0.1 ms of work.
    """

    SMALL = 4096  # shorter bodies are kept as they are

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}

    def share(self, text: str | None) -> SharedLines | str | None:
        if text is None or len(text) < self.SMALL:
            return text
        lines = text.splitlines(keepends=True)
        return SharedLines(tuple(map(self.lines.setdefault, lines, lines)))

    def clear(self) -> None:
        self.lines.clear()


Text = Personalized | SharedLines | str | None


def _plain(text: Text) -> str | None:
    return None if text is None else str(text)


# -- records -----------------------------------------------------------------------------------------------------

@dataclass(slots=True, kw_only=True)
class Record:
    """One accepted message for one recipient, as the provider would deliver it."""

    provider: str
    batch: int  # the emulator's counter of accepted send requests
    id: str  # the provider's message id
    to: str  # the recipient's bare address
    sender: str
    subject: Text
    html: Text
    text: Text
    headers: Mapping[str, str]
    metadata: Mapping[str, Any]
    visible_to: list[str]  # every address in the delivered To header: recipients batched apart see only themselves
    options: Mapping[str, Any]  # provider sending options: MessageStream, categories, o: fields ...
    received_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "batch": self.batch, "id": self.id, "to": self.to, "from": self.sender,
                "subject": _plain(self.subject), "html": _plain(self.html), "text": _plain(self.text),
                "headers": dict(self.headers), "metadata": dict(self.metadata), "visible_to": list(self.visible_to),
                "options": dict(self.options), "received_at": self.received_at}


class Mailbox:
    """Every recorded message, in arrival order."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.per_provider: Counter[str] = Counter()
        self.pool = LinePool()
        self.webhooks: WebhookPoster | None = None  # told of every message accepted, to post its events

    def add(self, records: Iterable[Record]) -> None:
        before = len(self.records)
        self.records.extend(records)
        for record in self.records[before:]:
            self.per_provider[record.provider] += 1
        if self.webhooks is not None and len(self.records) > before:
            self.webhooks.accepted(self.records[before:])

    def find(self, *, provider: str | None = None, to: str | None = None, batch: int | None = None,
             offset: int = 0, limit: int | None = None) -> tuple[int, list[Record]]:
        """(number matching, the page of them asked for), oldest first."""
        wanted = to.lower() if to else None
        matching = [record for record in self.records
                    if (provider is None or record.provider == provider)
                    and (wanted is None or record.to.lower() == wanted)
                    and (batch is None or record.batch == batch)]
        end = None if limit is None else offset + limit
        return len(matching), matching[offset:end]

    def clear(self) -> None:
        self.records.clear()
        self.per_provider.clear()
        self.pool.clear()


# -- faults ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    """Which faults the send endpoints inject, and how often; see ``FAULTS_SCHEMA``."""

    seed: int | None = None
    error_rates: tuple[tuple[int, float], ...] = ()
    rate_limit: float = 0.0
    retry_after: float = 1.0
    latency_ms: float = 0.0
    late: float = 0.0
    late_delay_s: float = 3.0
    drop_rate: float = 0.0
    inactive: frozenset[str] = frozenset()

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, default_seed: int | None = None) -> FaultPlan:
        """A plan from the JSON of ``POST /_emulator/faults`` (already checked against ``FAULTS_SCHEMA``)."""
        rates = tuple(sorted((int(status), float(rate)) for status, rate in data.get("error_rates", {}).items()))
        limit, late = data.get("rate_limit", {}), data.get("late", {})
        plan = cls(seed=data.get("seed", default_seed), error_rates=rates,
                   rate_limit=float(limit.get("rate", 0.0)), retry_after=float(limit.get("retry_after", 1.0)),
                   latency_ms=float(data.get("latency_ms", 0.0)),
                   late=float(late.get("rate", 0.0)), late_delay_s=float(late.get("delay_s", 3.0)),
                   drop_rate=float(data.get("drop_rate", 0.0)),
                   inactive=frozenset(address.strip().lower() for address in data.get("inactive", ())))
        if plan.total_rate > 1.0:
            raise ValueError(f"the fault rates add up to {plan.total_rate:g}, more than 1")
        return plan

    @property
    def total_rate(self) -> float:
        return sum(rate for _, rate in self.error_rates) + self.rate_limit + self.late + self.drop_rate

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "error_rates": {str(status): rate for status, rate in self.error_rates},
                "rate_limit": {"rate": self.rate_limit, "retry_after": self.retry_after},
                "latency_ms": self.latency_ms, "late": {"rate": self.late, "delay_s": self.late_delay_s},
                "drop_rate": self.drop_rate, "inactive": sorted(self.inactive)}


_RATE = {"type": "number", "minimum": 0, "maximum": 1}
FAULTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "seed": {"type": ["integer", "null"]},
        "error_rates": {"type": "object", "propertyNames": {"pattern": "^[45][0-9][0-9]$"},
                        "additionalProperties": _RATE},
        "rate_limit": {"type": "object", "additionalProperties": False,
                       "properties": {"rate": _RATE, "retry_after": {"type": "number", "minimum": 0}}},
        "latency_ms": {"type": "number", "minimum": 0},
        "late": {"type": "object", "additionalProperties": False,
                 "properties": {"rate": _RATE, "delay_s": {"type": "number", "minimum": 0}}},
        "drop_rate": _RATE,
        "inactive": {"type": "array", "items": {"type": "string"}},
    },
}


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request instead of, or on top of, answering it."""

    kind: Literal["status", "rate_limit", "late", "drop"]
    status: int = 0
    delay_s: float = 0.0


class Faults:
    """The current plan and its random sequence: one draw per send request, in arrival order."""

    def __init__(self, default_seed: int | None = None):
        self.default_seed = default_seed
        self.configure(FaultPlan(seed=default_seed))

    def configure(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.random = random.Random(plan.seed)

    def draw(self) -> Fault | None:
        """The fault for the next request, or None to answer it normally."""
        plan, point = self.plan, self.random.random()
        for status, rate in plan.error_rates:
            if point < rate:
                return Fault("status", status=status)
            point -= rate
        bands = ((plan.rate_limit, Fault("rate_limit", status=429, delay_s=plan.retry_after)),
                 (plan.late, Fault("late", delay_s=plan.late_delay_s)),
                 (plan.drop_rate, Fault("drop")))
        for rate, fault in bands:
            if point < rate:
                return fault
            point -= rate
        return None


# -- idempotency -------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response kept under an idempotency key, with the digest of the body that produced it."""

    digest: str
    status: int
    body: bytes
    headers: Mapping[str, str]
    created: float


class IdempotencyKeys:
    """Responses by idempotency key, forgotten after ``IDEMPOTENCY_TTL_S``."""

    def __init__(self, ttl_s: float = IDEMPOTENCY_TTL_S):
        self.ttl_s = ttl_s
        self.entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def get(self, key: str) -> StoredResponse | None:
        horizon = time.monotonic() - self.ttl_s
        while self.entries and next(iter(self.entries.values())).created < horizon:
            self.entries.popitem(last=False)
        return self.entries.get(key)

    def put(self, key: str, digest: str, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.entries[key] = StoredResponse(digest, status, body, dict(headers), time.monotonic())

    def clear(self) -> None:
        self.entries.clear()


# -- ids ---------------------------------------------------------------------------------------------------------

class Ids:
    """Message ids: random, or reproducible when the emulator was given a seed."""

    def __init__(self, seed: int | None = None):
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        self.random = random.Random(self.seed) if self.seed is not None else None

    def uuid(self) -> str:
        if self.random is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self.random.getrandbits(128), version=4))

    def token(self) -> str:
        """22 URL-safe characters, the shape of a SendGrid X-Message-Id."""
        raw = self.random.randbytes(16) if self.random is not None else uuid.uuid4().bytes
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# -- the whole state ---------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class Emulator:
    """All the emulator's state: accepted keys, messages, faults, idempotency keys and counters."""

    keys: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    webhooks: WebhookPoster | None = None  # posts the events of what it accepts (``--webhook-url``)

    def __post_init__(self) -> None:
        unknown = set(self.keys) - set(PROVIDERS)
        if unknown:
            raise ValueError(f"unknown provider {', '.join(sorted(unknown))}: use one of {', '.join(PROVIDERS)}")
        self.keys = {provider: self.keys.get(provider, DEFAULT_KEY) for provider in PROVIDERS}
        self.mailbox = Mailbox()
        self.mailbox.webhooks = self.webhooks
        self.faults = Faults(self.seed)
        self.idempotency = IdempotencyKeys()
        self.ids = Ids(self.seed)
        self._clear_counters()

    def _clear_counters(self) -> None:
        self.sending = SendingPhase()
        self.bodies = BodyDigest()
        self.batches = 0
        self.requests: Counter[str] = Counter()
        self.responses: dict[str, Counter[int]] = {provider: Counter() for provider in PROVIDERS}
        self.injected: Counter[str] = Counter()
        self.replayed = 0

    def next_batch(self) -> int:
        self.batches += 1
        return self.batches

    def is_inactive(self, address: str) -> bool:
        return bool(self.faults.plan.inactive) and address.lower() in self.faults.plan.inactive

    def reset(self) -> None:
        """Forget messages, faults, idempotency keys, the inactive list and the counters."""
        self.mailbox.clear()
        self.faults.configure(FaultPlan(seed=self.seed))
        self.idempotency.clear()
        self.ids.reset()
        self._clear_counters()

    def stats(self) -> dict[str, Any]:
        return {"messages": {provider: self.mailbox.per_provider[provider] for provider in PROVIDERS},
                "total_messages": len(self.mailbox.records),
                "batches": self.batches,
                "requests": {provider: self.requests[provider] for provider in PROVIDERS},
                "responses": {provider: {str(status): count for status, count in sorted(counter.items())}
                              for provider, counter in self.responses.items()},
                "faults_injected": dict(sorted(self.injected.items())),
                "idempotent_replays": self.replayed,
                "sending": self.sending.to_json(), "bodies": self.bodies.to_json()}


class SendingPhase:
    """When the first send request arrived and the last answer left (``time.monotonic``, the same clock for
    every process of the machine), so that a benchmark reads a rate over the sending alone."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def begin(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def end(self) -> None:
        self.last = time.monotonic()

    def to_json(self) -> dict[str, float | None]:
        return {"first_request": self.first, "last_answer": self.last,
                "seconds": None if self.first is None or self.last is None else self.last - self.first}


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
