"""What every HTTP mail provider shares: one POST with retries, the client, the key.

``post`` is the boundary where httpx's errors and the provider's status codes
become the pipeline's own::

    connection refused/timed out, pool full ─ retried ─▶ ProviderUnavailable
    429, 500, 502, 503, 504                 ─ retried ─▶ ProviderUnavailable
    read/write timeout, broken answer       ─ retried only if idempotent ─▶ ProviderAmbiguous
    400, 413, 422                           ─ never retried ─▶ ProviderRejected
    401, 403                                ─ never retried ─▶ ProviderAuthError
    anything else that is not 2xx           ─ never retried ─▶ ProviderUnavailable

Once an attempt went unanswered, the provider may have accepted the request, so whatever
ends it after that (retries used up, a refusal) is ProviderAmbiguous: its rows are
uncertain, never failures that ``--retry-failed`` would send again under a new key.

The HTTP providers send to ASCII addresses only (``smtputf8`` False): their APIs
validate ``to`` as an RFC 5321 mailbox (SendGrid's and Resend's schemas say
``format: email``, not ``idn-email``; Postmark and Mailgun document nothing
more), so an internationalised domain goes out in IDNA and an address whose
local part is not ASCII fails on its own, before the request (``send.pump``).

Waits back off exponentially with full jitter, unless the provider names the
wait (``Retry-After``, ``X-RateLimit-Reset``). No error message, log line or
exception carries the API key or an auth header.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formataddr, parsedate_to_datetime
from typing import Any, ClassVar, Self, TypeVar

import httpx
import orjson
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from pipeline import __version__, placeholders, providers
from pipeline.config import Settings
from pipeline.errors import (
    ConfigError,
    ProviderAmbiguous,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from pipeline.mail import Mail, Outcome, Recipient

logger = logging.getLogger(__name__)

USER_AGENT = f"newsletter-pipeline/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REJECTED_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
# Raised before a byte of the request left: the provider cannot have accepted anything.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
NEVER_SENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.ProxyError)
# A recipient's headers that an HTTP provider does not pass on: it assigns its own Message-ID.
PROVIDER_ASSIGNED = frozenset({"Message-ID"})
_BODY_EXCERPT = 300
BODY_SLICE = 1024 * 1024  # bytes: a larger request body goes out in slices of this size (``_Slices``)
YIELD_EVERY = 32  # recipients encoded between two turns of the event loop (``yielding``)
_T = TypeVar("_T")
_EARLIER_UNANSWERED = "; an earlier attempt went unanswered: it may or may not have accepted the batch"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry one request.

    ``sleep`` is how a wait is spent; tests pass a recorder, or ``base_wait=0,
    max_wait=0`` to make every wait zero.
    """

    max_retries: int = 5
    base_wait: float = 0.5  # seconds; the n-th wait is drawn from [0, base_wait * 2**(n-1)]
    max_wait: float = 30.0  # no wait is longer, whatever the provider asks
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(max_retries=settings.provider.max_retries)


@dataclass(frozen=True)
class ApiKey:
    """A provider's key and the variable it came from; ``repr`` and errors never show the key."""

    value: str = field(repr=False)
    variable: str

    def redact(self, text: str) -> str:
        return text.replace(self.value, "***") if self.value else text


def api_key(settings: Settings) -> ApiKey:
    """The key read from the variable ``[provider] api_key_env`` names; ConfigError if there is none."""
    variable = settings.provider.api_key_env
    name = settings.provider.name
    if not variable:
        raise ConfigError(f"[provider] api_key_env is not set: name the environment variable holding the "
                          f"{name} API key", path=settings.source)
    if settings.provider_secret is None or not settings.provider_secret.get_secret_value():
        raise ConfigError(f"no {name} API key: the environment variable {variable} (named by "
                          f"[provider] api_key_env) is not set", path=settings.source)
    return ApiKey(settings.provider_secret.get_secret_value(), variable)


def make_client(settings: Settings) -> httpx.AsyncClient:
    """A client sized for ``[provider] concurrency`` batches in flight, with the provider timeout."""
    concurrency = providers.concurrency(settings)
    return httpx.AsyncClient(timeout=httpx.Timeout(settings.provider.timeout),
                             limits=httpx.Limits(max_connections=concurrency,
                                                 max_keepalive_connections=concurrency),
                             headers={"User-Agent": USER_AGENT}, follow_redirects=False)


