"""Benchmark how fast the ``newsletter`` command starts, beside a bare ``python -c pass``.

Wall time (time.perf_counter around subprocess.run, median/p90/min after a warm-up run) of
``python -c pass``, ``newsletter --help``, ``newsletter send --help``, ``newsletter config show`` and
``newsletter build <sample>`` (into a temporary folder), each a fresh interpreter of this venv run in the
project root, measured in turns so that a busy moment of the machine falls on all of them alike; each
median is printed with its ratio to ``python -c pass`` of the same run.

Run from the project root:  .venv/bin/python benchmarks/bench_startup.py [--runs 15] [--warmup 1]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
BASELINE = "python -c pass"
NEWSLETTER = [sys.executable, "-m", "pipeline"]  # what the console script runs, without its wrapper's own start


def commands(out: Path) -> dict[str, list[str]]:
    """What is timed: the baseline first, then the command lines, by the name printed for each."""
    return {
        BASELINE: [sys.executable, "-c", "pass"],
        "newsletter --help": [*NEWSLETTER, "--help"],
        "newsletter send --help": [*NEWSLETTER, "send", "--help"],
        "newsletter config show": [*NEWSLETTER, "config", "show"],
        f"newsletter build {SAMPLE}": [*NEWSLETTER, "build", SAMPLE, "--out", str(out)],
    }


def run_once(argv: list[str], environ: dict[str, str]) -> float:
    """Wall time in milliseconds of one run; a failed command stops the benchmark with its output."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    return elapsed


def p90(samples: list[float]) -> float:
    return sorted(samples)[max(0, math.ceil(0.9 * len(samples)) - 1)]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each command (default 15)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each command first (default 1)")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be >= 1 and --warmup >= 0")
    environ = {name: value for name, value in os.environ.items() if name != "NEWSLETTER_CONFIG"}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        lines = commands(Path(folder) / SAMPLE)
        for _ in range(args.warmup):
            for argv in lines.values():
                run_once(argv, environ)
        samples: dict[str, list[float]] = {name: [] for name in lines}
        for _ in range(args.runs):  # in turns: one run of each command, then the next round
            for name, argv in lines.items():
                samples[name].append(run_once(argv, environ))

    print(f"Python {platform.python_version()} ({platform.machine()}), {sys.executable}")
    print(f"{args.runs} runs of each command after {args.warmup} warm-up run(s), in turns; wall time of the process")
    baseline = statistics.median(samples[BASELINE])
    print(f"\n{'command':<52}{'median ms':>11}{'p90 ms':>10}{'min ms':>10}{'/ python -c pass':>18}")
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:<52}{median:>11.1f}{p90(times):>10.1f}{min(times):>10.1f}{median / baseline:>17.1f}x")
    print("\nFigures vary from run to run, more so on shared machines: compare ratios within one run.")


if __name__ == "__main__":
    main()
