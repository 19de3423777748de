"""Link reachability against a real, scripted web server on 127.0.0.1 that counts what it is asked.

The server answers by the first part of the path (``/ok/...``, ``/moved/...``, ``/hop/...``), so each
test uses paths of its own and counts only its own hits. Nothing but 127.0.0.1 is ever contacted:
the hosts that must never be reached (x.com, linkedin.com) are answered by ``httpx.MockTransport``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import __version__
from pipeline.checks.reachability import LinkCache, LinkOptions, check_links, refuses_robots
from pipeline.checks.report import LinkResult
from pipeline.config import Checks

FAST = LinkOptions(timeout=5.0, cache_hours=0)
BIG_BODY = 32 * 1024 * 1024  # more than loopback socket buffers hold, so an unread body cannot be sent whole


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body_size: int = 0


def script(method: str, path: str, hit: int) -> Reply:
    """What the site answers to the ``hit``-th request (from 0) for ``path``, whatever the method."""
    kind, _, rest = path.strip("/").partition("/")
    step = rest.rpartition("/")[2]
    match kind:
        case "ok" | "pool":
            return Reply(delay=0.3 if kind == "pool" else 0.0)
        case "moved":
            return Reply(status=301, headers={"Location": f"/ok/moved-{rest}"})
        case "gone":
            return Reply(status=301, headers={"Location": f"/missing/gone-{rest}"})
        case "hop" | "endless":  # /hop/TAG/1 -> 2 -> 3 (200); /endless/TAG/N -> N+1 for ever. Relative Locations.
            if kind == "hop" and step == "3":
                return Reply()
            return Reply(status=302, headers={"Location": str(int(step) + 1)})
        case "loop":
            return Reply(status=302, headers={"Location": "b" if step == "a" else "a"})
        case "missing":
            return Reply(status=404)
        case "error":
            return Reply(status=500)
        case "busy":  # once rate-limited for a second
            return Reply(status=429, headers={"Retry-After": "1"}) if hit == 0 else Reply()
        case "always-busy":
            return Reply(status=429, headers={"Retry-After": "0"})
        case "overloaded":  # asks for an hour: over the cap, so not retried
            return Reply(status=503, headers={"Retry-After": "3600"})
        case "busy-date":  # Retry-After as an HTTP date, about a second ahead
            return Reply(status=503, headers={"Retry-After": formatdate(time.time() + 1, usegmt=True)}) \
                if hit == 0 else Reply()
        case "slow":
            return Reply(delay=2.0)
        case "no-head":  # /no-head/405: HEAD refused with that status, GET answers with a large body
            return Reply(status=int(step)) if method == "HEAD" else Reply(body_size=BIG_BODY)
    return Reply(status=404)


class InFlight:
    """Requests in flight across several sites at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()

    @contextmanager
    def serving(self) -> Iterator[None]:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            yield
        finally:
            with self._lock:
                self.now -= 1


class _CountingServer(ThreadingHTTPServer):
    """Counts the TCP connections it accepts."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.connections = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1  # serve_forever's one thread accepts: no lock needed
        super().process_request(request, client_address)


class Site:
    """A threaded web server on 127.0.0.1 that answers by ``script`` and counts hits, connections and concurrency.

    ``overall`` counts the requests in flight at this site and at the others given the same one;
    ``keep_alive`` answers in HTTP/1.1, so that a client may reuse its connection.
    """

    def __init__(self, *, overall: InFlight | None = None, keep_alive: bool = False) -> None:
        self.overall = overall or InFlight()
        self.hits: Counter[tuple[str, str]] = Counter()
        self.headers: dict[str, dict[str, str]] = {}
        self._bodies_sent: dict[str, bool] = {}
        self._body_done = threading.Condition()
        self.most_in_flight: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.server = _CountingServer(_KeepAliveHandler if keep_alive else _Handler)
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]  # clients that gave up
        self.server.site = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, path: str, method: str | None = None) -> int:
        with self._lock:
            return sum(n for (verb, where), n in self.hits.items() if where == path and method in (None, verb))

    def record(self, method: str, path: str, headers: dict[str, str]) -> int:
        with self._lock:
            hit = sum(n for (_, where), n in self.hits.items() if where == path)
            self.hits[method, path] += 1
            self.headers[path] = headers
            return hit

    def body_sent(self, path: str) -> bool:
        """Whether the whole body of the GET of ``path`` was sent, once its handler has finished."""
        with self._body_done:
            assert self._body_done.wait_for(lambda: path in self._bodies_sent, timeout=10)
            return self._bodies_sent[path]

    def record_body(self, path: str, whole: bool) -> None:
        with self._body_done:
            self._bodies_sent[path] = whole
            self._body_done.notify_all()

    @contextmanager
    def serving(self, group: str) -> Iterator[None]:
        with self._lock:
            self._in_flight[group] += 1
            self.most_in_flight[group] = max(self.most_in_flight[group], self._in_flight[group])
        try:
            with self.overall.serving():
                yield
        finally:
            with self._lock:
                self._in_flight[group] -= 1

    def start(self) -> Site:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def do_GET(self) -> None:
        self._answer("GET")

    def _answer(self, method: str) -> None:
        site: Site = self.server.site  # type: ignore[attr-defined]
        hit = site.record(method, self.path, {name.lower(): value for name, value in self.headers.items()})
        reply = script(method, self.path, hit)
        with site.serving("/".join(self.path.split("/")[1:3])):
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(reply.body_size))
        self.end_headers()
        if method == "GET" and reply.body_size:
            self._send_body(site, reply.body_size)

    def _send_body(self, site: Site, size: int) -> None:
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            site.record_body(self.path, False)
        else:
            site.record_body(self.path, True)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"  # the connection stays open for the client's next request


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    site = Site().start()
    yield site
    site.stop()


def check(site: Site, *paths: str, options: LinkOptions = FAST,
          cache: LinkCache | None = None) -> dict[str, LinkResult]:
    """Check the site's paths; return the results by path."""
    results = asyncio.run(check_links([site.url(path) for path in paths], options, cache=cache))
    return {path: results[site.url(path)] for path in paths}