class HttpProvider:
    """The shared half of an HTTP provider: its key, base URL, client and retry policy.

    A client passed in belongs to the caller and is left open; one made here is
    closed by ``aclose``.
    """

    name: ClassVar[str]
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int]
    default_base_url: ClassVar[str]

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None, *,
                 policy: RetryPolicy | None = None):
        self.key = api_key(settings)  # before the client exists, so a missing key leaks nothing
        self.base_url = (settings.provider.base_url or self.default_url(settings)).rstrip("/")
        self.policy = policy or RetryPolicy.from_settings(settings)
        self._owns_client = client is None
        self.client = client if client is not None else make_client(settings)

    @classmethod
    def from_settings(cls, settings: Settings, client: httpx.AsyncClient | None = None) -> Self:
        return cls(settings, client)

    def default_url(self, settings: Settings) -> str:
        """The provider's real API host, used when ``[provider] base_url`` is not set."""
        return self.default_base_url

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()


# ---------------------------------------------------------------- the request


class _Retryable(Exception):
    """An attempt that may be repeated; what to raise once no attempt is left."""

    def __init__(self, kind: type[ProviderError], message: str, *, status: int | None = None, body: str = "",
                 wait: float | None = None):
        self.kind, self.message, self.status, self.body, self.wait = kind, message, status, body, wait
        super().__init__(message)


async def post(client: httpx.AsyncClient, url: str, *, policy: RetryPolicy, idempotent: bool,
               key: ApiKey | None = None, **request_kwargs: Any) -> httpx.Response:
    """POST with retries; the 2xx response, or the ProviderError the failure means (see the module docstring).

    ``idempotent`` says the request carries an idempotency key, so repeating it
    after an unanswered attempt cannot send twice. ``key`` is scrubbed from
    every message.
    """
    content = request_kwargs.get("content")
    if isinstance(content, bytes) and len(content) > BODY_SLICE:
        content = _Slices(content)
    if isinstance(content, _Slices | Pieces):  # sent under its Content-Length, so not chunked
        headers = {**request_kwargs.get("headers", {}), "Content-Length": str(content.size)}
        request_kwargs = {**request_kwargs, "content": content, "headers": headers}
    retrying = AsyncRetrying(stop=stop_after_attempt(policy.max_retries + 1), wait=_waiter(policy),
                             retry=retry_if_exception_type(_Retryable), sleep=policy.sleep,
                             before_sleep=_log_retry(url, policy), reraise=True)
    unanswered = False  # an attempt went out and got no answer: the provider may have accepted it

    async def attempt() -> httpx.Response:
        nonlocal unanswered
        try:
            return await _attempt(client, url, idempotent, key, request_kwargs)
        except _Retryable as exc:
            unanswered = unanswered or exc.kind is ProviderAmbiguous
            raise

    try:
        return await retrying(attempt)
    except _Retryable as exc:
        attempts = retrying.statistics.get("attempt_number", 1)
        tail = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        if unanswered and exc.kind is not ProviderAmbiguous:
            raise ProviderAmbiguous(exc.message + tail + _EARLIER_UNANSWERED, status=exc.status,
                                    body=exc.body) from exc.__cause__
        raise exc.kind(exc.message + tail, status=exc.status, body=exc.body) from exc.__cause__
    except ProviderError as exc:  # refused outright, but after an attempt that went unanswered
        if not unanswered or isinstance(exc, ProviderAmbiguous):
            raise
        raise ProviderAmbiguous(str(exc) + _EARLIER_UNANSWERED, status=exc.status, body=exc.body) from exc


class _Slices:
    """A large body handed to httpx a slice at a time, under its own Content-Length (so not chunked).

    Given whole, a 40 MB body is copied whole twice on its way out (h11 joins it to the request head, asyncio
    buffers what the socket did not take), each copy into fresh memory the kernel must map and zero; a
    slice at a time, each copy is a slice, in memory used again. Iterable afresh, for a retry.
    """

    def __init__(self, body: bytes):
        self.body, self.size = body, len(body)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        view = memoryview(self.body)
        for start in range(0, len(view), BODY_SLICE):
            yield view[start:start + BODY_SLICE]  # type: ignore[misc]


