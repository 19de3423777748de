"""Benchmark link reachability against 20 local web servers that each take 200 ms to answer.

200 distinct links, 10 on each of 20 servers on 127.0.0.1 (threaded, distinct ports), are checked
with the default LinkOptions (16 requests at once, 4 per host) and no cache. The wall time is
compared with the floor those limits imply:

    rounds = max(ceil(links per host / per_host), ceil(links / concurrency))
    floor  = rounds x 0.2 s

Then the same links are checked once to fill a LinkCache in a temporary file, and once more
with the warm cache read afresh from that file (no request at all). Figures are printed, not
asserted. Nothing but 127.0.0.1 is contacted.

Run from the project root:  .venv/bin/python benchmarks/bench_links.py
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.checks.reachability import LinkCache, LinkOptions, check_links

HOSTS = 20
LINKS_PER_HOST = 10
ANSWER_DELAY = 0.2  # seconds each server takes to answer


class _CountingServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 that counts the requests it answered."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.hits = 0
        self.lock = threading.Lock()


class _SlowHandler(BaseHTTPRequestHandler):
    """Answers HEAD and GET with 200 and an empty body after ANSWER_DELAY."""

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        server: _CountingServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.hits += 1
        time.sleep(ANSWER_DELAY)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_servers(count: int) -> list[_CountingServer]:
    servers = []
    for _ in range(count):
        server = _CountingServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def timed_check(urls: list[str], options: LinkOptions, cache: LinkCache | None = None) -> tuple[float, int]:
    """Wall time of one check and how many results were "ok"."""
    started = time.perf_counter()
    results = asyncio.run(check_links(urls, options, cache=cache))
    wall = time.perf_counter() - started
    return wall, sum(result.result == "ok" for result in results.values())


def main() -> None:
    servers = start_servers(HOSTS)
    urls = [f"http://127.0.0.1:{server.server_address[1]}/page/{n}" for server in servers
            for n in range(LINKS_PER_HOST)]
    options = LinkOptions()

    def hits() -> int:
        return sum(server.hits for server in servers)

    per_host_rounds = math.ceil(LINKS_PER_HOST / options.per_host)
    global_rounds = math.ceil(len(urls) / options.concurrency)
    rounds = max(per_host_rounds, global_rounds)
    floor = rounds * ANSWER_DELAY
    print(f"{len(urls)} links on {HOSTS} hosts ({LINKS_PER_HOST} each), answer after {ANSWER_DELAY:g} s; "
          f"concurrency {options.concurrency}, per host {options.per_host}, no cache")
    print(f"floor = max(ceil({LINKS_PER_HOST}/{options.per_host}) = {per_host_rounds}, "
          f"ceil({len(urls)}/{options.concurrency}) = {global_rounds}) rounds x {ANSWER_DELAY:g} s = {floor:.2f} s")

    wall, ok = timed_check(urls, options)
    print(f"no cache:   wall {wall:.3f} s, {ok}/{len(urls)} ok, {hits()} requests; "
          f"wall/floor = {wall / floor:.2f} (expected within 2)")

    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "links.json"
        before = hits()
        wall, ok = timed_check(urls, options, LinkCache(file))
        print(f"cold cache: wall {wall:.3f} s, {ok}/{len(urls)} ok, {hits() - before} requests (fills the cache)")
        before = hits()
        started = time.perf_counter()
        cache = LinkCache(file)
        wall, ok = timed_check(urls, options, cache)
        total = time.perf_counter() - started
        print(f"warm cache: wall {wall * 1000:.1f} ms ({total * 1000:.1f} ms with reading the file), "
              f"{ok}/{len(urls)} ok, {hits() - before} requests (expected under 100 ms, 0 requests)")

    for server in servers:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
