"""Benchmark a whole send of the sample edition through a provider, and its peak memory.

Each measurement runs in a fresh child process (this script with a hidden --child mode), in its own
temporary project folder: newsletter.toml, templates/ and drafts/ copied there, the SQLite database (and
the outbox) inside it. The child writes a CSV of N synthetic subscribers (addresses at example.net),
imports it (timed on its own), builds the sample edition, then times the send end to end:
create_send (a delivery row per recipient) + run_send (claim, personalise, hand over to the provider,
record each outcome in the delivery log).

--provider outbox: the provider writes one .eml per recipient; the child checks that the outbox holds
exactly N .eml files and parses three of them with the strict email policy. The outbox writes one
~100 KB file per recipient, so the rate depends on the filesystem of the temporary folder (printed):
set TMPDIR (e.g. TMPDIR=/dev/shm) to compare a disk with tmpfs.

--provider postmark | sendgrid: the provider posts to the local provider emulator
(``python -m pipeline emulator --port 0``), started once in a SEPARATE process, without settings, so
that the server's CPU does not share the sender's GIL. The batch size is set to the provider's maximum
(Postmark 500 personalised messages per request, SendGrid 1,000 personalizations with the body once).
Beside the real send, the same run measures the RAW CEILING: a child that posts the same requests (the
same batch size, number of requests and per-request body sizes, built once by the provider's own
encoder before the clock starts) with a bare httpx.AsyncClient loop at the same concurrency, without
personalisation, database or logging. real / raw says how much of the emulator's capacity the pipeline
reaches. The emulator is reset (POST /_emulator/reset) before every measurement so its memory does not
grow across them, and afterwards it must have recorded exactly N messages, all answered 2xx; three
recorded messages of each real send are checked for their recipient and personalised body. The
emulator's CPU seconds (from /proc) are printed per row: when they are close to the wall time, the
emulator is the bottleneck of both the raw and the real run. So is the CPU the rest of the machine used
meanwhile ("others", in cores): on a shared 2-core machine, someone else's work takes the cores the sender
and the emulator need, and the send, with two busy processes, suffers more than the raw run.

Peak RSS is resource.getrusage(RUSAGE_SELF).ru_maxrss read in the sending child, after setup (import +
build) and at the end; the send is run for --audience and --compare recipients, and the ratio of the two
peaks shows whether memory grows with the audience (it must not: the audience is streamed in bounded
batches). --profile runs cProfile in the sending child (and the emulator) instead, and prints the top
functions of both.

Run from the project root:  .venv/bin/python benchmarks/bench_send.py --provider outbox [--audience 20000]
                            [--compare 2000]
                            .venv/bin/python benchmarks/bench_send.py --provider postmark [--audience 100000]
                            [--compare 10000] [--rounds 1]
                            .venv/bin/python benchmarks/bench_send.py --provider sendgrid --profile
                            --audience 10000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import email
import email.policy
import io
import json
import os
import platform
import pstats
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
EXPECTED_RATE = 2_000  # recipients per second, end to end (outbox)
RESULT_MARK = "bench-send-result: "
NAMES = ("Ada Lovelace", "Zoë Østergaard", "José Martínez", "Li Wei", "Ольга Петрова", "")

HTTP_PROVIDERS = ("postmark", "sendgrid")
PROVIDER_MAX_BATCH = {"postmark": 500, "sendgrid": 1000}  # the most one request may carry, used as batch_size
EXPECTED_RATIO = {"postmark": 0.6}  # end-to-end rate / raw ceiling, at least
EXPECTED_HTTP_RATE = {"sendgrid": 10_000}  # recipients per second end to end, at least
EMULATOR_KEY = "emulator-key"  # the emulator's default key for every provider
KEY_VARIABLE = "BENCH_PROVIDER_KEY"  # named in the child's settings; the key itself is set directly
EMULATOR_START_S = 30.0
# A placeholder or SendGrid substitution key left in a delivered message.
LEFTOVER = re.compile(r"\{\{|-(?:name|unsubscribe_url|view_url)(?:_html)?\d*-")


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
    """Copy the sample project into ``folder``; settings with the database and outbox inside it.

    For an HTTP provider: its name, the emulator's URL, the emulator's key and the provider's largest batch.
    """
    from pydantic import SecretStr

    from pipeline.config import Database, load_settings

    shutil.copy2(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    settings = load_settings(folder / "newsletter.toml")
    if settings.secret is None:
        raise SystemExit("the child needs NEWSLETTER_SECRET (the parent sets a random one)")
    paths = settings.paths.model_copy(update={"outbox": folder / "outbox", "build": folder / "build"})
    update: dict[str, Any] = {"database": Database(url=f"sqlite:///{folder / 'bench.db'}"), "paths": paths}
    if provider != "outbox":
        update["provider"] = settings.provider.model_copy(update={
            "name": provider, "base_url": base_url, "api_key_env": KEY_VARIABLE,
            "batch_size": PROVIDER_MAX_BATCH[provider]})
        update["provider_secret"] = SecretStr(EMULATOR_KEY)
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


def http_send_child(provider_name: str, audience: int, base_url: str, profile: bool) -> dict[str, Any]:
    """One real send through ``provider_name`` to the emulator at ``base_url``, in this (fresh) process.

    The provider is the pipeline's own, on the client ``make_client`` makes for it; the client only gains an
    event hook that notes each request's Content-Length, to compare the requests with the raw run's.
    """
    from pipeline import send
    from pipeline.providers import make_provider
    from pipeline.providers.http import make_client

    with tempfile.TemporaryDirectory(prefix="bench-send-") as temporary:
        ready = setup(Path(temporary), audience, provider_name, base_url)
        settings, store, build = ready["settings"], ready["store"], ready["build"]
        setup_peak, setup_rss = peak_rss_kib(), current_rss_kib()
        sizes: list[int] = []

        async def note(request: Any) -> None:
            sizes.append(int(request.headers.get("Content-Length", 0)))

        async def run(send_id: int) -> Any:
            client = make_client(settings)
            client.event_hooks = {"request": [note], "response": []}
            try:
                return await send.run_send(store, settings, send_id, provider=make_provider(settings, client))
            finally:
                await client.aclose()

        profiler = cProfile.Profile() if profile else None
        cpu = cpu_seconds()
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        send_id = send.create_send(store, settings, build.edition, built_path=str(build.folder))
        created = time.perf_counter()
        result = asyncio.run(run(send_id))
        finished = time.perf_counter()
        if profiler is not None:
            profiler.disable()
        cpu = cpu_seconds() - cpu
        end_peak, end_rss = peak_rss_kib(), current_rss_kib()
        if result.status != "sent" or result.counts != {"sent": audience}:
            raise SystemExit(f"send {send_id} ended {result.status} ({result.reason}) with {result.counts}")
        store.dispose()
    if profiler is not None:
        print_profile(profiler, f"sending child, {audience:,} recipients through {provider_name}")
    return {
        "kind": "send", "audience": audience, "import_s": ready["import_s"], "build_s": ready["build_s"],
        "create_s": created - start, "run_s": finished - created, "send_s": finished - start, "cpu_s": cpu,
        "requests": len(sizes), "request_bytes": sum(sizes),
        "setup_peak_kib": setup_peak, "setup_rss_kib": setup_rss, "end_peak_kib": end_peak, "end_rss_kib": end_rss,
        "batch_size": batch_size_of(settings), "concurrency": settings.provider.concurrency,
    }


def print_profile(profiler: cProfile.Profile | pstats.Stats, title: str, top: int = 25) -> None:
    out = io.StringIO()
    stats = profiler if isinstance(profiler, pstats.Stats) else pstats.Stats(profiler, stream=out)
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"==== profile: {title} ====")
    print(out.getvalue())


# ---------------------------------------------------------------- HTTP providers: the raw ceiling


def request_bodies(provider: Any, settings: Any, mail: Any, count: int) -> list[bytes]:
    """The request bodies the provider makes for a batch of ``count`` recipients (synthetic, as the CSV's)."""
    from pipeline import messages
    from pipeline.providers.http import chunks

    base = settings.publication.base_url
    people = [messages.recipient(settings, label=mail.label, nonce="0f1e2d3c", delivery_id=number,
                                 email=subscriber_email(number),
                                 name=subscriber_name(number), view_url=f"{base}/archive/{SAMPLE}/",
                                 unsubscribe_url=f"{base}/u/{messages.unsubscribe_token(settings, number, 1)}")
              for number in range(1, count + 1)]
    if provider.name == "postmark":
        from pipeline.providers.postmark import _parts

        parts = _parts([(person, provider._encode(mail, person)) for person in people])
        return [b"[" + b",".join(body for _, body in part) + b"]" for part in parts]
    from pipeline.providers.sendgrid import MAX_PERSONALIZATIONS

    return [json.dumps(provider.request_body(mail, part), ensure_ascii=False, separators=(",", ":")).encode()
            for part in chunks(people, MAX_PERSONALIZATIONS)]


def request_target(provider: Any) -> tuple[str, dict[str, str]]:
    """The URL and headers of the provider's send request, as its ``send`` posts them."""
    key = provider.key.value
    if provider.name == "postmark":
        return f"{provider.base_url}/email/batch", {"X-Postmark-Server-Token": key, "Accept": "application/json",
                                                    "Content-Type": "application/json"}
    return f"{provider.base_url}/v3/mail/send", {"Authorization": f"Bearer {key}", "Accept": "application/json",
                                                 "Content-Type": "application/json"}


def raw_child(provider_name: str, audience: int, base_url: str) -> dict[str, Any]:
    """The raw ceiling: the send's requests posted by a bare httpx loop at the same concurrency.

    The bodies (one set per batch size) are built once, before the clock starts, by the provider's own
    encoder; the timed loop only posts them and counts the answers: no database, no personalisation, no log.
    """
    from pipeline import messages
    from pipeline.mail import Mail
    from pipeline.prepare import prepare_and_write
    from pipeline.providers import make_provider
    from pipeline.providers.http import make_client

    with tempfile.TemporaryDirectory(prefix="bench-raw-") as temporary:
        settings = make_project(Path(temporary), provider_name, base_url)
        edition = prepare_and_write(settings.paths.drafts / SAMPLE, settings).edition
    publication = settings.publication
    mail = Mail(label="1", subject=edition.subject, html=edition.email_html, text=edition.email_txt,
                sender=publication.from_, reply_to=publication.reply_to,
                list_headers=messages.list_headers(settings, label="1", edition=SAMPLE))
    batch_size, concurrency = batch_size_of(settings), settings.provider.concurrency
    full, rest = divmod(audience, batch_size)
    plan = [batch_size] * full + ([rest] if rest else [])

    async def run() -> tuple[float, float, Counter[int], list[int]]:
        client = make_client(settings)
        provider = make_provider(settings, client)
        bodies = {size: request_bodies(provider, settings, mail, size) for size in set(plan)}
        url, headers = request_target(provider)
        batches, statuses, sizes = iter(plan), Counter[int](), []

        async def worker() -> None:
            for size in batches:  # one iterator shared by the workers: each takes the next batch
                for body in bodies[size]:
                    response = await client.post(url, content=body, headers=headers)
                    statuses[response.status_code] += 1
                    sizes.append(len(body))

        try:
            cpu = cpu_seconds()
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start, cpu_seconds() - cpu, statuses, sizes
        finally:
            await client.aclose()

    setup_peak = peak_rss_kib()
    seconds, cpu, statuses, sizes = asyncio.run(run())
    if any(not 200 <= status < 300 for status in statuses):
        raise SystemExit(f"the raw run got answers {dict(statuses)}")
    return {"kind": "raw", "audience": audience, "send_s": seconds, "cpu_s": cpu, "requests": len(sizes),
            "request_bytes": sum(sizes), "statuses": {str(k): v for k, v in statuses.items()},
            "setup_peak_kib": setup_peak, "end_peak_kib": peak_rss_kib(), "batch_size": batch_size,
            "concurrency": concurrency}


# ---------------------------------------------------------------- the emulator, in its own process


class EmulatorProcess:
    """``python -m pipeline emulator --port 0`` in a separate process, from an empty folder (no settings)."""

    def __init__(self, profile_to: Path | None = None):
        self.folder = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
        self.log_path = self.folder / "emulator.log"
        command = [sys.executable]
        if profile_to is not None:
            command += ["-m", "cProfile", "-o", str(profile_to)]
        command += ["-m", "pipeline", "emulator", "--host", "127.0.0.1", "--port", "0"]
        environment = {name: value for name, value in os.environ.items() if not name.startswith("NEWSLETTER_")}
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        with self.log_path.open("w", encoding="utf-8") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, env=environment, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        try:
            self.url = self._wait_url()
            import httpx

            self.http = httpx.Client(base_url=self.url, timeout=120)
            self._wait_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_url(self) -> str:
        deadline = time.monotonic() + EMULATOR_START_S
        while time.monotonic() < deadline:
            found = re.search(r"listening on (http://\S+)", self.log_path.read_text(encoding="utf-8"))
            if found:
                return found[1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"the emulator did not start:\n{self.log_path.read_text(encoding='utf-8')}")

    def _wait_answering(self) -> None:
        import httpx

        deadline = time.monotonic() + EMULATOR_START_S
        while time.monotonic() < deadline:
            try:
                if self.http.get("/_emulator/stats").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"the emulator at {self.url} does not answer")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the emulator process so far (from /proc/PID/stat)."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int | None:
        return _proc_status_kib(self.pid, "VmRSS")

    def reset(self) -> None:
        self.http.post("/_emulator/reset").raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/_emulator/stats")
        response.raise_for_status()
        return response.json()

    def message(self, provider: str, offset: int) -> dict[str, Any]:
        response = self.http.get("/_emulator/messages", params={"provider": provider, "offset": offset, "limit": 1})
        response.raise_for_status()
        return response.json()["messages"][0]

    def stop(self) -> None:
        """SIGINT (the emulator stops, and a profiled one writes its profile), then harder if need be."""
        if hasattr(self, "http"):
            self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def check_recorded(emulator: EmulatorProcess, provider: str, row: dict[str, Any]) -> dict[str, Any]:
    """What the emulator recorded for the measurement just made: every recipient once, every answer 2xx; for a
    real send, the first, a middle and the last message must be personalised (recipient, links, no tokens)."""
    stats = emulator.stats()
    recorded, requests = stats["messages"][provider], stats["requests"][provider]
    responses = stats["responses"][provider]
    ok = (recorded == row["audience"] and requests == row["requests"]
          and all(status.startswith("2") for status in responses) and not stats["faults_injected"])
    checked = []
    if row["kind"] == "send" and recorded:
        for offset in sorted({0, recorded // 2, recorded - 1}):
            message = emulator.message(provider, offset)
            html, text = message["html"] or "", message["text"] or ""
            leftovers = sorted(set(LEFTOVER.findall(html + text)))
            header = re.match(r"<([^>]+)>", message["headers"].get("List-Unsubscribe", ""))
            link = header[1] if header else None  # the recipient's own signed link: in both parts
            personal = (message["to"].endswith("@example.net") and link is not None and "/u/" in link
                        and f"Unsubscribe: {link}" in text and f'href="{link}"' in html and not leftovers)
            ok = ok and personal
            checked.append(f"{message['to']} {'OK' if personal else 'NOT PERSONALISED ' + ','.join(leftovers)}")
    return {"recorded": recorded, "requests": requests, "responses": responses, "ok": ok, "checked": checked}


def measure(emulator: EmulatorProcess, provider: str, kind: str, audience: int, secret: str,
            profile: bool = False) -> dict[str, Any]:
    """One measurement (a real send or the raw ceiling) in a fresh child, on a freshly reset emulator."""
    emulator.reset()
    print(f"{provider}: {'sending to' if kind == 'send' else 'raw ceiling for'} {audience:,} recipients in a child "
          f"process ...", file=sys.stderr, flush=True)
    extra = ["--mode", kind, "--base-url", emulator.url] + (["--profile"] if profile else [])
    before, busy, children, own, start = (emulator.cpu_seconds(), system_busy_seconds(), children_cpu_seconds(),
                                          cpu_seconds(), time.perf_counter())
    row = run_child(provider, audience, secret, extra, echo=profile)
    wall, busy_after = time.perf_counter() - start, system_busy_seconds()
    row["emulator_cpu_s"] = emulator.cpu_seconds() - before
    # What the rest of the machine used meanwhile, in cores: all busy time less the child (setup included),
    # the emulator and this process. Other people's work on a shared machine takes the two processes' cores.
    ours = children_cpu_seconds() - children + row["emulator_cpu_s"] + cpu_seconds() - own
    row["others_cores"] = None if busy is None or busy_after is None else max(busy_after - busy - ours, 0.0) / wall
    row["emulator_rss_kib"] = emulator.rss_kib()
    row["emulator"] = check_recorded(emulator, provider, row)
    emulator.reset()  # its records go before the next child starts
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


# ---------------------------------------------------------------- reports


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


def report_http(provider: str, rows: list[dict[str, Any]], audience: int, compare: int) -> None:
    first = rows[0]
    print(f"Python {platform.python_version()} ({platform.machine()}, {platform.system()}); provider {provider} "
          f"against the emulator in a separate process (uvicorn h11, 127.0.0.1); batch size {first['batch_size']} "
          f"(the provider's maximum), concurrency {first['concurrency']}; SQLite; sample {SAMPLE}")
    print(machine_note())
    print("each row: a fresh child process; the emulator is reset before and after it\n")
    print(f"{'run':>5}{'recipients':>11}{'requests':>9}{'MiB/req':>9}{'create s':>9}{'run s':>8}{'total s':>9}"
          f"{'recipients/s':>14}{'CPU s':>8}{'emu CPU s':>10}{'peak MiB':>10}{'growth MiB':>11}{'emu RSS MiB':>12}"
          f"{'others':>8}")
    for row in rows:
        send = row["kind"] == "send"
        rate = row["audience"] / row["send_s"]
        per_request = row["request_bytes"] / row["requests"] / 1024 if row["requests"] else None
        growth = mib(row["end_peak_kib"] - row["setup_peak_kib"]) if send else "-"
        create, run = (f"{row['create_s']:.2f}", f"{row['run_s']:.2f}") if send else ("-", "-")
        others = "n/a" if row["others_cores"] is None else f"{row['others_cores']:.2f}"
        print(f"{row['kind']:>5}{row['audience']:>11,}{row['requests']:>9,}{mib(per_request):>9}{create:>9}{run:>8}",
              end="")
        print(f"{row['send_s']:>9.2f}{rate:>14,.0f}{row['cpu_s']:>8.2f}{row['emulator_cpu_s']:>10.2f}"
              f"{mib(row['end_peak_kib']):>10}{growth:>11}{mib(row['emulator_rss_kib']):>12}{others:>8}")
    print("\nraw  = the same requests (batch size, count, body sizes) posted by a bare httpx.AsyncClient loop at the "
          "same concurrency: bodies built once, no personalisation, database or logging")
    print("send = create_send + run_send: delivery rows, claims, personalisation, requests, outcomes in the delivery "
          "log")
    print("CPU s = the child's CPU seconds in the timed part; emu CPU s = the emulator process's during the row "
          "(close to total s: the emulator is the bottleneck); peak = ru_maxrss of the child; growth = end peak - "
          "peak after setup (import + build)")
    print(f"others = CPU cores used by the rest of the machine during the row, on average (of {os.cpu_count()}): "
          "above ~0.2 the row was slowed by someone else's work, the send (two busy processes) more than raw")
    print()
    for row in rows:
        check = row["emulator"]
        print(f"emulator after {row['kind']} {row['audience']:,}: {check['recorded']:,} messages recorded (expected "
              f"{row['audience']:,}) in {check['requests']:,} requests (the child made {row['requests']:,}), "
              f"answers {check['responses']} {'OK' if check['ok'] else 'MISMATCH'}"
              + (f"; checked {', '.join(check['checked'])}" if check["checked"] else ""))

    main_rows = [row for row in rows if row["audience"] == audience]
    raw = max(row["audience"] / row["send_s"] for row in main_rows if row["kind"] == "raw")
    real = max(row["audience"] / row["send_s"] for row in main_rows if row["kind"] == "send")
    ratio = real / raw
    best = " (best of each)" if len(main_rows) > 2 else ""
    print(f"\n{provider} at {audience:,} recipients{best}: end to end {real:,.0f} recipients/s, raw ceiling "
          f"{raw:,.0f} recipients/s: {ratio:.2f} x the raw ceiling")
    if provider in EXPECTED_RATIO:
        expected = EXPECTED_RATIO[provider]
        print(f"expected for {provider}: at least {expected:.2f} x the raw ceiling -- "
              f"{'meets it' if ratio >= expected else 'BELOW'}")
    if provider in EXPECTED_HTTP_RATE:
        expected_rate = EXPECTED_HTTP_RATE[provider]
        print(f"expected for {provider}: at least {expected_rate:,} recipients/s end to end -- "
              f"{'meets it' if real >= expected_rate else 'BELOW'}")
    sends = {row["audience"]: row for row in rows if row["kind"] == "send"}
    if compare and compare in sends:
        big, small = sends[audience], sends[compare]
        memory = big["end_peak_kib"] / small["end_peak_kib"]
        print(f"peak RSS of the sending child {audience:,} / {compare:,} recipients: {memory:.2f}x "
              f"({mib(big['end_peak_kib'])} / {mib(small['end_peak_kib'])} MiB)"
              f" -- {'flat' if memory < 1.25 else 'GROWS with the audience'}")
    if not all(row["emulator"]["ok"] for row in rows):
        print("the emulator did NOT record what was expected: see the rows marked MISMATCH")


def run_http(provider: str, audience: int, compare: int, rounds: int, profile: bool) -> None:
    secret = secrets.token_urlsafe(32)  # signs the unsubscribe links of the children; never printed
    profile_path = Path(tempfile.mkdtemp(prefix="bench-profile-")) / "emulator.prof" if profile else None
    emulator = EmulatorProcess(profile_to=profile_path)
    print(f"emulator (pid {emulator.pid}) listening on {emulator.url}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    try:
        if profile:
            rows.append(measure(emulator, provider, "send", audience, secret, profile=True))
        else:
            for _ in range(rounds):
                rows.append(measure(emulator, provider, "raw", audience, secret))
                rows.append(measure(emulator, provider, "send", audience, secret))
            if compare:
                rows.append(measure(emulator, provider, "send", compare, secret))
    finally:
        emulator.stop()
    if profile_path is not None:
        row = rows[0]
        print(f"profiled send of {audience:,} through {provider}: {row['send_s']:.2f} s "
              f"({audience / row['send_s']:,.0f} recipients/s under cProfile), child CPU {row['cpu_s']:.2f} s, "
              f"emulator CPU {row['emulator_cpu_s']:.2f} s; emulator check "
              f"{'OK' if row['emulator']['ok'] else 'MISMATCH'}")
        if profile_path.exists():
            print_profile(pstats.Stats(str(profile_path)), "emulator process (whole life, mostly this send)")
        else:
            print("the emulator wrote no profile")
        shutil.rmtree(profile_path.parent, ignore_errors=True)
        return
    report_http(provider, rows, audience, compare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("outbox", *HTTP_PROVIDERS), required=True,
                        help="the provider to send through (postmark and sendgrid: to the local emulator)")
    parser.add_argument("--audience", type=int,
                        help="recipients of the main send (default 20000 for outbox, 100000 for postmark/sendgrid)")
    parser.add_argument("--compare", type=int,
                        help="recipients of the comparison send, for the memory ratio (default 2000 for outbox, "
                             "10000 for postmark/sendgrid; 0: none, HTTP providers only)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="HTTP providers: raw + send pairs at --audience; the best of each is compared")
    parser.add_argument("--profile", action="store_true",
                        help="HTTP providers: one send of --audience under cProfile (child and emulator), "
                             "then the top functions of both")
    parser.add_argument("--child", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("send", "raw"), default="send", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    http = args.provider in HTTP_PROVIDERS
    if args.child is not None:
        if not http:
            result = child(args.child)
        elif args.mode == "raw":
            result = raw_child(args.provider, args.child, args.base_url)
        else:
            result = http_send_child(args.provider, args.child, args.base_url, args.profile)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return
    audience = args.audience if args.audience is not None else (100_000 if http else 20_000)
    compare = args.compare if args.compare is not None else (10_000 if http else 2_000)
    if audience < 1 or compare < 0 or audience == compare or args.rounds < 1:
        parser.error("--audience must be positive, --compare positive (or 0) and different, --rounds at least 1")
    if http:
        run_http(args.provider, audience, compare, args.rounds, args.profile)
        return
    if compare < 1 or args.profile or args.rounds != 1:
        parser.error("the outbox benchmark needs a positive --compare and takes no --profile or --rounds")
    secret = secrets.token_urlsafe(32)  # signs the unsubscribe links of the children; never printed
    results = []
    for size in (compare, audience):
        print(f"sending to {size:,} synthetic subscribers in a child process ...", file=sys.stderr, flush=True)
        results.append(run_child("outbox", size, secret))
    report(results, audience, compare)


if __name__ == "__main__":
    main()
