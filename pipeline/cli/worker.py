"""The ``worker`` command: run send jobs on PostgreSQL until stopped."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.config import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "worker", help="send the jobs of sends handed to the workers (PostgreSQL), until SIGTERM",
        description="Run a send worker on the PostgreSQL of [database] url: it takes parts of sends, one job each, "
                    "and sends them exactly once; run as many as you like, on as many machines. SIGTERM or Ctrl+C "
                    "stops it after the batches in flight. See the README, 'Workers'.")
    worker.add_argument("--concurrency", metavar="N", type=_positive,
                        help="jobs run at once by this worker (default: [workers] concurrency)")
    worker.set_defaults(run=run_worker_command)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be 1 to 64, got {value}")
    return value


def run_worker_command(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import logging

    from pipeline.errors import StoreError
    from pipeline.store import Store
    from pipeline.worker.run import run_worker

    store = Store.from_settings(settings)
    if store.is_sqlite:
        raise StoreError("workers need PostgreSQL ([database] url = \"postgresql+psycopg://...\"); on SQLite "
                         "'send --now' and 'newsletter run' send in-process")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return asyncio.run(run_worker(store, settings, concurrency=args.concurrency))
