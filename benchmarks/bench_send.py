"""Benchmark a whole send of the sample edition through a provider, and its peak memory.

Each measurement runs in a fresh child process (this script with a hidden --child mode), in its own
temporary project folder: newsletter.toml, templates/ and drafts/ copied there, the SQLite database (and
the outbox) inside it. The child writes a CSV of N synthetic subscribers (addresses at example.net),
imports it (timed on its own), builds the sample edition, then times the send end to end:
create_send (a delivery row per recipient) + run_send (claim, personalise, hand over to the provider,
record each outcome in the delivery log).

--provider outbox: the provider writes one .eml per recipient; the child checks that the outbox holds
exactly N .eml files and parses three of them with the strict email policy. The rate depends on the
filesystem of the temporary folder (printed): set TMPDIR (e.g. TMPDIR=/dev/shm) to compare.

--provider postmark | sendgrid | mailgun | resend (default postmark): the pipeline sends, on its default
provider settings, to two servers, each in a process of its own (servers.py):

- the SINK (sink.py): reads each body and answers as the provider would, nothing more, so that the
  sender is measured, not the server;
- the project's EMULATOR (``newsletter emulator``): validates every request against the provider's
  schema and records every message; it is the bottleneck of both runs, so its ratio says little.

Against each, the same run measures the RAW CEILING: a child that posts BYTE-IDENTICAL requests with a bare
httpx.AsyncClient loop at the same concurrency. It rebuilds them before its clock starts from the database
the send left (the same rows, batches, nonce and tokens), with the pipeline's own batch and provider code
on a transport that only captures them; the servers' digest of the bodies (the sum of their SHA-256, in any
order; a multipart boundary, random per request, set aside) must be the same for the send and the raw
run, and is printed. Rates are read over the SENDING PHASE as the server saw it (its first request
received to its last answer written), with the whole command (the child process: start-up, import of the
audience, build, send) beside them: pipeline / raw is the ratio of the two phase rates.

Peak RSS is ru_maxrss in the sending child, after setup (import + build) and at the end; the send to the
sink is run for --audience and --compare recipients, and the ratio of the two peaks shows whether memory
grows with the audience (it must not: the audience is streamed in bounded batches). --profile runs the
pipeline's send to the sink under cProfile and prints the top functions with their share of the time,
ours marked (none should take more than 10%).

The default run (Postmark, 20,000 to the sink, 5,000 to the emulator, 5,000 for the memory ratio) takes a
minute or two on a shared 2-core machine. Run from the project root:

    .venv/bin/python benchmarks/bench_send.py [--provider postmark] [--audience 20000] [--compare 5000]
                                              [--emulator-audience 5000] [--rounds 1] [--servers sink,emulator]
    .venv/bin/python benchmarks/bench_send.py --provider sendgrid --audience 100000 --compare 10000
    .venv/bin/python benchmarks/bench_send.py --provider postmark --profile
    .venv/bin/python benchmarks/bench_send.py --provider outbox [--audience 20000] [--compare 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import email
import email.policy
import json
import os
import platform
import pstats
import re
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
EXPECTED_RATE = 2_000  # recipients per second, end to end (outbox)
RESULT_MARK = "bench-send-result: "
NAMES = ("Ada Lovelace", "Zoë Østergaard", "José Martínez", "Li Wei", "Ольга Петрова", "")

HTTP_PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend")
EXPECTED_RATIO = {"postmark": 0.9}  # pipeline / raw over the sending phase, against the sink, at least
EXPECTED_HTTP_RATE = {"sendgrid": 20_000}  # recipients per second over the sending phase, against the sink
EXPECTED_MEMORY_RATIO = 1.2  # peak RSS --audience / --compare, at most
SHARE_LIMIT = 0.10  # of the profiled time, the most one of our functions may take
SERVER_KEY = "emulator-key"  # the key the emulator and the sink accept for every provider
KEY_VARIABLE = "BENCH_PROVIDER_KEY"  # named in the child's settings; the key itself is set directly
MAILGUN_DOMAIN = "mg.example.org"
SETTINGS_VARIABLE = "BENCH_PROVIDER_SETTINGS"  # --set's [provider] settings, as JSON, for the children
# A placeholder or a provider's substitution key left in a delivered message.
LEFTOVER = re.compile(r"\{\{|-(?:name|unsubscribe_url|view_url)(?:_html)?\d*-|%recipient\.")


def batch_size_of(settings: Any) -> int:
    """The batch size a send uses: ``[provider] batch_size``, or the provider's own maximum when unset."""
    from importlib import import_module

    from pipeline.providers import PROVIDERS

    module, _, name = PROVIDERS[settings.provider.name].partition(":")
    most: int = getattr(import_module(f"pipeline.providers.{module}"), name).max_batch
    return min(settings.provider.batch_size or most, most)


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int | None:
    """Resident set size right now, in KiB, from /proc (None where there is no /proc)."""
    return _proc_status_kib("self", "VmRSS")