def test_ok_is_one_head_with_our_user_agent(site: Site) -> None:
    result = check(site, "/ok/plain")["/ok/plain"]
    assert (result.result, result.status, result.final_url, result.message) == ("ok", 200, None, "")
    assert site.count("/ok/plain", "HEAD") == 1 and site.count("/ok/plain") == 1
    assert site.headers["/ok/plain"]["user-agent"] == f"newsletter-link-check/{__version__}"
    assert site.headers["/ok/plain"]["accept"] == "*/*"


def test_same_url_twice_is_requested_once(site: Site) -> None:
    url = site.url("/ok/twice")
    results = asyncio.run(check_links([url, url], FAST))
    assert list(results) == [url] and results[url].result == "ok"
    assert site.count("/ok/twice") == 1


def test_permanent_redirect_is_redirected_with_final_url(site: Site) -> None:
    result = check(site, "/moved/a")["/moved/a"]
    assert (result.result, result.status, result.final_url) == ("redirected", 200, site.url("/ok/moved-a"))
    assert site.count("/moved/a") == 1 and site.count("/ok/moved-a") == 1


def test_temporary_redirect_chain_is_ok_with_final_url(site: Site) -> None:
    result = check(site, "/hop/chain/1")["/hop/chain/1"]
    assert (result.result, result.status, result.final_url) == ("ok", 200, site.url("/hop/chain/3"))
    assert [site.count(f"/hop/chain/{n}") for n in (1, 2, 3)] == [1, 1, 1]


def test_permanent_redirect_to_a_missing_page_is_broken(site: Site) -> None:
    result = check(site, "/gone/a")["/gone/a"]
    assert (result.result, result.status, result.final_url) == ("broken", 404, site.url("/missing/gone-a"))


def test_redirect_loop_is_broken(site: Site) -> None:
    result = check(site, "/loop/x/a")["/loop/x/a"]
    assert (result.result, result.message) == ("broken", "redirect loop")
    assert site.count("/loop/x/a") == 1 and site.count("/loop/x/b") == 1


def test_too_many_redirects_is_broken(site: Site) -> None:
    result = check(site, "/endless/x/0", options=LinkOptions(max_redirects=3, cache_hours=0))["/endless/x/0"]
    assert (result.result, result.message) == ("broken", "too many redirects")
    assert [site.count(f"/endless/x/{n}") for n in range(5)] == [1, 1, 1, 1, 0]


@pytest.mark.parametrize(("path", "status"), [("/missing/a", 404), ("/error/a", 500)])
def test_error_status_is_broken(site: Site, path: str, status: int) -> None:
    result = check(site, path)[path]
    assert (result.result, result.status) == ("broken", status)
    assert site.count(path) == 1


def test_429_is_retried_once_after_retry_after(site: Site) -> None:
    result = check(site, "/busy/a")["/busy/a"]
    assert (result.result, result.status) == ("ok", 200)
    assert site.count("/busy/a", "HEAD") == 2 and site.count("/busy/a") == 2


def test_503_with_an_http_date_is_retried(site: Site) -> None:
    result = check(site, "/busy-date/a")["/busy-date/a"]
    assert (result.result, result.status) == ("ok", 200)
    assert site.count("/busy-date/a") == 2