class Pieces:
    """A request body given as its pieces, joined a slice (a MiB) at a time while httpx sends it.

    A Postmark batch is 500 messages of ~80 KB, most of each the edition's own pieces, shared by every
    message: joined whole, the body would be a fresh 40 MB copy per request; joined a slice at a time, the
    bytes are copied once, into memory used again, and only while they go out. Iterable afresh, for a retry.
    """

    def __init__(self, pieces: list[bytes]):
        self.pieces, self.size = pieces, sum(map(len, pieces))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        waiting: list[bytes] = []
        size = 0
        for piece in self.pieces:
            waiting.append(piece)
            size += len(piece)
            if size >= BODY_SLICE:
                yield b"".join(waiting)
                waiting, size = [], 0
        if waiting:
            yield b"".join(waiting)


async def _attempt(client: httpx.AsyncClient, url: str, idempotent: bool, key: ApiKey | None,
                   request_kwargs: dict[str, Any]) -> httpx.Response:
    host = httpx.URL(url).host
    try:
        response = await client.post(url, **request_kwargs)
    except NOT_SENT as exc:
        raise _Retryable(ProviderUnavailable, f"cannot reach {host}: {_describe(exc, key)}") from exc
    except NEVER_SENT as exc:
        raise ProviderUnavailable(f"cannot send to {host}: {_describe(exc, key)}") from exc
    except httpx.TransportError as exc:  # the request (or part of it) went out: it may have been accepted
        message = (f"no answer from {host} after the request was sent ({_describe(exc, key)}): "
                   "it may or may not have accepted the batch")
        if idempotent:
            raise _Retryable(ProviderAmbiguous, message) from exc
        raise ProviderAmbiguous(message) from exc
    if response.is_success:
        return response
    raise _status_error(response, host, idempotent, key)


def _status_error(response: httpx.Response, host: str, idempotent: bool, key: ApiKey | None) -> Exception:
    """The error a non-2xx answer means: a _Retryable for the statuses worth another attempt."""
    status = response.status_code
    body = _excerpt(response.text, key)
    said = _redact(provider_message(response), key)
    if status in RETRY_STATUSES:
        return _Retryable(ProviderUnavailable, f"{host} answered HTTP {status}: {said}", status=status, body=body,
                          wait=wait_from_headers(response.headers))
    if status == 409 and idempotent:
        # The same idempotency key is still being worked on (Resend's concurrent_idempotent_requests):
        # the first attempt may yet be accepted, so wait and ask again.
        return _Retryable(ProviderAmbiguous, f"{host} is still working on this batch (HTTP 409): {said}",
                          status=status, body=body, wait=wait_from_headers(response.headers))
    if status in AUTH_STATUSES:
        where = f"the environment variable {key.variable}" if key else "[provider] api_key_env"
        return ProviderAuthError(f"{host} refused the API key (HTTP {status}): check the key in {where}",
                                 status=status, body=body)
    if status in REJECTED_STATUSES:
        return ProviderRejected(f"{host} rejected the request (HTTP {status}): {said}", status=status, body=body)
    return ProviderUnavailable(f"{host} answered HTTP {status}: {said} (check [provider] base_url and domain)",
                               status=status, body=body)


def _describe(exc: Exception, key: ApiKey | None) -> str:
    text = str(exc)
    return _redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__, key)


def _redact(text: str, key: ApiKey | None) -> str:
    return key.redact(text) if key else text


def _excerpt(text: str, key: ApiKey | None) -> str:
    return _redact(" ".join(text.split())[:_BODY_EXCERPT], key)


def provider_message(response: httpx.Response) -> str:
    """The provider's own words on an error: Postmark ``Message``, SendGrid ``errors``, others ``message``."""
    try:
        answer = response.json()
    except ValueError:
        return " ".join(response.text.split())[:_BODY_EXCERPT] or response.reason_phrase
    if isinstance(answer, dict):
        if isinstance(answer.get("errors"), list):  # SendGrid: [{"message", "field"}]
            return "; ".join(_sendgrid_error(item) for item in answer["errors"])[:_BODY_EXCERPT]
        for name in ("Message", "message", "error"):
            if isinstance(answer.get(name), str):
                return answer[name][:_BODY_EXCERPT]
    return json.dumps(answer)[:_BODY_EXCERPT]