def _proc_status_kib(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def system_seconds() -> float:
    """System CPU time of this process so far: the kernel's copies and page faults."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def filesystem_of(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts), or "unknown"."""
    resolved, best, kind = os.path.realpath(path), "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                point = fields[1].replace("\\040", " ")
                if len(fields) > 2 and (resolved == point or resolved.startswith(point.rstrip("/") + "/")):
                    if len(point) >= len(best):
                        best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def subscriber_name(number: int) -> str:
    name = NAMES[number % len(NAMES)]
    return f"{name} {number}" if name else ""


def subscriber_email(number: int) -> str:
    return f"reader{number:07d}@example.net"


def write_subscribers(path: Path, count: int) -> None:
    """A CSV of ``count`` distinct active subscribers at example.net, some with non-ASCII names and tags."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "tags", "status"])
        for number in range(1, count + 1):
            writer.writerow([subscriber_email(number), subscriber_name(number),
                             "policy;energy" if number % 3 == 0 else "", "active"])


def make_project(folder: Path, provider: str = "outbox", base_url: str | None = None) -> Any:
    """Copy the sample project into ``folder``; its settings (``project_settings``)."""
    shutil.copy2(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    return project_settings(folder, provider, base_url)


def project_settings(folder: Path, provider: str = "outbox", base_url: str | None = None) -> Any:
    """The settings of the project in ``folder``, with the database and the outbox inside it.

    For an HTTP provider: its name, the server's URL and the servers' key (and a Mailgun domain); every other
    provider setting is the default (batch size the provider's most, 4 batches in flight) unless --set.
    """
    from pydantic import SecretStr

    from pipeline.config import Database, load_settings

    settings = load_settings(folder / "newsletter.toml")
    if settings.secret is None:
        raise SystemExit("the child needs NEWSLETTER_SECRET (the parent sets a random one)")
    paths = settings.paths.model_copy(update={"outbox": folder / "outbox", "build": folder / "build"})
    update: dict[str, Any] = {"database": Database(url=f"sqlite:///{folder / 'bench.db'}"), "paths": paths}
    if provider != "outbox":
        chosen = json.loads(os.environ.get(SETTINGS_VARIABLE) or "{}")  # --set, from the parent
        update["provider"] = settings.provider.model_validate({
            **settings.provider.model_dump(), **chosen, "name": provider, "base_url": base_url,
            "api_key_env": KEY_VARIABLE, "domain": MAILGUN_DOMAIN if provider == "mailgun" else None})
        update["provider_secret"] = SecretStr(SERVER_KEY)
    return settings.model_copy(update=update)


def check_outbox(folder: Path, expected: int) -> dict[str, Any]:
    """Count the .eml files (and leftover .part files) and parse the first, a middle and the last one."""
    names = sorted((entry.name for entry in os.scandir(folder) if entry.name.endswith(".eml")),
                   key=lambda name: int(name.removesuffix(".eml")))
    leftovers = sum(1 for entry in os.scandir(folder) if entry.name.endswith(".part"))
    picked = sorted({names[0], names[len(names) // 2], names[-1]}) if names else []
    parsed = []
    for name in picked:
        message = email.message_from_bytes((folder / name).read_bytes(), policy=email.policy.strict)
        parts = [part.get_content_type() for part in message.walk() if not part.is_multipart()]
        body = message.get_body(("html",))
        html = body.get_content() if body is not None else ""
        if message["To"] is None or parts != ["text/plain", "text/html"] or "{{" in html:
            raise SystemExit(f"outbox message {name} is not a complete personalised message: {parts}")
        parsed.append(name)
    return {"eml": len(names), "expected": expected, "part_files": leftovers, "parsed": parsed}


def setup(folder: Path, audience: int, provider: str = "outbox", base_url: str | None = None) -> dict[str, Any]:
    """The project, its store with ``audience`` subscribers imported, and the built sample edition (timed)."""
    from pipeline.prepare import prepare_and_write
    from pipeline.store import Store
    from pipeline.subscribers import import_subscribers

    settings = make_project(folder, provider, base_url)
    csv_path = folder / "subscribers.csv"
    write_subscribers(csv_path, audience)
    store = Store.from_settings(settings)
    start = time.perf_counter()
    report = import_subscribers(store, csv_path)
    import_seconds = time.perf_counter() - start
    if report.added != audience or not report.ok:
        raise SystemExit(f"import added {report.added} of {audience}, {len(report.rejected)} rejected")
    start = time.perf_counter()
    build = prepare_and_write(settings.paths.drafts / SAMPLE, settings)
    build_seconds = time.perf_counter() - start
    return {"settings": settings, "store": store, "build": build, "import_s": import_seconds,
            "build_s": build_seconds}


def child(audience: int) -> dict[str, Any]:
    """One outbox measurement in this (fresh) process: setup, then the send, timed; RSS after each."""
    from pipeline import send

    with tempfile.TemporaryDirectory(prefix="bench-send-") as temporary:
        folder = Path(temporary)
        ready = setup(folder, audience)
        settings, store, build = ready["settings"], ready["store"], ready["build"]
        setup_peak, setup_rss = peak_rss_kib(), current_rss_kib()

        start = time.perf_counter()
        send_id = send.create_send(store, settings, build.edition, built_path=str(build.folder))
        created = time.perf_counter()
        result = asyncio.run(send.run_send(store, settings, send_id))
        finished = time.perf_counter()
        end_peak, end_rss = peak_rss_kib(), current_rss_kib()

        if result.status != "sent" or result.counts != {"sent": audience}:
            raise SystemExit(f"send {send_id} ended {result.status} with {result.counts}")
        outbox = check_outbox(settings.paths.outbox / str(send_id), audience)
        store.dispose()
    return {
        "audience": audience, "import_s": ready["import_s"], "build_s": ready["build_s"],
        "create_s": created - start, "run_s": finished - created, "send_s": finished - start,
        "setup_peak_kib": setup_peak, "setup_rss_kib": setup_rss, "end_peak_kib": end_peak, "end_rss_kib": end_rss,
        "outbox": outbox, "batch_size": batch_size_of(settings),
    }


# ---------------------------------------------------------------- HTTP providers: the sending child


def http_send_child(provider: str, audience: int, base_url: str, folder: Path, profile: bool) -> dict[str, Any]:
    """One send through the pipeline's own provider (made from the settings) to ``base_url``, in this process.

    The project folder is left in place for the raw child, which rebuilds the same requests from its database.
    """
    from pipeline import providers, send

    ready = setup(folder, audience, provider, base_url)
    settings, store, build = ready["settings"], ready["store"], ready["build"]
    setup_peak, setup_rss = peak_rss_kib(), current_rss_kib()
    profiler = cProfile.Profile() if profile else None
    cpu, main_cpu, kernel = cpu_seconds(), time.thread_time(), system_seconds()
    if profiler is not None:
        profiler.enable()
    start = time.perf_counter()
    send_id = send.create_send(store, settings, build.edition, built_path=str(build.folder))
    created = time.perf_counter()
    result = asyncio.run(send.run_send(store, settings, send_id))
    finished = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    cpu, main_cpu, kernel = cpu_seconds() - cpu, time.thread_time() - main_cpu, system_seconds() - kernel
    end_peak, end_rss = peak_rss_kib(), current_rss_kib()
    store.dispose()
    if result.status != "sent" or result.counts != {"sent": audience}:
        raise SystemExit(f"send {send_id} ended {result.status} ({result.reason}) with {result.counts}")
    if profiler is not None:
        print_profile(profiler, f"the pipeline's send of {audience:,} recipients through {provider}")
        print(f"(cProfile sees the event loop's thread: {main_cpu:.2f} s of CPU; the process used {cpu:.2f} s, the "
              f"rest in its other threads: the database's and the lease's)")
    return {
        "kind": "send", "audience": audience, "send_id": send_id, "import_s": ready["import_s"],
        "build_s": ready["build_s"], "create_s": created - start, "run_s": finished - created,
        "send_s": finished - start, "cpu_s": cpu, "main_cpu_s": main_cpu, "sys_s": kernel,
        "setup_peak_kib": setup_peak, "setup_rss_kib": setup_rss, "end_peak_kib": end_peak, "end_rss_kib": end_rss,
        "batch_size": batch_size_of(settings), "concurrency": providers.concurrency(settings),
    }


def print_profile(profiler: cProfile.Profile, title: str, top: int = 30) -> None:
    """The top functions by own time, each with its share of the profiled time; ours (pipeline/) marked."""
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _, _, own, _, _ in entries.values()) or 1.0
    ours = str(ROOT / "pipeline")
    rows = sorted(((own, cumulative, calls, where) for where, (_, calls, own, cumulative, _) in entries.items()),
                  reverse=True)
    print(f"==== profile: {title}: {total:.2f} s of own time in all ====")
    print(f"{'share':>7}{'own s':>8}{'cum s':>8}{'calls':>10}  function")
    for own, cumulative, calls, (file, line, name) in rows[:top]:
        mark = "*" if file.startswith(ours) else " "
        print(f"{own / total:>7.1%}{own:>8.2f}{cumulative:>8.2f}{calls:>10,} {mark}{_where(file, line, name)}")
    mine = [(own, where) for own, _, _, where in rows if where[0].startswith(ours)]
    if mine:
        own, (file, line, name) = mine[0]
        verdict = "within" if own / total <= SHARE_LIMIT else "OVER"
        print(f"* = ours; the largest of ours: {_where(file, line, name)}, {own / total:.1%} of the time "
              f"({verdict} the {SHARE_LIMIT:.0%} limit); ours in all: {sum(own for own, _ in mine) / total:.1%}")


def _where(file: str, line: int, name: str) -> str:
    path = Path(file)
    shown = path.relative_to(ROOT) if path.is_absolute() and path.is_relative_to(ROOT) else path.name
    return f"{shown}:{line}({name})" if line else name


# ---------------------------------------------------------------- HTTP providers: the raw ceiling


def sent_batches(store: Any, send_id: int) -> list[Any]:
    """The send's batches as they were claimed: each batch id with its rows, in the order of their ids."""
    from sqlalchemy import select

    from pipeline.store import sends as db
    from pipeline.store.tables import deliveries, subscribers

    query = (select(deliveries.c.batch_id, deliveries.c.id, deliveries.c.email, deliveries.c.subscriber_id,
                    subscribers.c.name)
             .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
             .where(deliveries.c.send_id == send_id, deliveries.c.batch_id.is_not(None)).order_by(deliveries.c.id))
    rows: dict[str, list[Any]] = {}
    with store.read() as connection:
        for found in connection.execute(query):
            rows.setdefault(found.batch_id, []).append(db.Row(delivery_id=found.id, subscriber_id=found.subscriber_id,
                                                              email=found.email, name=found.name))
    return [db.Claimed(batch_id=batch_id, rows=tuple(people)) for batch_id, people in rows.items()]


async def captured_requests(store: Any, settings: Any, send_id: int) -> list[tuple[str, dict[str, str], bytes]]:
    """The requests the send made, rebuilt: its batches, through the pump's own ``_batch`` and ``hand_over``
    and the provider made from the settings, on a transport that keeps each request and answers as the sink."""
    import httpx
    from sink import Sink

    from pipeline.providers import make_provider
    from pipeline.providers.http import USER_AGENT
    from pipeline.send.lease import Lease
    from pipeline.send.pump import _Pump, hand_over
    from pipeline.store import sends as db

    sink = Sink(SERVER_KEY)
    captured: list[tuple[str, dict[str, str], bytes]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        headers = {name.lower(): value for name, value in request.headers.multi_items()}
        body = request.content
        captured.append((str(request.url), {name: value for name, value in headers.items()
                                            if name != "host"}, body))
        _, reply = sink.answer(request.method, request.url.path, headers, body)
        return httpx.Response(reply.status, content=reply.body, headers=list(reply.headers))

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer), headers={"User-Agent": USER_AGENT})
    provider = make_provider(settings, client)
    lease = Lease(store, send_id, seconds=settings.send.lease_seconds)  # never kept: nothing is claimed
    pump = _Pump(store, settings, lease, db.send_record(store, send_id), provider, None)
    try:
        for claimed in sent_batches(store, send_id):
            _, error = await hand_over(provider, pump._batch(claimed))
            if error is not None:
                raise SystemExit(f"rebuilding batch {claimed.batch_id} failed: {error}")
    finally:
        pump._db.shutdown()
        await client.aclose()
    return captured


async def slices(body: bytes) -> AsyncIterator[bytes]:
    """The body a MiB at a time: the fastest way to hand httpx a large body (as the pipeline does, see
    ``pipeline.providers.http._Slices``); the captured Content-Length keeps it from being chunked."""
    view = memoryview(body)
    for start in range(0, len(view), 1024 * 1024):
        yield view[start:start + 1024 * 1024]  # type: ignore[misc]


def raw_child(provider: str, base_url: str, folder: Path, send_id: int) -> dict[str, Any]:
    """The raw ceiling: the send's requests, byte for byte, posted by a bare httpx loop at the same concurrency.

    They are rebuilt before the clock starts (``captured_requests``); the timed loop only posts them (a MiB at a
    time, ``slices``) and counts the answers: no database, no personalisation, no log.
    """
    import httpx

    from pipeline import providers
    from pipeline.store import Store

    settings = project_settings(folder, provider, base_url)
    store = Store.from_settings(settings)
    requests = asyncio.run(captured_requests(store, settings, send_id))
    store.dispose()
    concurrency = providers.concurrency(settings)
    for index, (url, headers, body) in enumerate(requests):  # to the server measured, not the capturing one
        requests[index] = (base_url + httpx.URL(url).raw_path.decode("ascii"), headers, body)

    async def run() -> tuple[float, float, float, Counter[int]]:
        statuses: Counter[int] = Counter()
        pending = iter(requests)  # one iterator shared by the workers: each takes the next request
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=settings.provider.timeout, limits=limits) as client:

            async def worker() -> None:
                for url, headers, body in pending:
                    response = await client.post(url, content=slices(body), headers=headers)
                    statuses[response.status_code] += 1

            cpu, kernel = cpu_seconds(), system_seconds()
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start, cpu_seconds() - cpu, system_seconds() - kernel, statuses

    setup_peak = peak_rss_kib()
    seconds, cpu, kernel, statuses = asyncio.run(run())
    if any(not 200 <= status < 300 for status in statuses):
        raise SystemExit(f"the raw run got answers {dict(statuses)}")
    return {"kind": "raw", "send_s": seconds, "cpu_s": cpu, "sys_s": kernel, "requests": len(requests),
            "request_bytes": sum(len(body) for _, _, body in requests),
            "setup_peak_kib": setup_peak, "end_peak_kib": peak_rss_kib(), "concurrency": concurrency,
            "batch_size": batch_size_of(settings)}


