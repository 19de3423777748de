"""The ``send`` and ``logs`` commands: thin wrappers over ``send`` and ``logs``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.common import add_draft, add_format, add_gate, draft_folder, parse_send_id
from pipeline.errors import SendError
from pipeline.store.states import DeliveryStatus, SendStatus

if TYPE_CHECKING:
    from pipeline.build import Build
    from pipeline.checks import Override, Report
    from pipeline.config import Settings
    from pipeline.send import Lease
    from pipeline.store import Store
    from pipeline.store.sends import SendSummary


def add_commands(commands: argparse._SubParsersAction) -> None:
    send = commands.add_parser(
        "send", help="send an edition now, to test addresses, or resume, pause, cancel or retry a send",
        description="Send a draft to its audience now (after the check gate), or to test addresses; or act on "
                    "an existing send. Every recipient is sent at most once; see the README.")
    add_draft(send, optional=True)
    action = send.add_mutually_exclusive_group(required=True)
    action.add_argument("--now", action="store_true", help="send DRAFT to its audience now")
    action.add_argument("--test", metavar="ADDR[,ADDR]", help="send DRAFT to these addresses only, subject "
                                                              "prefixed [TEST]; not recorded as the edition's send")
    action.add_argument("--resume", metavar="SEND_ID", type=parse_send_id,
                        help="continue a paused, failed or stopped send with its queued rows")
    action.add_argument("--pause", metavar="SEND_ID", type=parse_send_id, help="stop a send after the batch in flight")
    action.add_argument("--cancel", metavar="SEND_ID", type=parse_send_id, help="cancel every row not yet sent")
    action.add_argument("--retry-failed", metavar="SEND_ID", type=parse_send_id,
                        help="queue the transient failures of a send again and send them")
    send.add_argument("--resend-uncertain", action="store_true",
                      help="with --resume: also send the rows whose fate is unknown (they may get it twice)")
    add_gate(send, "send")
    send.add_argument("--no-progress", action="store_true", help="no progress bar")
    send.set_defaults(run=run_send_command)

    logs = commands.add_parser(
        "logs", help="the delivery log: a line per send, or a line per recipient of one send",
        description="Without SEND_ID: a line per send (edition, started, finished, counts by status). "
                    "With SEND_ID: a line per recipient (email, status, attempts, provider id, error, times).")
    logs.add_argument("send_id", metavar="SEND_ID", nargs="?", type=parse_send_id,
                      help="the send to list recipients of")
    logs.add_argument("--status", choices=tuple(DeliveryStatus), help="only recipients with this status")
    logs.add_argument("--search", metavar="TEXT", help="only recipients whose address, error or id contains TEXT")
    add_format(logs, "table", "json", "csv")
    logs.set_defaults(run=run_logs_command)


def run_send_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import send
    from pipeline.store import Store

    if args.now or args.test:
        if not args.draft:
            raise SendError("DRAFT is required with --now and --test")
        return _send_draft(args, settings)
    if args.resend_uncertain and args.resume is None:
        raise SendError("--resend-uncertain goes with --resume SEND_ID")
    store = Store.from_settings(settings)
    if args.pause is not None:
        send.pause_send(store, args.pause)
        print(f"send {args.pause} will stop after the batch in flight; resume with --resume {args.pause}")
        return 0
    if args.cancel is not None:
        send.cancel_send(store, args.cancel)
        print(f"send {args.cancel} cancelled: nothing more will be sent")
        return _print_summary(send.summary(store, args.cancel))
    target = args.resume if args.resume is not None else args.retry_failed
    if args.retry_failed is not None:
        print(f"{send.retry_failed(store, target)} transient failure(s) queued again")
    if args.resend_uncertain:
        print(f"{send.resend_uncertain(store, target)} uncertain row(s) queued again")
    return _run(store, settings, target, progress=not args.no_progress)


def checked_build(draft: str, args: argparse.Namespace,
                  settings: Settings) -> tuple[Build, Report, Override | None]:
    """Build the draft once and pass it through the check gate (``--offline``, ``--force --reason``);
    return the build, its report and the override, if any, to record with the send."""
    import asyncio

    from pipeline.checks import require_passing
    from pipeline.prepare import checked

    build, report = asyncio.run(checked(draft_folder(draft, settings), settings, offline=args.offline))
    return build, report, require_passing(report, force=args.force, reason=args.reason)


def _send_draft(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from pipeline import send
    from pipeline.store import Store
    from pipeline.store.parts import WORKERS
    from pipeline.worker import uses_workers

    build, report, override = checked_build(args.draft, args, settings)
    edition = build.edition
    if args.test:
        addresses = [address.strip() for address in args.test.split(",") if address.strip()]
        outcomes = asyncio.run(send.send_test(settings, edition_name=edition.name, subject=edition.subject,
                                              html=edition.email_html, text=edition.email_txt, addresses=addresses))
        for address, outcome in zip(addresses, outcomes, strict=False):
            print(f"  {address}: {outcome.status}{' (' + outcome.error_text + ')' if outcome.error_text else ''}")
        return 0 if all(outcome.status == "sent" for outcome in outcomes) else 1
    store = Store.from_settings(settings)
    to_workers = uses_workers(store, settings)
    owner = WORKERS if to_workers else send.sender_id()
    send_id = send.create_send(store, settings, edition, built_path=str(build.folder),
                               override_reason=override.reason if override else None, owner=owner, report=report)
    lease = send.Lease(store, send_id, seconds=settings.send.lease_seconds, owner=owner)
    print(f"send {send_id}: {edition.name} to {send.queued_count(store, send_id)} recipient(s)"
          + (f" (checks overridden: {override.reason})" if override else ""))
    return _run(store, settings, send_id, progress=not args.no_progress, lease=None if to_workers else lease)


def _run(store: Store, settings: Settings, send_id: int, *, progress: bool, lease: Lease | None = None) -> int:
    """Send it here, or, on PostgreSQL, hand it to the workers and follow it until it is over."""
    import asyncio

    from tqdm import tqdm

    from pipeline import send, worker

    to_workers = worker.uses_workers(store, settings)
    total = send.queued_count(store, send_id)  # before the workers start on it: the bar misses none of its rows
    if to_workers:
        worker.hand_over(store, settings, send_id)
    with tqdm(total=total, unit="msg", file=sys.stderr, disable=not progress or None,
              desc=f"send {send_id}", dynamic_ncols=True) as bar:
        if to_workers:
            summary = worker.follow(store, settings, send_id, on_progress=lambda count: bar.update(count),
                                    unsettled=total)
        else:
            summary = asyncio.run(send.run_send(store, settings, send_id,
                                                on_progress=lambda count: bar.update(count), lease=lease))
    return _print_summary(summary, settings)


def _print_summary(summary: SendSummary, settings: Settings | None = None) -> int:
    from pipeline.logs import format_counts

    print(f"send {summary.send_id}: {summary.status}: {format_counts(summary.counts)}")
    if summary.reason:
        print(f"  {summary.reason}")
    if summary.uncertain:
        print(f"  {len(summary.uncertain)} uncertain (in flight when a sender stopped; the provider may have "
              f"accepted them): decide with --resume {summary.send_id} --resend-uncertain")
        for email in summary.uncertain[:20]:
            print(f"    {email}")
    if settings is not None and settings.provider.name == "outbox":
        print(f"  messages: {Path(settings.paths.outbox) / str(summary.send_id)}")
    unsent = summary.counts.get(DeliveryStatus.FAILED, 0) + summary.counts.get(DeliveryStatus.UNCERTAIN, 0)
    settled = summary.status in (SendStatus.SENT, SendStatus.PAUSED, SendStatus.CANCELLED)
    return 0 if settled and not unsent else 1


def run_logs_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import logs
    from pipeline.store import Store

    store = Store.from_settings(settings)
    if args.send_id is None:
        logs.write_sends(logs.send_lines(store), args.format, sys.stdout)
        return 0
    lines = logs.delivery_lines(store, args.send_id, status=args.status, search=args.search)
    logs.write_deliveries(lines, args.format, sys.stdout)
    return 0
