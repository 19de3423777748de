"""Benchmark the console's send page at 1,000,000 delivery rows beside 10,000, on SQLite.

For each size a temporary project (newsletter.toml, templates/ copied) gets one send whose
subscribers and delivery rows are bulk-inserted straight into its SQLite file (executemany, all
indexes of the migrations in place; no ANALYZE, as a real database would not have one either):
a finished send: 91 % sent, 4 % failed, 2 % uncertain, 2 % suppressed, 1 % skipped, accepted
over 100 minutes. Then, signed in as an editor, it times in-process (the Starlette app called directly as
ASGI, no network and no HTTP client: the server's own time from the request to the last byte of the
body, or to the first byte for the CSV):

* the send page (reconciliation, timeline, reasons, first page of recipients): on a fresh app
  ("fresh process": templates compiled on the way, the counts, failures and timeline read from the
  rows), on an app whose templates are compiled but which has not seen the send since it changed
  ("first view since change"), and as staff see it again (a finished send's counts, failures and
  timeline are kept: no move changes its rows while it stays finished; a live send's counts are read
  from the ``(send_id, status)`` index on every view, which at 1M rows adds about 50 ms);
* a filtered page (``?status=failed``);
* a search (``?search=reader0004321``: the start of an address, on the ``(send_id, lower(email), id)``
  index; a substring search would read every row, so the console has none);
* the 5,000th page of the recipient table (jumping with the known ``after`` cursor; at 10,000 rows
  there are only 100 pages, so the last one is timed);
* the CSV export's first byte.

Each figure is the median of ``--rounds`` requests after one warm-up; the ratio is 1M / 10k.
Expected: each under 200 ms at 1M and within 3x of 10k.

Run from the project root:  .venv/bin/python benchmarks/bench_console.py [--rounds 15] [--large 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from starlette.testclient import TestClient  # noqa: E402

from pipeline import accounts  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from pipeline.store import Store  # noqa: E402
from pipeline.web.app import create_app  # noqa: E402

PASSWORD = "benchmark password, long enough"
HOST = "report.example.org"
MIX = (("sent", 91), ("failed", 4), ("uncertain", 2), ("suppressed", 2), ("skipped", 1))  # a finished send


def _stamp(moment: dt.datetime) -> str:
    """A UTC time as SQLAlchemy stores it in SQLite."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def _fill(database: Path, rows: int) -> int:
    """One edition, one send and ``rows`` subscribers with a delivery row each; the send's id."""
    start = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)
    statuses = [status for status, share in MIX for _ in range(share)]
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA synchronous=OFF")
    with connection:
        connection.execute(
            "INSERT INTO editions (name, content_hash, subject, built_path, email_html, email_txt, created_at, "
            "archived) VALUES ('bench', 'hash', 'Benchmark', '/tmp', '<html><body><p>Hi</p></body></html>', 'Hi', ?,"
            " 1)", (_stamp(start),))
        connection.execute(
            "INSERT INTO sends (edition_id, status, provider, created_at, started_at, finished_at, status_reason, "
            "queued_at, nonce) VALUES (1, 'sent', 'outbox', ?, ?, ?, '', ?, 'bench')",
            (_stamp(start), _stamp(start), _stamp(start + dt.timedelta(minutes=100)), _stamp(start)))
        connection.executemany(
            "INSERT INTO subscribers (id, email, email_key, name, tags, status, attributes, created_at, updated_at, "
            "soft_bounces) VALUES (?, ?, ?, '', ';', 'active', '{}', ?, ?, 0)",
            ((number, f"reader{number:07d}@example.net", f"reader{number:07d}@example.net", _stamp(start),
              _stamp(start)) for number in range(1, rows + 1)))

        def delivery(number: int) -> tuple[Any, ...]:
            status = statuses[(number * 7919) % len(statuses)]
            moment = start + dt.timedelta(seconds=6000 * number / rows)
            error = {"failed": ("transient", "451 try again later"), "uncertain": ("uncertain", "no answer"),
                     "suppressed": ("suppressed", "on the suppression list"),
                     "skipped": ("duplicate", "already received")}.get(status, (None, None))
            return (1, number, f"reader{number:07d}@example.net", status, 1, f"msg-{number}" if status == "sent"
                    else None, error[0], error[1], _stamp(start), _stamp(moment),
                    _stamp(moment) if status == "sent" else None)

        connection.executemany(
            "INSERT INTO deliveries (send_id, subscriber_id, email, status, attempts, provider_message_id, "
            "error_class, error_text, queued_at, updated_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (delivery(number) for number in range(1, rows + 1)))
    connection.close()
    return 1


class Asgi:
    """Calls the app as ASGI with a session cookie; times to the end of the body, or to its first byte."""

    def __init__(self, app: Any, cookie: str):
        self.app, self.cookie = app, cookie

    async def _call(self, path: str, first_byte: bool) -> tuple[float, int, bytes]:
        target, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "https", "path": target, "raw_path": target.encode(), "query_string": query.encode(),
                 "root_path": "", "server": (HOST, 443), "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", HOST.encode()), (b"cookie", f"newsletter_staff={self.cookie}".encode())]}
        body, status = bytearray(), 0
        started = time.perf_counter()
        elapsed: float | None = None

        asked, gone = False, asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if asked:  # a streaming response listens for the client leaving: it leaves after the first byte
                await gone.wait()
                return {"type": "http.disconnect"}
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if first_byte and body and elapsed is None:
                    elapsed = time.perf_counter() - started
                    gone.set()

        await self.app(scope, receive, send)
        return (elapsed if elapsed is not None else time.perf_counter() - started), status, bytes(body)

    def time(self, path: str, rounds: int, *, first_byte: bool = False) -> float:
        """The median milliseconds of ``rounds`` requests after one warm-up (which must answer 200)."""
        _, status, body = asyncio.run(self._call(path, first_byte))
        if status != 200:
            raise SystemExit(f"{path} answered {status}: {body[:300]!r}")
        return statistics.median(asyncio.run(self._call(path, first_byte))[0] for _ in range(rounds)) * 1000