def test_429_after_the_retry_is_broken(site: Site) -> None:
    result = check(site, "/always-busy/a")["/always-busy/a"]
    assert (result.result, result.status, result.message) == ("broken", 429, "rate-limited (429) after one retry")
    assert site.count("/always-busy/a") == 2


def test_retry_after_over_the_cap_is_not_waited_for(site: Site) -> None:
    result = check(site, "/overloaded/a")["/overloaded/a"]
    assert (result.result, result.status) == ("broken", 503)
    assert "not retried" in result.message
    assert site.count("/overloaded/a") == 1


def test_slow_answer_is_unreachable(site: Site) -> None:
    result = check(site, "/slow/a", options=LinkOptions(timeout=0.5, cache_hours=0))["/slow/a"]
    assert (result.result, result.status, result.message) == ("unreachable", None, "timed out after 0.5 s")


@pytest.mark.parametrize("refusal", [405, 403, 501])
def test_head_refused_falls_back_to_get_without_reading_the_body(site: Site, refusal: int) -> None:
    path = f"/no-head/{refusal}"
    result = check(site, path)[path]
    assert (result.result, result.status) == ("ok", 200)
    assert site.count(path, "HEAD") == 1 and site.count(path, "GET") == 1
    assert site.body_sent(path) is False  # the client hung up after the headers


def test_refused_port_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    result = asyncio.run(check_links([url], FAST))[url]
    assert (result.result, result.status, result.message) == ("unreachable", None, "connection refused")


def test_invalid_url_is_broken_not_raised() -> None:
    result = asyncio.run(check_links(["http://[::1/"], FAST))["http://[::1/"]
    assert (result.result, result.message) == ("broken", "invalid URL")


def test_per_host_limit(site: Site) -> None:
    results = check(site, *(f"/pool/host/{n}" for n in range(8)), options=LinkOptions(per_host=2, cache_hours=0))
    assert {result.result for result in results.values()} == {"ok"}
    assert site.most_in_flight["pool/host"] <= 2
    assert all(site.count(f"/pool/host/{n}") == 1 for n in range(8))


def test_global_limit(site: Site) -> None:
    options = LinkOptions(concurrency=3, per_host=8, cache_hours=0)
    results = check(site, *(f"/pool/all/{n}" for n in range(8)), options=options)
    assert {result.result for result in results.values()} == {"ok"}
    assert site.most_in_flight["pool/all"] <= 3


def test_per_host_limit_holds_while_several_hosts_are_served_at_once() -> None:
    overall = InFlight()
    sites = [Site(overall=overall).start() for _ in range(3)]
    try:
        urls = [site.url(f"/pool/many/{n}") for site in sites for n in range(6)]
        results = asyncio.run(check_links(urls, LinkOptions(concurrency=128, per_host=2, cache_hours=0)))
    finally:
        for site in sites:
            site.stop()
    assert {result.result for result in results.values()} == {"ok"}
    assert all(site.most_in_flight["pool/many"] <= 2 for site in sites)
    assert overall.most > 2  # the hosts were served at the same time, each within its own limit


def test_connections_are_reused_per_host() -> None:
    site = Site(keep_alive=True).start()
    try:
        results = check(site, *(f"/ok/reused/{n}" for n in range(8)), "/moved/reused", "/missing/reused",
                        options=LinkOptions(per_host=2, cache_hours=0))
    finally:
        site.stop()
    assert [result.result for result in results.values()] == ["ok"] * 8 + ["redirected", "broken"]
    assert site.count("/ok/moved-reused") == 1
    assert site.server.connections <= 2  # one pool for the check: 11 requests on the host's 2 connections


def test_progress_is_reported_for_every_url(site: Site) -> None:
    seen: list[LinkResult] = []
    urls = [site.url("/ok/progress"), site.url("/missing/progress")]
    asyncio.run(check_links(urls, FAST, on_result=seen.append))
    assert sorted(result.url for result in seen) == sorted(urls)


# The cache.

CACHED = LinkOptions(timeout=5.0, cache_hours=24.0)


def test_cache_keeps_good_results_only(site: Site, tmp_path: Path) -> None:
    file = tmp_path / "cache" / "links.json"
    paths = ("/ok/cached", "/moved/cached", "/missing/cached")
    first = check(site, *paths, options=CACHED, cache=LinkCache(file))
    again = check(site, *paths, options=CACHED, cache=LinkCache(file))  # a new run, reading the file
    assert again == first
    assert site.count("/ok/cached") == 1
    assert site.count("/moved/cached") == 1 and site.count("/ok/moved-cached") == 1
    assert site.count("/missing/cached") == 2  # broken: asked again
    entries = json.loads(file.read_text(encoding="utf-8"))
    assert sorted(entries) == [site.url("/moved/cached"), site.url("/ok/cached")]
    assert datetime.fromisoformat(entries[site.url("/ok/cached")]["checked_at"]).tzinfo is not None
    assert not list(file.parent.glob("*.tmp"))


