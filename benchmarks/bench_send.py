"""Benchmark a whole send of the sample edition through the outbox provider, and its peak memory.

Each measurement runs in a fresh child process (this script with a hidden --child mode), in its own
temporary project folder: newsletter.toml, templates/ and drafts/ copied there, the SQLite database and
the outbox inside it. The child writes a CSV of N synthetic subscribers (addresses at example.net),
imports it (timed on its own), builds the sample edition, then times the send end to end:
create_send (a delivery row per recipient) + run_send (claim, render, write the .eml, record each
outcome in the delivery log). It checks that the outbox holds exactly N .eml files and parses three of
them with the strict email policy.

Peak RSS is resource.getrusage(RUSAGE_SELF).ru_maxrss read in the child, after setup (import + build)
and at the end; the send is run for --audience and --compare recipients, and the ratio of the two peaks
shows whether memory grows with the audience (it must not: the audience is streamed in bounded batches).

The outbox writes one ~100 KB file per recipient, so the rate depends on the filesystem of the temporary
folder (printed): set TMPDIR (e.g. TMPDIR=/dev/shm) to compare a disk with tmpfs.

Run from the project root:  .venv/bin/python benchmarks/bench_send.py --provider outbox [--audience 20000]
                            [--compare 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import email
import email.policy
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
EXPECTED_RATE = 2_000  # recipients per second, end to end
RESULT_MARK = "bench-send-result: "
NAMES = ("Ada Lovelace", "Zoë Østergaard", "José Martínez", "Li Wei", "Ольга Петрова", "")


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int | None:
    """Resident set size right now, in KiB, from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


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


def write_subscribers(path: Path, count: int) -> None:
    """A CSV of ``count`` distinct active subscribers at example.net, some with non-ASCII names and tags."""
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "name", "tags", "status"])
        for number in range(1, count + 1):
            name = NAMES[number % len(NAMES)]
            writer.writerow([f"reader{number:07d}@example.net", f"{name} {number}" if name else "",
                             "policy;energy" if number % 3 == 0 else "", "active"])


def make_project(folder: Path) -> Any:
    """Copy the sample project into ``folder``; settings with the database and outbox inside it."""
    from pipeline.config import Database, load_settings

    shutil.copy2(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    settings = load_settings(folder / "newsletter.toml")
    if settings.secret is None:
        raise SystemExit("the child needs NEWSLETTER_SECRET (the parent sets a random one)")
    paths = settings.paths.model_copy(update={"outbox": folder / "outbox", "build": folder / "build"})
    return settings.model_copy(update={"database": Database(url=f"sqlite:///{folder / 'bench.db'}"),
                                       "paths": paths})


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


def child(audience: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: setup, then the send, timed; RSS after each."""
    from pipeline import send
    from pipeline.build import build_edition
    from pipeline.store import Store
    from pipeline.subscribers import import_subscribers

    with tempfile.TemporaryDirectory(prefix="bench-send-") as temporary:
        folder = Path(temporary)
        settings = make_project(folder)
        csv_path = folder / "subscribers.csv"
        write_subscribers(csv_path, audience)
        store = Store.from_settings(settings)

        start = time.perf_counter()
        report = import_subscribers(store, csv_path)
        import_seconds = time.perf_counter() - start
        if report.added != audience or not report.ok:
            raise SystemExit(f"import added {report.added} of {audience}, {len(report.rejected)} rejected")
        start = time.perf_counter()
        build = build_edition(settings.paths.drafts / SAMPLE, settings)
        build_seconds = time.perf_counter() - start
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
        "audience": audience, "import_s": import_seconds, "build_s": build_seconds,
        "create_s": created - start, "run_s": finished - created, "send_s": finished - start,
        "setup_peak_kib": setup_peak, "setup_rss_kib": setup_rss, "end_peak_kib": end_peak, "end_rss_kib": end_rss,
        "outbox": outbox, "batch_size": settings.provider.batch_size,
    }


def run_child(audience: int, secret: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its result is the last marked line of its output."""
    environment = {**os.environ, "NEWSLETTER_SECRET": secret}
    environment.pop("NEWSLETTER_SECRET_FILE", None)
    environment.pop("NEWSLETTER_CONFIG", None)
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--provider", "outbox",
                                "--child", str(audience)],
                               env=environment, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if completed.returncode != 0 or not lines:
        sys.stderr.write(completed.stdout + completed.stderr)
        raise SystemExit(f"the child process for {audience:,} recipients failed (exit {completed.returncode})")
    return json.loads(lines[-1].removeprefix(RESULT_MARK))


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f}"


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
    print("Figures vary from run to run, more so on shared machines: compare within one run.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=("outbox",), required=True, help="the provider to send through")
    parser.add_argument("--audience", type=int, default=20_000, help="recipients of the main send (default 20000)")
    parser.add_argument("--compare", type=int, default=2_000,
                        help="recipients of the comparison send, for the memory ratio (default 2000)")
    parser.add_argument("--child", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(RESULT_MARK + json.dumps(child(args.child)), flush=True)
        return
    if args.audience < 1 or args.compare < 1 or args.audience == args.compare:
        parser.error("--audience and --compare must be positive and different")
    secret = secrets.token_urlsafe(32)  # signs the unsubscribe links of the children; never printed
    results = []
    for audience in (args.compare, args.audience):
        print(f"sending to {audience:,} synthetic subscribers in a child process ...", file=sys.stderr, flush=True)
        results.append(run_child(audience, secret))
    report(results, args.audience, args.compare)


if __name__ == "__main__":
    main()
