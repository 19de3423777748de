"""Benchmark the send workers on PostgreSQL: 1, 2 … workers sending one audience through the emulator.

For each number of workers: a fresh database in a throwaway PostgreSQL 15 cluster (tests/pgcluster.py), the
sample project copied into a temporary folder with [workers] on, N subscribers imported, N ``newsletter worker``
processes started and waited for (heartbeats), then the clock: the ENQUEUE (create_send: a delivery row per
recipient; hand_over: the parts cut and a job each deferred), and the SEND, from the hand-over until the send
is ``sent``. The emulator (``python -m pipeline emulator``, SendGrid mode, 1,000 personalisations a request)
runs in its own process and must have recorded exactly N messages afterwards.

Printed per row: recipients per second, each worker's peak RSS (VmHWM from /proc), the CPU the workers, the
emulator and the whole machine used during the send (in cores: on this 2-core machine, when the total nears 2
the CPU is the bound, not the number of workers).

Run from the project root:  .venv/bin/python benchmarks/bench_scale.py [--audience 20000] [--workers 1,2]
                            [--part-size 5000]        (the issue's full run: --audience 1000000 --workers 1,2,4)
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_send import (  # noqa: E402
    SERVER_KEY,
    _proc_status_kib,
    machine_note,
    mib,
    system_busy_seconds,
    write_subscribers,
)
from servers import EmulatorProcess  # noqa: E402

from tests.pgcluster import Cluster  # noqa: E402

SAMPLE = "2024-02-22-china-russia-report"
KEY_VARIABLE = "SENDGRID_API_KEY"
START_S = 60.0


def project(folder: Path, database: str, emulator_url: str, part_size: int) -> Path:
    """The sample project in ``folder``, on ``database``, sending through the emulator, workers on."""
    shutil.copy2(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    toml = folder / "newsletter.toml"
    content = toml.read_text(encoding="utf-8")
    content = content.replace('url = "sqlite:///newsletter.db"', f'url = "{database}"')
    content = content.replace('name = "outbox"', f'name = "sendgrid"\nbase_url = "{emulator_url}"\n'
                                                  f'api_key_env = "{KEY_VARIABLE}"\nbatch_size = 1000')
    content = content.replace('staff = ["desk@example.org"]', "staff = []")
    content += f"\n[workers]\nheartbeat_seconds = 1\nstall_seconds = 10\npart_size = {part_size}\n"
    toml.write_text(content, encoding="utf-8")
    return toml


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(cluster: Cluster, emulator: EmulatorProcess, workers: int, audience: int, part_size: int) -> dict[str, Any]:
    from pipeline import send, worker
    from pipeline.config import load_settings
    from pipeline.prepare import prepare_and_write
    from pipeline.store import Store
    from pipeline.store.parts import WORKERS, live_workers
    from pipeline.subscribers import import_subscribers

    folder = Path(tempfile.mkdtemp(prefix=f"bench-scale-{workers}-"))
    database = cluster.create_database(f"bench_scale_{workers}_{secrets.token_hex(3)}")
    toml = project(folder, database, emulator.url, part_size)
    settings = load_settings(toml)
    store = Store.from_settings(settings)
    write_subscribers(folder / "audience.csv", audience)
    import_subscribers(store, folder / "audience.csv")
    built = prepare_and_write(folder / "drafts" / SAMPLE, settings)
    emulator.reset()
    env = {**os.environ, KEY_VARIABLE: SERVER_KEY}
    logs = [(folder / f"worker-{number}.log").open("wb") for number in range(workers)]
    processes = [subprocess.Popen([sys.executable, "-m", "pipeline", "worker"], cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT) for log in logs]
    try:
        deadline = time.monotonic() + START_S
        while live_workers(store, 5) < workers:
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                raise SystemExit(f"the workers did not start: see {folder}")
            time.sleep(0.1)
        cpu_before = [cpu_of(process.pid) for process in processes]
        emulator_before, busy_before = emulator.cpu_seconds(), system_busy_seconds()
        started = time.perf_counter()
        send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder), owner=WORKERS)
        jobs = worker.hand_over(store, settings, send_id)
        enqueued = time.perf_counter()
        while send.summary(store, send_id).status == "sending":
            time.sleep(0.2)
        finished = time.perf_counter()
        busy_after = system_busy_seconds()
        worker_cpu = sum(cpu_of(process.pid) - before for process, before in zip(processes, cpu_before, strict=True))
        peaks = [_proc_status_kib(process.pid, "VmHWM") for process in processes]
        emulator_cpu = emulator.cpu_seconds() - emulator_before
        summary = send.summary(store, send_id)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)
        for log in logs:
            log.close()
        store.dispose()
    recorded = emulator.stats()["messages"]["sendgrid"]
    if summary.counts != {"sent": audience} or recorded != audience:
        raise SystemExit(f"{workers} worker(s): the send ended {summary.status} {summary.counts}, the emulator "
                         f"recorded {recorded}; see {folder}")
    shutil.rmtree(folder, ignore_errors=True)
    cluster.drop_database(database.rsplit("/", 1)[1])
    send_s = finished - enqueued
    total = (busy_after - busy_before) if busy_before is not None and busy_after is not None else None
    return {"workers": workers, "jobs": jobs, "enqueue_s": enqueued - started, "send_s": send_s,
            "rate": audience / (finished - started), "peaks": peaks, "worker_cores": worker_cpu / send_s,
            "emulator_cores": emulator_cpu / send_s, "machine_cores": None if total is None else total / send_s,
            "recorded": recorded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audience", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2", help="comma-separated numbers of workers (default 1,2)")
    parser.add_argument("--part-size", type=int, default=5_000, help="delivery rows per job (default 5,000)")
    args = parser.parse_args()
    counts = [int(number) for number in args.workers.split(",")]
    os.environ.setdefault("NEWSLETTER_SECRET", secrets.token_urlsafe(32))
    print(machine_note())
    print(f"audience {args.audience:,}, SendGrid through the emulator, {args.part_size:,} rows a job")
    cluster = Cluster.start()
    emulator = EmulatorProcess()
    try:
        print(f"{'workers':>7} {'jobs':>5} {'enqueue s':>9} {'send s':>7} {'recipients/s':>12} "
              f"{'peak RSS/worker MiB':>22} {'CPU workers':>11} {'emulator':>8} {'machine':>7}")
        for workers in counts:
            row = measure(cluster, emulator, workers, args.audience, args.part_size)
            peaks = "/".join(mib(peak) for peak in row["peaks"])
            machine = "n/a" if row["machine_cores"] is None else f"{row['machine_cores']:.2f}"
            print(f"{row['workers']:>7} {row['jobs']:>5} {row['enqueue_s']:>9.2f} {row['send_s']:>7.2f} "
                  f"{row['rate']:>12,.0f} {peaks:>22} {row['worker_cores']:>11.2f} {row['emulator_cores']:>8.2f} "
                  f"{machine:>7}")
    finally:
        emulator.stop()
        cluster.stop()
    print("CPU in cores used during the send; recipients/s counts the enqueue and the send.")


if __name__ == "__main__":
    main()