# ---------------------------------------------------------------- the parent: measurements


def check_recorded(emulator: Any, provider: str, recorded: int) -> tuple[bool, list[str]]:
    """The first, a middle and the last message the emulator recorded of a send: each personalised (its
    recipient, their own unsubscribe link in both parts, no placeholder or substitution key left)."""
    ok, checked = True, []
    for offset in sorted({0, recorded // 2, recorded - 1}):
        message = emulator.message(provider, offset)
        html, text = message["html"] or "", message["text"] or ""
        leftovers = sorted(set(LEFTOVER.findall(html + text)))
        header = re.match(r"<([^>]+)>", message["headers"].get("List-Unsubscribe", ""))
        link = header[1] if header else None
        personal = (message["to"].endswith("@example.net") and link is not None and "/u/" in link
                    and f"Unsubscribe: {link}" in text and f'href="{link}"' in html and not leftovers)
        ok = ok and personal
        checked.append(f"{message['to']} {'OK' if personal else 'NOT PERSONALISED ' + ','.join(leftovers)}")
    return ok, checked


def measure(server: Any, provider: str, kind: str, audience: int, secret: str, folder: Path, *,
            send_id: int = 0, profile: bool = False) -> dict[str, Any]:
    """One measurement (the pipeline's send, or the raw ceiling) in a fresh child, on a freshly reset server."""
    server.reset()
    what = "sending to" if kind == "send" else "raw ceiling for"
    print(f"{provider} -> {server.name}: {what} {audience:,} recipients in a child process ...", file=sys.stderr,
          flush=True)
    extra = ["--mode", kind, "--base-url", server.url, "--folder", str(folder), "--send-id", str(send_id)]
    cpu, start = server.cpu_seconds(), time.perf_counter()
    row = run_child(provider, audience, secret, extra + (["--profile"] if profile else []), echo=profile)
    row["command_s"] = time.perf_counter() - start
    row["server_cpu_s"] = server.cpu_seconds() - cpu
    row["server"] = server.name
    row["audience"] = audience
    reading = server.reading(provider)
    row["reading"] = reading.to_json()
    ok = reading.messages == audience and reading.answers_ok
    if kind == "send" and server.name == "emulator" and reading.messages:
        personal, row["checked"] = check_recorded(server, provider, reading.messages)
        ok = ok and personal
    row["ok"] = ok
    server.reset()  # its records go before the next child starts
    return row


def run_child(provider: str, audience: int, secret: str, extra: list[str] | None = None,
              echo: bool = False) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result is the last marked line of its output."""
    environment = {**os.environ, "NEWSLETTER_SECRET": secret}
    environment.pop("NEWSLETTER_SECRET_FILE", None)
    environment.pop("NEWSLETTER_CONFIG", None)
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--provider", provider,
                                "--child", str(audience), *(extra or [])],
                               env=environment, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"the child process for {audience:,} recipients failed (exit {completed.returncode})")
    if echo:
        print("\n".join(line for line in completed.stdout.splitlines() if not line.startswith(RESULT_MARK)))
    return json.loads(lines[-1].removeprefix(RESULT_MARK))


def pair(server: Any, provider: str, audience: int, secret: str) -> list[dict[str, Any]]:
    """The pipeline's send, then the raw ceiling posting the same requests, on one project folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        send = measure(server, provider, "send", audience, secret, folder)
        raw = measure(server, provider, "raw", audience, secret, folder, send_id=send["send_id"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [send, raw]


def single(server: Any, provider: str, audience: int, secret: str, profile: bool = False) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-send-"))
    try:
        return measure(server, provider, "send", audience, secret, folder, profile=profile)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_http(provider: str, args: argparse.Namespace) -> None:
    from servers import EmulatorProcess, SinkProcess

    secret = secrets.token_urlsafe(32)  # signs the unsubscribe links of the children; never printed
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if args.profile:
        sink = SinkProcess()
        try:
            row = single(sink, provider, args.audience, secret, profile=True)
        finally:
            sink.stop()
        phase = row["reading"]["phase_s"]
        print(f"profiled send of {args.audience:,} through {provider} to the sink: sending phase {phase:.2f} s "
              f"({args.audience / phase:,.0f} recipients/s under cProfile), child CPU {row['cpu_s']:.2f} s; "
              f"sink check {'OK' if row['ok'] else 'MISMATCH'}")
        return
    for name in args.servers:
        server = SinkProcess() if name == "sink" else EmulatorProcess()
        print(f"{server.name} (pid {server.pid}) listening on {server.url}", file=sys.stderr, flush=True)
        audience = args.audience if name == "sink" else args.emulator_audience
        try:
            for _ in range(args.rounds):
                rows += [single(server, provider, audience, secret)] if args.no_raw else pair(server, provider,
                                                                                             audience, secret)
            if name == "sink" and args.compare:
                rows.append(single(server, provider, args.compare, secret))
        finally:
            server.stop()
    report_http(provider, rows, args, time.perf_counter() - started)


# ---------------------------------------------------------------- HTTP providers: the report


def phase_rate(row: dict[str, Any]) -> float | None:
    phase = row["reading"]["phase_s"]
    return row["audience"] / phase if phase else None


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def report_http(provider: str, rows: list[dict[str, Any]], args: argparse.Namespace, wall: float) -> None:
    first = rows[0]
    chosen = ", ".join(args.set) or "none: its defaults"
    print(f"Python {platform.python_version()} ({platform.machine()}, {platform.system()}); provider {provider}, "
          f"batch size {first['batch_size']}, concurrency {first['concurrency']} (--set {chosen}); "
          f"SQLite; sample {SAMPLE}")
    print(machine_note())
    print("each row: a fresh child process; the server, in a process of its own, reset before it\n")
    print(f"{'server':>9}{'run':>5}{'recipients':>11}{'requests':>9}{'MiB/req':>9}{'phase s':>9}{'recipients/s':>14}"
          f"{'command s':>11}{'send s':>8}{'CPU s':>7}{'sys s':>7}{'srv CPU s':>10}{'peak MiB':>10}"
          "  bodies (count:hash:sum)")
    for row in rows:
        reading = row["reading"]
        size = reading["request_bytes"] if reading["request_bytes"] is not None else row.get("request_bytes")
        per_request = mib(size / 1024 / reading["requests"]) if size and reading["requests"] else "-"
        phase = reading["phase_s"]
        send = f"{row['send_s']:.2f}"
        print(f"{row['server']:>9}{row['kind']:>5}{row['audience']:>11,}{reading['requests']:>9,}{per_request:>9}"
              f"{'n/a' if phase is None else f'{phase:.2f}':>9}{_rate(phase_rate(row)):>14}{row['command_s']:>11.2f}"
              f"{send:>8}{row['cpu_s']:>7.2f}{row['sys_s']:>7.2f}{row['server_cpu_s']:>10.2f}{mib(row['end_peak_kib']):>10}"
              f"  {reading['bodies'][:22]}… {'' if row['ok'] else 'MISMATCH'}")
    print("\nsend = the pipeline: create_send + run_send (delivery rows, claims, personalisation, requests, outcomes "
          "in the delivery log); raw = the same requests, byte for byte, from a bare httpx loop at the same "
          "concurrency")
    print("phase s = the server's first request received to its last answer written; recipients/s over it; "
          "command s = the whole child process (start-up, import of the audience, build, send); send s = the "
          "child's timed part (raw: its loop); CPU s = the child's CPU in that part, sys s the kernel's share of it "
          "(copies, page faults); srv CPU s = the server process's CPU during the row")
    for row in rows:
        if row.get("checked"):
            print(f"emulator after send {row['audience']:,}: checked {', '.join(row['checked'])}")
    if not all(row["ok"] for row in rows):
        print("a server did NOT see what was expected (every recipient once, every answer 2xx): see MISMATCH")
    print()
    for name in args.servers:
        verdict(provider, name, [row for row in rows if row["server"] == name], args)
    sends = {row["audience"]: row for row in rows if row["kind"] == "send" and row["server"] == "sink"}
    if args.compare and args.compare in sends and args.audience in sends:
        big, small = sends[args.audience], sends[args.compare]
        memory = big["end_peak_kib"] / small["end_peak_kib"]
        print(f"peak RSS of the sending child, {args.audience:,} / {args.compare:,} recipients: {memory:.2f}x "
              f"({mib(big['end_peak_kib'])} / {mib(small['end_peak_kib'])} MiB) -- "
              f"{'flat' if memory <= EXPECTED_MEMORY_RATIO else 'GROWS with the audience'} "
              f"(expected within {EXPECTED_MEMORY_RATIO}x)")
    print(f"the whole benchmark: {wall:.1f} s")


def verdict(provider: str, server: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """pipeline / raw over the sending phase (best of each), whether the bodies were the same, the expectations."""
    audience = args.audience if server == "sink" else args.emulator_audience
    measured = [row for row in rows if row["audience"] == audience]
    sends = [rate for row in measured if row["kind"] == "send" and (rate := phase_rate(row))]
    raws = [rate for row in measured if row["kind"] == "raw" and (rate := phase_rate(row))]
    if not sends or not raws:
        return
    real, raw = max(sends), max(raws)
    identical = all(send["reading"]["bodies"] == raw_row["reading"]["bodies"]
                    for send, raw_row in zip(measured[0::2], measured[1::2], strict=True))
    best = " (best of each)" if len(measured) > 2 else ""
    print(f"{provider} -> {server}, {audience:,} recipients{best}: pipeline {real:,.0f} recipients/s, raw {raw:,.0f} "
          f"recipients/s over the sending phase: pipeline / raw = {real / raw:.2f}; request bodies "
          f"{'IDENTICAL' if identical else 'DIFFERENT (the comparison is void)'} in the send and the raw run")
    if server != "sink":
        return
    if provider in EXPECTED_RATIO:
        expected = EXPECTED_RATIO[provider]
        print(f"  expected: at least {expected:.2f} x the raw ceiling -- "
              f"{'meets it' if real / raw >= expected else 'BELOW'}")
    if provider in EXPECTED_HTTP_RATE:
        expected_rate = EXPECTED_HTTP_RATE[provider]
        met = "meets it" if real >= expected_rate else "BELOW"
        print(f"  expected: at least {expected_rate:,} recipients/s -- {met}")


def mib(kib: int | float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f}"


def system_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has used since boot (from /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_note() -> str:
    cores = os.cpu_count() or 0
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"machine: {cores} CPU core{'s' if cores != 1 else ''}, load average {load}; a shared machine is "
            "noisy: figures vary from run to run, compare within one run")


# ---------------------------------------------------------------- the outbox report


def report(results: list[dict[str, Any]], audience: int, compare: int) -> None:
    print(f"Python {platform.python_version()} ({platform.machine()}, {platform.system()}); "
          f"provider outbox, SQLite; batch size {results[0]['batch_size']}; sample {SAMPLE}")
    temporary = tempfile.gettempdir()
    print(f"each row: a fresh child process, its own temporary project folder and database under {temporary} "
          f"({filesystem_of(temporary)})\n")
    header = (f"{'recipients':>10}{'import s':>10}{'build s':>9}{'create s':>10}{'run s':>8}{'send s':>8}"
              f"{'recipients/s':>14}{'setup peak MiB':>16}{'setup RSS MiB':>15}{'end peak MiB':>14}"
              f"{'send growth MiB':>17}")
    print(header)
    for row in results:
        rate = row["audience"] / row["send_s"]
        growth = row["end_peak_kib"] - row["setup_peak_kib"]
        print(f"{row['audience']:>10,}{row['import_s']:>10.2f}{row['build_s']:>9.2f}{row['create_s']:>10.2f}"
              f"{row['run_s']:>8.2f}{row['send_s']:>8.2f}{rate:>14,.0f}{mib(row['setup_peak_kib']):>16}"
              f"{mib(row['setup_rss_kib']):>15}{mib(row['end_peak_kib']):>14}{mib(growth):>17}")
    print("\nsend s = create_send + run_send (delivery rows, claims, .eml files, outcomes in the delivery log)")
    print("peak = ru_maxrss of the child; send growth = end peak - peak after setup (import + build)")

    print()
    for row in results:
        outbox = row["outbox"]
        ok = outbox["eml"] == outbox["expected"] and not outbox["part_files"]
        print(f"outbox of the {row['audience']:,} send: {outbox['eml']:,} .eml files (expected "
              f"{outbox['expected']:,}, {outbox['part_files']} .part left) {'OK' if ok else 'MISMATCH'}; "
              f"parsed strictly: {', '.join(outbox['parsed'])}")

    by_size = {row["audience"]: row for row in results}
    big, small = by_size[audience], by_size[compare]
    ratio = big["end_peak_kib"] / small["end_peak_kib"]
    print(f"\npeak RSS {audience:,} / {compare:,} recipients: {ratio:.2f}x "
          f"({mib(big['end_peak_kib'])} / {mib(small['end_peak_kib'])} MiB)"
          f" -- {'flat' if ratio < 1.25 else 'GROWS with the audience'}")
    rate = audience / big["send_s"]
    verdict = "meets" if rate >= EXPECTED_RATE else "BELOW"
    print(f"end-to-end send rate at {audience:,}: {rate:,.0f} recipients/s ({verdict} the expected "
          f"{EXPECTED_RATE:,}/s)")
    print(machine_note())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("outbox", *HTTP_PROVIDERS), default="postmark",
                        help="the provider to send through (default postmark; the HTTP ones to the local servers)")
    parser.add_argument("--audience", type=int,
                        help="recipients of the main send (default 20000; HTTP providers: the send to the sink)")
    parser.add_argument("--compare", type=int,
                        help="recipients of the comparison send, for the memory ratio (default 2000 for outbox, "
                             "5000 for the HTTP providers; 0: none, HTTP providers only)")
    parser.add_argument("--emulator-audience", type=int, default=5000,
                        help="HTTP providers: recipients of the send to the emulator (default 5000: it is slow)")
    parser.add_argument("--servers", default="sink,emulator",
                        help="HTTP providers: the servers to measure against, in order (default sink,emulator)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="HTTP providers: send + raw pairs per server; the best of each is compared")
    parser.add_argument("--profile", action="store_true",
                        help="HTTP providers: one send of --audience to the sink under cProfile, then the top "
                             "functions with their share of the time")
    parser.add_argument("--no-raw", action="store_true",
                        help="HTTP providers: the pipeline's sends only, no raw ceiling (whose child holds every "
                             "request body at once: ~80 KB a Postmark recipient), e.g. for the memory ratio at "
                             "--audience 100000")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="HTTP providers: a [provider] setting for every send and raw run, e.g. batch_size=100 "
                             "or concurrency=8 (default: none, the provider's defaults)")
    parser.add_argument("--child", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("send", "raw"), default="send", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--send-id", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    http = args.provider in HTTP_PROVIDERS
    if args.child is not None:
        if not http:
            result = child(args.child)
        elif args.mode == "raw":
            result = raw_child(args.provider, args.base_url, Path(args.folder), args.send_id)
        else:
            result = http_send_child(args.provider, args.child, args.base_url, Path(args.folder), args.profile)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    args.audience = args.audience if args.audience is not None else 20_000
    args.compare = args.compare if args.compare is not None else (5_000 if http else 2_000)
    args.servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if args.audience < 1 or args.compare < 0 or args.audience == args.compare or args.rounds < 1:
        parser.error("--audience must be positive, --compare positive (or 0) and different, --rounds at least 1")
    if http:
        chosen = {}
        for item in args.set:
            key, _, value = item.partition("=")
            if not key or not value:
                parser.error(f"--set takes KEY=VALUE, not {item!r}")
            chosen[key.strip()] = json.loads(value) if re.fullmatch(r"-?[0-9.]+", value) else value
        from pydantic import ValidationError

        from pipeline.config import Provider

        try:
            Provider.model_validate({**chosen, "name": args.provider})
        except ValidationError as exc:
            parser.error(f"--set: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        os.environ[SETTINGS_VARIABLE] = json.dumps(chosen)
        if not args.servers or any(name not in ("sink", "emulator") for name in args.servers):
            parser.error("--servers takes sink, emulator or both, separated by a comma")
        if args.emulator_audience < 1:
            parser.error("--emulator-audience must be positive")
        run_http(args.provider, args)
        return
    if args.compare < 1 or args.profile or args.rounds != 1:
        parser.error("the outbox benchmark needs a positive --compare and takes no --profile or --rounds")
    secret = secrets.token_urlsafe(32)  # signs the unsubscribe links of the children; never printed
    results = []
    for size in (args.compare, args.audience):
        print(f"sending to {size:,} synthetic subscribers in a child process ...", file=sys.stderr, flush=True)
        results.append(run_child("outbox", size, secret))
    report(results, args.audience, args.compare)


if __name__ == "__main__":
    main()
