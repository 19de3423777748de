"""Whether the http(s) links of an edition answer.

``check_links`` requests every URL it is given: the caller leaves out the links that must never
be requested (tokenised, unsubscribe and placeholder links). Each distinct URL is tried once,
HEAD first, then a streamed GET when HEAD is refused (403, 405, 501), whose body is read only when
it says it is short (64 KiB): one client serves the whole check, and an answer read to its end leaves
its connection open for the host's next link (HTTP/1.1 keep-alive).
Redirects are followed by hand so that a permanent one (301, 308) can be reported, a 429 or 503
is retried once after its Retry-After, and requests are limited overall and per origin (scheme,
host and port). Results "ok" and "redirected" are kept in a ``LinkCache`` for ``cache_hours``.

Every URL gets a result; a single bad URL never raises:

    ok           2xx, directly or through temporary redirects (302, 303, 307)
    redirected   2xx through at least one permanent redirect; final_url says where to link instead
    broken       4xx or 5xx (status set), a redirect loop, too many redirects, an invalid URL
    unreachable  a timeout, a DNS or connection failure (status None)

``final_url`` is where the redirects ended, or None when the URL answered itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import ssl
import tempfile
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from pipeline import __version__
from pipeline.checks.report import LinkOutcome, LinkResult
from pipeline.config import Checks

__all__ = ["LinkCache", "LinkOptions", "check_links", "refuses_robots"]

logger = logging.getLogger(__name__)

HEADERS = {"User-Agent": f"newsletter-link-check/{__version__}", "Accept": "*/*"}
HEAD_REFUSED = frozenset({403, 405, 501})  # servers that refuse HEAD but may answer GET
PERMANENT_REDIRECTS = frozenset({301, 308})
TEMPORARY_REDIRECTS = frozenset({302, 303, 307})
REDIRECTS = PERMANENT_REDIRECTS | TEMPORARY_REDIRECTS
RETRIED = frozenset({429, 503})
DEFAULT_PORTS = {"http": 80, "https": 443}
DEFAULT_RETRY_WAIT = 1.0  # seconds, when a 429 or 503 has no usable Retry-After
# LinkedIn answers 999, and X/Twitter 403, to anything that looks automated, whether or not the page exists.
ROBOT_REFUSERS = ("linkedin.com", "x.com", "twitter.com")
ROBOT_REFUSALS = frozenset({403, 999})
CACHED_OUTCOMES = frozenset({"ok", "redirected"})
SMALL_BODY = 64 * 1024  # bytes: a GET answer this short is read, so that its connection can serve the next link


@dataclass(frozen=True, kw_only=True)
class LinkOptions:
    """How links are tried: limits, patience, and how long a good answer is trusted."""

    timeout: float = 10.0  # seconds per request
    concurrency: int = 128  # requests in flight at once
    per_host: int = 4  # requests in flight to one scheme, host and port
    max_redirects: int = 10
    retry_after_cap: float = 30.0  # longest Retry-After honoured, seconds
    cache_hours: float = 24.0  # 0 turns the cache off

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.concurrency < 1 or self.per_host < 1 or self.max_redirects < 0:
            raise ValueError(f"invalid link options: {self}")

    @classmethod
    def from_settings(cls, checks: Checks) -> LinkOptions:
        """The link options of the ``[checks]`` settings."""
        return cls(
            timeout=checks.link_timeout,
            concurrency=checks.link_concurrency,
            per_host=checks.link_per_host,
            max_redirects=checks.max_redirects,
            retry_after_cap=checks.retry_after_cap,
            cache_hours=checks.link_cache_hours,
        )


def refuses_robots(url: str) -> bool:
    """Whether the URL is on a host that turns automated checks away (LinkedIn, X/Twitter, subdomains).

    Such a host's "broken" answer (999 or 403) says nothing about the page, so the caller reports
    it as a warning. Pass ``result.final_url or result.url`` to judge the host that answered.
    """
    try:
        host = httpx.URL(url).host.lower().rstrip(".")
    except (httpx.InvalidURL, ValueError):
        return False
    return any(host == name or host.endswith("." + name) for name in ROBOT_REFUSERS)


class LinkCache:
    """Good link results remembered in a JSON file, so that a link is not requested again while fresh.

    Only "ok" and "redirected" are kept: a site that was down, or a link fixed since, is tried
    again. Entries are keyed by URL: the LinkResult fields and ``checked_at`` (UTC, ISO 8601).
    A missing or corrupt file is an empty cache.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._entries = _read_entries(self.path)

    def get(self, url: str, max_age_hours: float) -> LinkResult | None:
        """The remembered result for the URL, if it is younger than ``max_age_hours``."""
        entry = self._entries.get(url)
        if entry is None or max_age_hours <= 0:
            return None
        try:
            checked_at = datetime.fromisoformat(entry["checked_at"])
            age = datetime.now(UTC) - checked_at
        except (KeyError, TypeError, ValueError):  # a naive or malformed time
            return None
        if not timedelta(0) <= age < timedelta(hours=max_age_hours):
            return None
        return _entry_result(url, entry)

    def put(self, result: LinkResult) -> None:
        """Remember a good result now; forget the URL after any other result."""
        if result.result in CACHED_OUTCOMES:
            checked_at = datetime.now(UTC).isoformat(timespec="seconds")
            self._entries[result.url] = {**asdict(result), "checked_at": checked_at}
        else:
            self._entries.pop(result.url, None)

    def save(self) -> None:
        """Write the file atomically (a temporary file renamed over it).

        The cache only saves time, so a failure to write it is logged, not raised: the old
        file, if any, is left as it was.
        """
        temporary: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.path.parent,
                                             prefix=f".{self.path.name}.", suffix=".tmp", delete=False) as file:
                temporary = file.name
                json.dump(self._entries, file, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("cannot write the link cache %s: %s", self.path, exc.strerror or exc)
            if temporary is not None:
                with suppress(OSError):
                    os.unlink(temporary)


def _read_entries(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON: start afresh
        return {}
    if not isinstance(data, dict):
        return {}
    return {url: entry for url, entry in data.items() if isinstance(entry, dict)}


def _entry_result(url: str, entry: dict[str, Any]) -> LinkResult | None:
    status, final_url, outcome, message = (entry.get(key) for key in ("status", "final_url", "result", "message"))
    if outcome not in CACHED_OUTCOMES or not isinstance(status, int | None) or not isinstance(final_url, str | None):
        return None
    return LinkResult(url=url, status=status, final_url=final_url, result=outcome,
                      message=message if isinstance(message, str) else "")


async def check_links(
    urls: Iterable[str],
    options: LinkOptions,
    *,
    client: httpx.AsyncClient | None = None,
    cache: LinkCache | None = None,
    on_result: Callable[[LinkResult], None] | None = None,
) -> dict[str, LinkResult]:
    """Try every http(s) URL given and return a result for each, keyed by URL.

    Every URL given is requested (once, however often it is given) unless the cache holds a
    fresh good result for it: the caller must leave out links that must not be requested.
    ``client`` is for tests or to share a pool (redirects are followed here whatever its setting);
    without one a client is made and closed here. The cache is saved when anything was requested.
    ``on_result`` is called as each result is known, for a progress display.
    """
    wanted = list(dict.fromkeys(urls))
    cache = cache if options.cache_hours > 0 else None
    results: dict[str, LinkResult] = {}
    to_request = []
    for url in wanted:
        cached = cache.get(url, options.cache_hours) if cache is not None else None
        if cached is None:
            to_request.append(url)
            continue
        results[url] = cached
        if on_result is not None:
            on_result(cached)
    if to_request:
        async with _client_for(client, options) as http:
            checker = _Checker(http, options, on_result)
            for result in await asyncio.gather(*(checker.check(url) for url in to_request)):
                results[result.url] = result
        if cache is not None:
            for url in to_request:
                cache.put(results[url])
            cache.save()
    return {url: results[url] for url in wanted}


@asynccontextmanager
async def _client_for(client: httpx.AsyncClient | None, options: LinkOptions) -> AsyncIterator[httpx.AsyncClient]:
    if client is not None:
        yield client
        return
    async with httpx.AsyncClient(follow_redirects=False, headers=HEADERS, timeout=options.timeout,
                                 transport=_PoolPerOrigin(options.per_host)) as own:
        yield own


class _PoolPerOrigin(httpx.AsyncBaseTransport):
    """One client's connections, kept in a small pool per origin (scheme, host, port) of ``per_host``.

    The semaphores bound the requests in flight, so a host's pool needs no more connections than its
    limit, and each is reused for the host's next link. One pool for every host would do the same,
    slowly: httpcore (1.0) looks at each connection it holds for every request it places, which over
    80 connections to 20 hosts costs more than the hosts' answers.
    """

    def __init__(self, per_host: int) -> None:
        self._limits = httpx.Limits(max_connections=per_host, max_keepalive_connections=per_host)
        self._tls: ssl.SSLContext | None = None  # made once, when the first https origin needs it
        self._pools: dict[tuple[str, str, int | None], httpx.AsyncHTTPTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = httpx.AsyncHTTPTransport(verify=self._verify(url.scheme),
                                                                  limits=self._limits)
        return await pool.handle_async_request(request)

    def _verify(self, scheme: str) -> ssl.SSLContext | bool:
        """The TLS context every https pool shares (reading the CA bundle takes tens of ms); none for http."""
        if scheme != "https":
            return False
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        return self._tls

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


@dataclass(frozen=True, kw_only=True)
class _Answer:
    """The part of one HTTP response that the check needs."""

    status: int
    location: str | None = None
    retry_after: str | None = None
    note: str = ""  # what happened about a 429 or 503, appended to the message


@dataclass(frozen=True, kw_only=True)
class _NoAnswer:
    """A request that got no HTTP answer, with the short reason."""

    outcome: LinkOutcome
    message: str


class _Checker:
    """Tries links through one client, under the global and per-origin limits."""

    def __init__(self, client: httpx.AsyncClient, options: LinkOptions,
                 on_result: Callable[[LinkResult], None] | None) -> None:
        self.client, self.options, self.on_result = client, options, on_result
        self._all = asyncio.Semaphore(options.concurrency)
        self._origins: defaultdict[tuple[str, str, int | None], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(options.per_host))

    async def check(self, url: str) -> LinkResult:
        result = await self._follow(url)
        if self.on_result is not None:
            self.on_result(result)
        return result

    async def _follow(self, url: str) -> LinkResult:
        """Follow the URL's redirects by hand and judge where they end."""
        chain, permanent, current = [url], False, url
        while True:
            answer = await self._answer(current)
            final_url = current if current != url else None
            if isinstance(answer, _NoAnswer):
                return LinkResult(url=url, status=None, final_url=final_url, result=answer.outcome,
                                  message=answer.message)
            if answer.status not in REDIRECTS or not answer.location:
                return _judge(url, current, answer, permanent)
            target = urljoin(current, answer.location)  # Location may be relative (RFC 9110 §10.2.2)
            if target in chain:
                return LinkResult(url=url, status=answer.status, final_url=final_url, result="broken",
                                  message="redirect loop")
            if len(chain) > self.options.max_redirects:
                return LinkResult(url=url, status=answer.status, final_url=final_url, result="broken",
                                  message="too many redirects")
            chain.append(target)
            permanent = permanent or answer.status in PERMANENT_REDIRECTS
            current = target

    async def _answer(self, url: str) -> _Answer | _NoAnswer:
        """One hop's answer, retried once after a 429 or 503 if Retry-After is within the cap."""
        answer = await self._head_or_get(url)
        if isinstance(answer, _NoAnswer) or answer.status not in RETRIED:
            return answer
        wait = _retry_wait(answer.retry_after, self.options.retry_after_cap)
        if wait > self.options.retry_after_cap:
            cap = self.options.retry_after_cap
            return replace(answer, note=f", not retried: Retry-After {wait:.0f} s is over the {cap:g} s cap")
        await asyncio.sleep(wait)
        again = await self._head_or_get(url)
        return again if isinstance(again, _NoAnswer) else replace(again, note=" after one retry")

    async def _head_or_get(self, url: str) -> _Answer | _NoAnswer:
        answer = await self._request("HEAD", url)
        if isinstance(answer, _Answer) and answer.status in HEAD_REFUSED:
            answer = await self._request("GET", url)
        return answer

    async def _request(self, method: str, url: str) -> _Answer | _NoAnswer:
        """One request, headers only: a GET's body is never read. Foreign errors end here."""
        timeout = self.options.timeout
        try:
            async with self._slot(url), asyncio.timeout(timeout):
                async with self.client.stream(method, url, headers=HEADERS, follow_redirects=False,
                                              timeout=timeout) as response:
                    if _short(method, response):
                        # Read to its end, the connection goes back to the pool for the host's next link;
                        # one closed with its answer unread is closed (httpcore), and the next link opens another.
                        await response.aread()
                    return _Answer(status=response.status_code, location=response.headers.get("location"),
                                   retry_after=response.headers.get("retry-after"))
        except (TimeoutError, httpx.TimeoutException):
            return _NoAnswer(outcome="unreachable", message=f"timed out after {timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
            return _no_answer(exc)

    @asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[None]:
        """Wait for a free place on the URL's origin, then for one overall.

        The origin comes first so that a request queued behind a busy host holds no global place.
        """
        parsed = httpx.URL(url)
        origin = (parsed.scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme))
        async with self._origins[origin], self._all:
            yield


def _short(method: str, response: httpx.Response) -> bool:
    """Whether the answer's body is nothing (HEAD) or small enough to read: a GET's large page is never read."""
    if method == "HEAD":
        return True
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= SMALL_BODY


def _judge(url: str, current: str, answer: _Answer, permanent: bool) -> LinkResult:
    """The result of a chain that ended with a non-redirect answer."""
    final_url = current if current != url else None
    if 200 <= answer.status < 300:
        return LinkResult(url=url, status=answer.status, final_url=final_url,
                          result="redirected" if permanent else "ok")
    return LinkResult(url=url, status=answer.status, final_url=final_url, result="broken",
                      message=_status_message(current, answer))


def _status_message(url: str, answer: _Answer) -> str:
    status = answer.status
    if status in ROBOT_REFUSALS and refuses_robots(url):
        return "this host refuses automated checks"
    if status == 429:
        return f"rate-limited (429){answer.note}"
    if status in REDIRECTS:
        return f"redirect ({status}) without a Location header"
    return f"{httpx.codes.get_reason_phrase(status) or f'status {status}'}{answer.note}"


def _retry_wait(retry_after: str | None, cap: float) -> float:
    """Seconds to wait before the retry, from Retry-After: seconds or an HTTP date (RFC 9110 §10.2.3)."""
    value = (retry_after or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return min(DEFAULT_RETRY_WAIT, cap)
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _no_answer(exc: Exception) -> _NoAnswer:
    """A short reason for a request that failed, from the exception and its causes; never a traceback."""
    if isinstance(exc, httpx.UnsupportedProtocol):
        return _NoAnswer(outcome="broken", message="not an http(s) address")
    if isinstance(exc, httpx.InvalidURL | ValueError):
        return _NoAnswer(outcome="broken", message="invalid URL")
    for cause in _causes(exc):
        for kind, reason in _CAUSES:
            if isinstance(cause, kind):
                return _NoAnswer(outcome="unreachable", message=reason)
    reason = next((reason for kind, reason in _HTTPX_ERRORS if isinstance(exc, kind)), "request failed")
    return _NoAnswer(outcome="unreachable", message=reason)


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (socket.gaierror, "DNS lookup failed"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (ssl.SSLCertVerificationError, "TLS certificate not valid"),
    (ssl.SSLError, "TLS handshake failed"),
)
_HTTPX_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (httpx.ConnectError, "connection failed"),
    (httpx.RemoteProtocolError, "invalid HTTP answer"),
    (httpx.ReadError, "connection lost"),
    (httpx.WriteError, "connection lost"),
    (httpx.ProxyError, "proxy failed"),
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it, and the members of any exception group among them."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [linked for linked in (current.__cause__, current.__context__) if linked is not None]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
