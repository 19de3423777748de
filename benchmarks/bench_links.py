"""Benchmark link reachability against 20 local web servers that each take 200 ms to answer.

200 distinct links, 10 on each of 20 servers on 127.0.0.1 (threaded, distinct ports: 20 origins), are
checked with the default LinkOptions (128 requests at once, 4 per host) and no cache. The wall time is
compared with the floor those limits imply:

    rounds = max(ceil(links per host / per_host), ceil(links / concurrency))
    floor  = rounds x 0.2 s

The servers speak HTTP/1.1 with keep-alive, as real sites do, and count the TCP connections they accept
and the requests each serves at once: one client (one pool) serves the whole check, so a host should see
at most ``per_host`` connections, each reused for several links, and never more than ``per_host``
requests at once. The time end to end is printed beside the check: from this script's start (imports
included) to the last result.

Then the same links are checked once to fill a LinkCache in a temporary file, and once more with the
warm cache read afresh from that file (no request at all). Figures are printed, not asserted. Nothing
but 127.0.0.1 is contacted.

Run from the project root:  .venv/bin/python benchmarks/bench_links.py [--hosts 20] [--links-per-host 10]
                            [--delay 0.2]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the imports: the time end to end includes them

import argparse  # noqa: E402
import asyncio  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from pipeline.checks.reachability import LinkCache, LinkOptions, check_links  # noqa: E402

HOSTS = 20
LINKS_PER_HOST = 10
ANSWER_DELAY = 0.2  # seconds each server takes to answer


class _CountingServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server on 127.0.0.1 that counts requests, TCP connections and requests in flight."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.delay = delay
        self.hits = self.connections = self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1  # one per accepted TCP connection; keep-alive requests reuse it
        super().process_request(request, client_address)

    def counts(self) -> tuple[int, int]:
        """(requests, connections) so far."""
        with self.lock:
            return self.hits, self.connections


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers HEAD and GET with 200 and an empty body after the server's delay, keeping the connection open."""

    protocol_version = "HTTP/1.1"  # keep-alive: the client may send the next request on the same connection

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        server: _CountingServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.hits += 1
            server.in_flight += 1
            server.most_in_flight = max(server.most_in_flight, server.in_flight)
        try:
            time.sleep(server.delay)
        finally:
            with server.lock:
                server.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_servers(count: int, delay: float) -> list[_CountingServer]:
    servers = []
    for _ in range(count):
        server = _CountingServer(delay)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
    return servers


def stop_servers(servers: list[_CountingServer]) -> None:
    for server in servers:
        server.shutdown()
        server.server_close()


def timed_check(urls: list[str], options: LinkOptions, cache: LinkCache | None = None) -> tuple[float, int]:
    """Wall time of one check and how many results were "ok"."""
    started = time.perf_counter()
    results = asyncio.run(check_links(urls, options, cache=cache))
    wall = time.perf_counter() - started
    return wall, sum(result.result == "ok" for result in results.values())


class Tally:
    """Requests and connections the servers saw since the last ``take``."""

    def __init__(self, servers: list[_CountingServer]):
        self.servers = servers
        self.last = [server.counts() for server in servers]

    def take(self) -> tuple[int, int, int]:
        """(requests, connections, most connections at one host) since the last take."""
        now = [server.counts() for server in self.servers]
        requests = sum(hits - before for (hits, _), (before, _) in zip(now, self.last, strict=True))
        per_host = [made - before for (_, made), (_, before) in zip(now, self.last, strict=True)]
        self.last = now
        return requests, sum(per_host), max(per_host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=HOSTS, help=f"local servers (default {HOSTS})")
    parser.add_argument("--links-per-host", type=int, default=LINKS_PER_HOST,
                        help=f"distinct links on each (default {LINKS_PER_HOST})")
    parser.add_argument("--delay", type=float, default=ANSWER_DELAY,
                        help=f"seconds each server takes to answer (default {ANSWER_DELAY:g})")
    args = parser.parse_args()
    if args.hosts < 1 or args.links_per_host < 1 or args.delay < 0:
        parser.error("--hosts and --links-per-host must be positive, --delay not negative")
    servers = start_servers(args.hosts, args.delay)
    try:
        run(servers, args.links_per_host, args.delay)
    finally:
        stop_servers(servers)


def run(servers: list[_CountingServer], links_per_host: int, delay: float) -> None:
    urls = [f"http://127.0.0.1:{server.server_address[1]}/page/{n}" for server in servers
            for n in range(links_per_host)]
    options = LinkOptions()
    tally = Tally(servers)
    hosts = len(servers)

    per_host_rounds = math.ceil(links_per_host / options.per_host)
    global_rounds = math.ceil(len(urls) / options.concurrency)
    floor = max(per_host_rounds, global_rounds) * delay
    print(f"{len(urls)} links on {hosts} hosts ({links_per_host} each, distinct ports on 127.0.0.1, HTTP/1.1 "
          f"keep-alive), answer after {delay:g} s; concurrency {options.concurrency}, per host {options.per_host}, "
          "no cache")
    print(f"per-host floor = max(ceil({links_per_host}/{options.per_host}) = {per_host_rounds}, "
          f"ceil({len(urls)}/{options.concurrency}) = {global_rounds}) rounds x {delay:g} s = {floor:.2f} s")

    before_check = time.perf_counter()
    wall, ok = timed_check(urls, options)
    end_to_end = time.perf_counter() - STARTED
    requests, connections, most = tally.take()
    ratio = wall / floor if floor else float("inf")
    print(f"no cache:   check {wall:.3f} s, {ok}/{len(urls)} ok, {requests} requests; check / floor = {ratio:.2f} "
          f"(expected at most 2)")
    print(f"            end to end {end_to_end:.3f} s (start-up: imports and {hosts} servers, "
          f"{before_check - STARTED:.3f} s, then the check)")
    most_in_flight = max(server.most_in_flight for server in servers)
    reused = connections <= hosts * options.per_host
    print(f"            {connections} TCP connections for {requests} requests, at most {most} at one host; "
          f"at most {most_in_flight} requests in flight at one host "
          f"({'connections reused' if reused else 'NOT REUSED: more connections than hosts x per host'}, "
          f"{'within' if most_in_flight <= options.per_host else 'OVER'} the per-host limit)")

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "links.json"
        wall, ok = timed_check(urls, options, LinkCache(file))
        requests, connections, _ = tally.take()
        print(f"cold cache: check {wall:.3f} s, {ok}/{len(urls)} ok, {requests} requests on {connections} "
              "connections (fills the cache)")
        started = time.perf_counter()
        cache = LinkCache(file)
        wall, ok = timed_check(urls, options, cache)
        total = time.perf_counter() - started
        requests, _, _ = tally.take()
        print(f"warm cache: check {wall * 1000:.1f} ms ({total * 1000:.1f} ms with reading the file), "
              f"{ok}/{len(urls)} ok, {requests} requests (expected under 100 ms, 0 requests)")


if __name__ == "__main__":
    main()
