"""Exactly-once under faults: send workers killed at random, PostgreSQL restarted, the provider misbehaving.

    python -m tests.chaos [--audience 50000] [--workers 3] [--provider sendgrid] [--kill-every 4] [--seed 7]

On a throwaway PostgreSQL 15 cluster (``tests/pgcluster.py``) and against the emulator with faults on
(10% answered 500, 5% 429 with Retry-After, 2% answered after the sender's timeout), ``--workers`` send
workers (``newsletter worker``) send one edition to ``--audience`` subscribers, handed to them by
``newsletter send --now``. Meanwhile SIGKILL takes a random worker every ``--kill-every`` seconds (it is
started again at once), and PostgreSQL is restarted once, when about a third of the audience is recorded.

At the end it prints, and checks: every recipient got the edition exactly once at the emulator, or is
listed ``uncertain`` (with Resend, which honours an idempotency key: exactly once and no ``uncertain``),
nobody got it twice, and the delivery log equals the emulator's record row for row (a ``sent`` row has one
record, with its message id; ``uncertain`` at most one; ``failed`` none). Exit status 1 if any check fails.
``make chaos`` runs it in full; ``tests/test_chaos.py`` a reduced run inside ``make test``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy import func, select

from pipeline.emulator import run_emulator_in_thread
from pipeline.errors import StoreError
from pipeline.store import Store
from pipeline.store.tables import deliveries, sends
from tests.pgcluster import Cluster, available

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = "2024-02-22-china-russia-report"
KEY = "chaos-key"
KEY_VARIABLES = {"postmark": "POSTMARK_SERVER_TOKEN", "sendgrid": "SENDGRID_API_KEY", "mailgun": "MAILGUN_API_KEY",
                 "resend": "RESEND_API_KEY"}
TIMEOUT = 2.0  # the sender's request timeout; a "late" fault answers after it
SECRET = "a-chaos-signing-secret-of-32-bytes-at-least"
NOTICES_TO = tomllib.loads((ROOT / "newsletter.toml").read_text(encoding="utf-8"))["notify"]["staff"]
STAFF = frozenset(address.lower() for address in NOTICES_TO)  # as the emulator's records name them


@dataclass
class Result:
    """What a chaos run saw, and what its checks found."""

    audience: int
    provider: str
    counts: dict[str, int] = field(default_factory=dict)  # delivery rows by status
    received: int = 0  # messages the emulator recorded
    twice: int = 0  # recipients the emulator recorded more than once
    mismatches: list[str] = field(default_factory=list)  # rows the emulator's record contradicts
    kills: int = 0
    notices: int = 0  # staff notices the emulator received (not deliveries)
    database_restarts: int = 0
    injected: dict[str, int] = field(default_factory=dict)  # faults the emulator injected
    seconds: float = 0.0
    finished: bool = False
    status: str = ""

    @property
    def ok(self) -> bool:
        settled = set(self.counts) <= {"sent", "uncertain"} and sum(self.counts.values()) == self.audience
        exactly = self.provider != "resend" or not self.counts.get("uncertain")
        return self.finished and settled and exactly and not self.twice and not self.mismatches

    def lines(self) -> list[str]:
        counts = ", ".join(f"{status} {count:,}" for status, count in sorted(self.counts.items()))
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.injected.items())) or "none"
        return [
            f"chaos: {self.audience:,} recipients through {self.provider}, {self.seconds:.0f} s, send {self.status}",
            f"  faults injected by the emulator: {faults}",
            f"  workers killed with SIGKILL: {self.kills}; PostgreSQL restarts: {self.database_restarts}",
            f"  delivery log: {counts}",
            f"  emulator: {self.received:,} messages to recipients, {self.notices} notice(s) to staff; "
            f"recipients received twice: {self.twice}",
            f"  log rows the emulator's record contradicts: {len(self.mismatches)}"
            + "".join(f"\n    {line}" for line in self.mismatches[:10]),
            "  exactly once: " + ("yes" if self.ok else "NO"),
        ]


def project(folder: Path, database_url: str, provider: str, emulator_url: str, *, stall_seconds: float,
            batch_size: int | None, part_size: int) -> Path:
    """A copy of the sample publication that sends through the emulator, with its store on PostgreSQL."""
    for part in ("templates", "drafts"):
        shutil.copytree(ROOT / part, folder / part)
    settings = tomllib.loads((ROOT / "newsletter.toml").read_text(encoding="utf-8"))
    settings["database"] = {"url": database_url}
    settings["provider"] = {"name": provider, "base_url": emulator_url, "api_key_env": KEY_VARIABLES[provider],
                            "timeout": TIMEOUT, **({"domain": "mg.example.org"} if provider == "mailgun" else {}),
                            **({"batch_size": batch_size} if batch_size else {})}
    settings["send"] = {"lease_seconds": stall_seconds}
    settings["workers"] = {"heartbeat_seconds": 1.0, "stall_seconds": stall_seconds, "part_size": part_size}
    (folder / "newsletter.toml").write_text(tomli_w.dumps(settings), encoding="utf-8")
    return folder


def environment(provider: str) -> dict[str, str]:
    """The commands' environment: the secrets they need, and this tree's package first on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "NEWSLETTER_SECRET": SECRET, KEY_VARIABLES[provider]: KEY, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path}