def measure(rows: int, rounds: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
        shutil.copytree(ROOT / "templates", folder / "templates")
        os.environ.setdefault("NEWSLETTER_SECRET", "a-benchmark-signing-secret-of-32-bytes-or-more")
        settings = load_settings(folder / "newsletter.toml")
        store = Store.from_settings(settings)
        database = Path(store.engine.url.database or "")
        began = time.perf_counter()
        send_id = _fill(database, rows)
        size = database.stat().st_size / 1e6
        print(f"  {rows:>9,} rows inserted in {time.perf_counter() - began:.1f} s ({size:.0f} MB)", file=sys.stderr)
        accounts.add(store, "bench", "editor", PASSWORD, by="benchmark")
        app = create_app(settings, store)
        with TestClient(app, base_url=f"https://{HOST}") as client:
            page = client.get("/staff/login")
            token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/staff/login", data={"csrf_token": token, "username": "bench", "password": PASSWORD})
            cookie = client.cookies["newsletter_staff"]
        asgi = Asgi(app, cookie)
        base = f"/staff/sends/{send_id}"
        last_page = min(5000, rows // 100)
        cold, changed = [], []
        for _ in range(3):  # a fresh app: nothing kept, templates compiled on the way
            fresh_app = create_app(settings, store)
            cold.append(asyncio.run(Asgi(fresh_app, cookie)._call(base, False))[0] * 1000)
            fresh_app = create_app(settings, store)  # as a process that has served pages: templates compiled
            for template in ("base.html", "staff/base.html", "staff/send.html", "staff/_timeline.html"):
                fresh_app.state.site.pages.environment.get_template(template)
            changed.append(asyncio.run(Asgi(fresh_app, cookie)._call(base, False))[0] * 1000)
        figures = {
            "send page, fresh process": statistics.median(cold),
            "send page, first view since change": statistics.median(changed),
            "send page": asgi.time(base, rounds),
            "filtered page (status=failed)": asgi.time(f"{base}?status=failed", rounds),
            "search (address prefix)": asgi.time(f"{base}?search=reader{rows // 2 + 1:07d}"[:-3], rounds),
            f"page {last_page:,} of recipients": asgi.time(f"{base}?after={(last_page - 1) * 100}", rounds),
            "CSV export, first byte": asgi.time(f"{base}/recipients.csv", rounds, first_byte=True),
        }
        store.dispose()
        return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="requests per figure (median)")
    parser.add_argument("--small", type=int, default=10_000, help="rows of the small send")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows of the large send")
    args = parser.parse_args()
    print(f"bench_console: SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, in-process ASGI "
          f"(server time, no network), median of {args.rounds}", file=sys.stderr)
    small, large = measure(args.small, args.rounds), measure(args.large, args.rounds)
    print(f"{'':36} {args.small:>12,} {args.large:>12,}   ratio")
    worst = 0.0
    for fast, (name, slow) in zip(small.values(), large.items(), strict=True):
        ratio = slow / fast if fast else float("inf")
        worst = max(worst, slow)
        print(f"{name:36} {fast:>9.1f} ms {slow:>9.1f} ms   {ratio:4.1f}x"
              f"{'' if slow < 200 and ratio <= 3 else '   <- over budget (200 ms, 3x)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