def test_expired_entry_is_requested_again(site: Site, tmp_path: Path) -> None:
    file = tmp_path / "links.json"
    check(site, "/ok/expiring", options=CACHED, cache=LinkCache(file))
    entries = json.loads(file.read_text(encoding="utf-8"))
    entries[site.url("/ok/expiring")]["checked_at"] = (datetime.now(UTC) - timedelta(hours=25)).isoformat()
    file.write_text(json.dumps(entries), encoding="utf-8")
    check(site, "/ok/expiring", options=CACHED, cache=LinkCache(file))
    assert site.count("/ok/expiring") == 2


def test_cache_hours_zero_turns_the_cache_off(site: Site, tmp_path: Path) -> None:
    file = tmp_path / "links.json"
    cache = LinkCache(file)
    check(site, "/ok/uncached", options=FAST, cache=cache)
    check(site, "/ok/uncached", options=FAST, cache=cache)
    assert site.count("/ok/uncached") == 2
    assert not file.exists()


def test_corrupt_cache_file_is_an_empty_cache(site: Site, tmp_path: Path) -> None:
    file = tmp_path / "links.json"
    file.write_text("{not json", encoding="utf-8")
    result = check(site, "/ok/corrupt", options=CACHED, cache=LinkCache(file))["/ok/corrupt"]
    assert result.result == "ok"
    assert site.url("/ok/corrupt") in json.loads(file.read_text(encoding="utf-8"))


def test_fresh_cache_get(tmp_path: Path) -> None:
    cache = LinkCache(tmp_path / "links.json")
    cache.put(LinkResult(url="https://example.org/", status=200, final_url=None, result="ok"))
    cache.put(LinkResult(url="https://example.org/down", status=None, final_url=None, result="unreachable"))
    assert cache.get("https://example.org/", 1.0) == LinkResult(url="https://example.org/", status=200,
                                                                final_url=None, result="ok")
    assert cache.get("https://example.org/", 0) is None
    assert cache.get("https://example.org/down", 1.0) is None


# Hosts that must never be contacted: answered by MockTransport.


def run_mocked(urls: list[str], answer: Callable[[httpx.Request], httpx.Response]) -> tuple[
        dict[str, LinkResult], list[tuple[str, str]]]:
    """Check the URLs through a MockTransport answering with ``answer(request)``; return results and requests."""
    requests: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, str(request.url)))
        return answer(request)

    async def run() -> dict[str, LinkResult]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await check_links(urls, FAST, client=client)

    return asyncio.run(run()), requests


def test_hosts_that_refuse_robots() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["user-agent"] == f"newsletter-link-check/{__version__}"
        return httpx.Response(999 if "linkedin" in request.url.host else 403)

    urls = ["https://x.com/someone/status/1", "https://www.linkedin.com/in/someone"]
    results, requests = run_mocked(urls, answer)
    tweet, profile = (results[url] for url in urls)
    assert (tweet.result, tweet.status, tweet.message) == ("broken", 403, "this host refuses automated checks")
    assert (profile.result, profile.status, profile.message) == ("broken", 999, "this host refuses automated checks")
    assert sorted(requests) == sorted([("HEAD", urls[0]), ("GET", urls[0]), ("HEAD", urls[1])])
    assert all(refuses_robots(url) for url in urls)


@pytest.mark.parametrize(("url", "refuses"), [
    ("https://x.com/a", True), ("https://mobile.twitter.com/a", True), ("https://linkedin.com/", True),
    ("https://X.COM./a", True), ("https://notx.com/", False), ("https://x.com.example.org/", False),
    ("https://example.org/x.com", False), ("not a url [", False),
])
def test_refuses_robots(url: str, refuses: bool) -> None:
    assert refuses_robots(url) is refuses


def test_dns_failure_is_unreachable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    url = "https://no-such-host.example/"
    results, _ = run_mocked([url], answer)
    assert (results[url].result, results[url].message) == ("unreachable", "DNS lookup failed")


def test_options_from_settings() -> None:
    checks = Checks(link_timeout=3, link_concurrency=5, link_per_host=2, link_cache_hours=0, retry_after_cap=7,
                    max_redirects=4)
    assert LinkOptions.from_settings(checks) == LinkOptions(timeout=3, concurrency=5, per_host=2, max_redirects=4,
                                                            retry_after_cap=7, cache_hours=0)