def newsletter(folder: Path, env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=folder, env=env, stdout=out,
                            stderr=subprocess.STDOUT)


def import_audience(folder: Path, env: dict[str, str], audience: int) -> None:
    csv = folder / "audience.csv"
    with csv.open("w", encoding="utf-8") as out:
        out.write("email,name,tags,status\n")
        for number in range(audience):
            out.write(f"reader{number:07d}@example.net,Reader {number},policy,active\n")
    done = subprocess.run([sys.executable, "-m", "pipeline", "subscribers", "import", str(csv)], cwd=folder,
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chaos: importing the audience failed: {done.stderr.strip() or done.stdout.strip()}")


def _latest_send(store: Store) -> tuple[int, str] | None:
    with store.read() as connection:
        row = connection.execute(select(sends.c.id, sends.c.status).order_by(sends.c.id.desc()).limit(1)).first()
    return (row.id, row.status) if row is not None else None


def _progress(store: Store, send_id: int) -> Counter[str]:
    with store.read() as connection:
        return Counter(dict(connection.execute(select(deliveries.c.status, func.count())
                                               .where(deliveries.c.send_id == send_id)
                                               .group_by(deliveries.c.status)).all()))


def run(*, audience: int, workers: int, provider: str, kill_every: float, seed: int, restart_database: bool = True,
        stall_seconds: float = 4.0, limit_seconds: float = 1800.0, batch_size: int | None = None,
        part_size: int = 1000, log: Any = print) -> Result:
    """One chaos run, from an empty cluster to the checked result."""
    chance = random.Random(seed)
    result = Result(audience=audience, provider=provider)
    work = Path(tempfile.mkdtemp(prefix="newsletter-chaos-"))
    cluster = Cluster.start()
    faults = {"seed": seed, "error_rates": {"500": 0.10}, "rate_limit": {"rate": 0.05, "retry_after": 1},
              "late": {"rate": 0.02, "delay_s": TIMEOUT + 0.5}}
    running: list[subprocess.Popen[bytes]] = []
    try:
        with run_emulator_in_thread(keys={provider: KEY}, seed=seed) as emulator:
            emulator.set_faults(faults)
            url = cluster.create_database("chaos")
            folder = project(work / "project", url, provider, emulator.url, stall_seconds=stall_seconds,
                             batch_size=batch_size, part_size=part_size)
            env = environment(provider)
            logs = work / "logs"
            logs.mkdir()
            log(f"chaos: importing {audience:,} subscribers into PostgreSQL")
            import_audience(folder, env, audience)
            store = Store(url)
            started = time.monotonic()
            running = [newsletter(folder, env, "worker", log=logs / f"worker-{n}.log") for n in range(workers)]
            sender = newsletter(folder, env, "send", SAMPLE, "--now", "--offline", "--no-progress",
                                log=logs / "send.log")
            result.finished, result.status = _chaos(store, cluster, folder, env, logs, running, sender, chance,
                                                    result, kill_every=kill_every,
                                                    restart_database=restart_database, limit_seconds=limit_seconds,
                                                    log=log)
            result.seconds = time.monotonic() - started
            latest = _latest_send(store)
            if latest is not None:
                if result.finished:
                    _await_notice(emulator, provider)
                _check(store, latest[0], emulator.messages(provider=provider), result)
            result.injected = dict(emulator.stats().get("faults_injected", {}))
            store.dispose()
    finally:
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def _chaos(store: Store, cluster: Cluster, folder: Path, env: dict[str, str], logs: Path,
           running: list[subprocess.Popen[bytes]], sender: subprocess.Popen[bytes], chance: random.Random,
           result: Result, *, kill_every: float, restart_database: bool, limit_seconds: float,
           log: Any) -> tuple[bool, str]:
    """Kill and restart workers, restart PostgreSQL once, until the send is done; (done, its status)."""
    deadline = time.monotonic() + limit_seconds
    next_kill = time.monotonic() + kill_every
    restarted = not restart_database
    status, reported = "", 0.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            latest = _latest_send(store)
            if latest is None:
                continue
            send_id, status = latest
            counts = _progress(store, send_id)
        except StoreError:
            continue  # the database is restarting
        recorded = sum(n for state, n in counts.items() if state not in ("queued", "sending"))
        if time.monotonic() - reported > 5:
            reported = time.monotonic()
            log(f"chaos: send {send_id} {status}: {recorded:,} of {result.audience:,} recorded")
        if status not in ("queued", "sending", "scheduled") and not counts.get("queued") and \
                not counts.get("sending"):
            sender.wait(timeout=60)
            return True, status
        if not restarted and recorded >= result.audience // 3:
            restarted = True
            log("chaos: restarting PostgreSQL")
            cluster.restart(down_seconds=1.0)
            result.database_restarts += 1
        if time.monotonic() >= next_kill:
            next_kill = time.monotonic() + kill_every
            victim = chance.randrange(len(running))
            running[victim].send_signal(signal.SIGKILL)
            running[victim].wait()
            result.kills += 1
            running[victim] = newsletter(folder, env, "worker", log=logs / f"worker-{victim}.log")
    return False, status


def _await_notice(emulator: Any, provider: str, seconds: float = 15.0) -> None:
    """Wait a moment for the staff's summary: the job that ended the send mails it just after, through the
    same faulty emulator (a 500 or a 429 on it is retried, after Retry-After)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(record["to"].lower() in STAFF for record in emulator.messages(provider=provider)):
            return
        time.sleep(0.2)


def _check(store: Store, send_id: int, records: list[dict[str, Any]], result: Result) -> None:
    """The delivery log against the emulator's record, row for row (as ``tests/test_providers_emulator.py``)."""
    with store.read() as connection:
        rows = list(connection.execute(select(deliveries.c.email, deliveries.c.status,
                                              deliveries.c.provider_message_id)
                                       .where(deliveries.c.send_id == send_id)))
    received: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["to"].lower() in STAFF:
            result.notices += 1  # the send's summary, mailed to staff through the same provider
        else:
            received[record["to"].lower()].append(record)
    result.counts = dict(Counter(row.status for row in rows))
    result.received = sum(len(got) for got in received.values())
    result.twice = sum(1 for got in received.values() if len(got) > 1)
    known = {row.email.lower() for row in rows}
    result.mismatches.extend(f"{address}: received, but not in the log" for address in received if address not in known)
    for row in rows:
        got = received.get(row.email.lower(), [])
        if row.status == "sent":
            if len(got) != 1:
                result.mismatches.append(f"{row.email}: sent, received {len(got)} time(s)")
            elif got[0]["id"].strip("<>") != row.provider_message_id:
                result.mismatches.append(f"{row.email}: sent as {row.provider_message_id}, received as {got[0]['id']}")
        elif len(got) > {"uncertain": 1}.get(row.status, 0):
            result.mismatches.append(f"{row.email}: {row.status}, received {len(got)} time(s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audience", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--provider", choices=sorted(KEY_VARIABLES), default="sendgrid")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between SIGKILLs (4)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, help="recipients per request (default: the provider's most)")
    parser.add_argument("--part-size", type=int, default=1000, help="delivery rows per worker job (1,000)")
    parser.add_argument("--no-database-restart", action="store_true")
    args = parser.parse_args(argv)
    if not available():
        print("chaos: the PostgreSQL 15 server binaries are not installed (make setup installs them)",
              file=sys.stderr)
        return 2
    result = run(audience=args.audience, workers=args.workers, provider=args.provider,
                 kill_every=args.kill_every, seed=args.seed, restart_database=not args.no_database_restart,
                 batch_size=args.batch_size, part_size=args.part_size)
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