def _sendgrid_error(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    message, where = str(item.get("message", "")), item.get("field")
    return f"{message} ({where})" if where and where != "null" else message


# ---------------------------------------------------------------- waiting


def _waiter(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=policy.base_wait, max=policy.max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.wait is not None:
            return max(0.0, min(exc.wait, policy.max_wait))
        return backoff(state)

    return wait


def _log_retry(url: str, policy: RetryPolicy) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning("POST %s: %s; attempt %d of %d in %.1fs", url, exc, state.attempt_number + 1,
                       policy.max_retries + 1, wait)

    return log


def wait_from_headers(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait: ``Retry-After`` (seconds or HTTP date), else
    ``X-RateLimit-Reset`` / ``RateLimit-Reset`` (an epoch time, in seconds or milliseconds,
    or a number of seconds: a value larger than 10^9 is taken for an epoch time)."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        seconds = _number(retry_after)
        if seconds is not None:
            return max(0.0, seconds)
        try:
            when = parsedate_to_datetime(retry_after)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            return max(0.0, when.timestamp() - now)
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    value = _number(reset) if reset else None
    if value is None:
        return None
    if value > 1e12:  # epoch milliseconds
        value = value / 1000
    return max(0.0, value - now) if value > 1e9 else max(0.0, value)


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


# ---------------------------------------------------------------- what providers build batches from


def read_json(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; an unreadable one is ambiguous (the batch may have been accepted)."""
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderAmbiguous(f"{response.url.host} accepted the request (HTTP {response.status_code}) but its "
                                f"answer is not JSON: {' '.join(response.text.split())[:80]!r}",
                                status=response.status_code) from exc


def own_headers(person: Recipient) -> dict[str, str]:
    """The recipient's own headers (List-Unsubscribe, Auto-Submitted ...), but those the provider assigns."""
    return {name: value for name, value in person.headers.items() if name not in PROVIDER_ASSIGNED}


def message_headers(mail: Mail, person: Recipient) -> dict[str, str]:
    """Every header of one recipient's message: the list's (List-Id ...), then their own."""
    return {**dict(mail.list_headers), **own_headers(person)}


def address(person: Recipient) -> str:
    """``Name <addr>`` (RFC 2047-encoded if need be), or the bare address when there is no name."""
    name = " ".join(person.name.split())
    return formataddr((name, person.email)) if name else person.email


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, what ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``
    gives, at a fraction of its cost (orjson)."""
    return orjson.dumps(value)


def json_fragment(text: str) -> bytes:
    """``text`` as the inside of a JSON string, without its quotes. JSON escapes character by character, so
    the fragments of the pieces of a text, joined, are the fragment of the text."""
    return orjson.dumps(text)[1:-1]


@dataclass(frozen=True, slots=True)
class JsonParts:
    """A mail's (html, text) split at their placeholders, each constant piece a JSON string fragment, encoded
    once per send; ``render`` encodes a recipient's values only (HTML-escaped for the HTML part)."""

    html: placeholders.Encoded
    text: placeholders.Encoded

    def render(self, person: Recipient) -> tuple[bytes, bytes]:
        """The recipient's (html, text) as the insides of JSON strings: ``personalise``, JSON-encoded."""
        return self.html.render(person.values, escape=True), self.text.render(person.values, escape=False)


@functools.lru_cache(maxsize=8)  # per Mail: once per send, not per batch
def json_parts(mail: Mail) -> JsonParts:
    return JsonParts(html=placeholders.template(mail.html).encoded(json_fragment),
                     text=placeholders.template(mail.text).encoded(json_fragment))


def spliced_chunks(mail: Mail, person: Recipient, head: dict[str, Any], keys: tuple[str, str],
                   tail: dict[str, Any]) -> list[bytes]:
    """One recipient's JSON object, as chunks to join: ``head``'s members, the personalised html and text under
    ``keys``, then ``tail``'s, as encoding the whole object gives it; only the small head and tail are encoded
    here. Left unjoined, a request of many messages is copied once, in one join of all their chunks
    (``json_array``, ``Pieces``), not once per message and again per request (~40 MB for 500 Postmark
    messages)."""
    parts = json_parts(mail)
    html_key, text_key = keys
    return [json_bytes(head)[:-1], b',"', html_key.encode(), b'":"',
            *parts.html.chunks(person.values, escape=True), b'","', text_key.encode(), b'":"',
            *parts.text.chunks(person.values, escape=False),
            b'",' if tail else b'"}', json_bytes(tail)[1:] if tail else b""]


async def yielding(people: Sequence[Recipient], encode: Callable[[Recipient], _T]) -> AsyncIterator[
        tuple[Recipient, _T]]:
    """Each recipient with ``encode(person)``, the event loop given a turn every ``YIELD_EVERY`` of them.

    Encoding a batch of 500 takes tens of milliseconds, and meanwhile no request already going out is fed:
    the server drains the socket buffers in a few milliseconds and waits. A turn now and then lets the
    loop hand them their next slices while the batch is encoded.
    """
    for index, person in enumerate(people):
        if index and index % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        yield person, encode(person)


def json_array(messages: Sequence[list[bytes]]) -> Pieces:
    """The JSON array of the messages, as the pieces of a request body (never joined whole: ``Pieces``)."""
    pieces = [b"["]
    for chunks in messages:
        pieces += chunks
        pieces.append(b",")
    if messages:
        pieces.pop()
    pieces.append(b"]")
    return Pieces(pieces)


def tokenised(text: str, token: Callable[[str], str]) -> str:
    """``text`` with every ``{{ placeholder }}`` replaced by ``token(name)``, e.g. ``-name-``."""
    return placeholders.PATTERN.sub(lambda match: token(match[1]), text)


def escaped_values(person: Recipient) -> dict[str, str]:
    """The recipient's values as the HTML part shows them (HTML-escaped, as ``personalise`` does)."""
    return placeholders.shown(person.values, escape=True)


def text_values(person: Recipient) -> dict[str, str]:
    return placeholders.shown(person.values, escape=False)


def error_outcomes(people: Sequence[Recipient], exc: ProviderError) -> list[Outcome]:
    """Outcomes for recipients of a part of a batch that failed as a whole, after earlier parts went out.

    An earlier part was accepted, so raising would lose its outcomes; this says
    what the error means for these rows (the same rules as for a whole batch).
    """
    if isinstance(exc, ProviderAmbiguous):
        status, error_class = "uncertain", "uncertain"
    elif isinstance(exc, ProviderRejected):
        status, error_class = "failed", "permanent"
    else:
        status, error_class = "failed", "transient"
    return [Outcome(delivery_id=person.delivery_id, status=status, error_class=error_class,  # type: ignore[arg-type]
                    error_text=str(exc)) for person in people]


async def send_parts(parts: Sequence[Sequence[Recipient]],
                     send_part: Callable[[int, Sequence[Recipient]], Awaitable[list[Outcome]]]) -> list[Outcome]:
    """Send a batch split into several requests, in order.

    If the first request fails, the error is raised (nothing was accepted).
    If a later one fails, the earlier outcomes stand, the failed part gets
    outcomes for its error, and later parts are not attempted (failed,
    transient: they go back to the queue).
    """
    outcomes: list[Outcome] = []
    for index, part in enumerate(parts):
        try:
            outcomes += await send_part(index, part)
        except ProviderError as exc:
            if index == 0:
                raise
            outcomes += error_outcomes(part, exc)
            rest = [person for later in parts[index + 1:] for person in later]
            outcomes += [Outcome(delivery_id=person.delivery_id, status="failed", error_class="transient",
                                 error_text=f"not handed over: an earlier part of the batch failed ({exc})")
                         for person in rest]
            break
    return outcomes


def chunks(people: Sequence[Recipient], size: int) -> list[Sequence[Recipient]]:
    """``people`` in runs of at most ``size``; none for nobody."""
    return [people[start:start + size] for start in range(0, len(people), size)]
