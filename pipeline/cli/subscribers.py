"""The ``subscribers`` commands: import, list, export and unsubscribe, over subscribers.py."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.common import opened_store
from pipeline.errors import SubscriberError
from pipeline.store.states import SUPPRESSION_REASONS, SubscriberStatus

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.store import Store
    from pipeline.subscribers import ImportReport, Subscriber


def import_file(name: str, settings: Settings) -> Path:
    """A file given as a path, or by its name in the subscribers folder."""
    path = Path(name)
    if not path.exists() and not path.is_absolute() and (settings.paths.subscribers / path).exists():
        return settings.paths.subscribers / path
    return path


def format_import(report: ImportReport, path: Path) -> str:
    counts = (f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
              f"{report.kept_unsubscribed} kept unsubscribed, {len(report.rejected)} rejected "
              f"({report.total_lines} line(s))")
    lines = [f"{'dry run, nothing written: ' if report.dry_run else ''}{path}: {counts}"]
    if report.kept_unsubscribed:
        lines.append(f"{report.kept_unsubscribed} address(es) listed as active stayed unsubscribed; "
                     "--resubscribe makes them active again (only with their consent)")
    return "\n".join(lines)


def import_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.subscribers import import_subscribers

    path = import_file(args.file, settings)
    with opened_store(settings) as store:
        report = import_subscribers(store, path, dry_run=args.dry_run, resubscribe=args.resubscribe)
    for rejection in report.rejected:
        print(f"{path}:{rejection.line}: {rejection.reason}", file=sys.stderr)
    print(format_import(report, path))
    return 0 if report.ok else 1


def _print_table(listing: Iterator[Subscriber]) -> None:
    count = 0
    print(f"{'EMAIL':<40}  {'STATUS':<24}  {'TAGS':<24}  NAME")
    for subscriber in listing:
        tags = ",".join(subscriber.tags) or "-"
        status = subscriber.status + (f" ({subscriber.unsubscribe_channel})" if subscriber.unsubscribe_channel else "")
        print(f"{subscriber.email:<40}  {status:<24}  {tags:<24}  {subscriber.name}")
        count += 1
    print(f"{count} subscriber(s)")


def _print_json(listing: Iterator[Subscriber]) -> None:
    print("[", end="")
    for index, subscriber in enumerate(listing):
        print(("," if index else "") + "\n  " + json.dumps(subscriber.to_dict(), ensure_ascii=False), end="")
    print("\n]")


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.subscribers import export_subscribers, list_subscribers

    with opened_store(settings) as store:
        if args.format == "csv":
            export_subscribers(store, sys.stdout, tag=args.tag, status=args.status)
        else:
            listing = list_subscribers(store, tag=args.tag, status=args.status)
            (_print_json if args.format == "json" else _print_table)(listing)
    return 0


def _export_to_file(store: Store, out: Path, *, tag: str | None, status: str | None) -> int:
    """Export into ``out`` through a temporary file, so that a failed export leaves no half file."""
    from pipeline.subscribers import export_subscribers

    partial = out.with_name(out.name + ".part")
    try:
        with partial.open("w", encoding="utf-8", newline="") as file:
            count = export_subscribers(store, file, tag=tag, status=status)
        os.replace(partial, out)
    except OSError as exc:
        raise SubscriberError(f"cannot write: {exc.strerror}", path=out) from None
    finally:
        partial.unlink(missing_ok=True)
    return count


def export_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.subscribers import export_subscribers

    with opened_store(settings) as store:
        if args.out is None:
            count = export_subscribers(store, sys.stdout, tag=args.tag, status=args.status)
            print(f"exported {count} subscriber(s)", file=sys.stderr)  # stdout holds the CSV
        else:
            count = _export_to_file(store, args.out, tag=args.tag, status=args.status)
            print(f"exported {count} subscriber(s) to {args.out}")
    return 0


def unsubscribe_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.subscribers import unsubscribe

    with opened_store(settings) as store:
        known = unsubscribe(store, args.email, reason=args.reason, source="command line")
    if known:
        print(f"unsubscribed {args.email} ({args.reason})")
    else:
        print(f"{args.email} is not a subscriber; suppressed it, so that no import can add it")
    return 0


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", metavar="TAG", help="only subscribers with this tag")
    parser.add_argument("--status", choices=tuple(SubscriberStatus), help="only subscribers with this status")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``newsletter subscribers import|list|export|unsubscribe`` on the command's subparsers."""
    group = commands.add_parser("subscribers", help="import, list, export and unsubscribe subscribers",
                                description="Import, list, export and unsubscribe subscribers.")
    actions = group.add_subparsers(dest="subscribers_command", metavar="SUBCOMMAND", required=True)

    load = actions.add_parser(
        "import", help="add and update subscribers from a CSV file",
        description="Add and update subscribers from a CSV file with the header email,name,tags,status "
                    "(only email is required; other columns become attributes templates can use). Nobody who "
                    "unsubscribed, bounced or complained is made active again without --resubscribe. Exit 0: "
                    "every line imported; 1: some lines rejected, the rest imported; 2: the file cannot be read.")
    load.add_argument("file", metavar="FILE", help="CSV file, or its name in the subscribers folder")
    load.add_argument("--dry-run", action="store_true", help="check and count, but write nothing")
    load.add_argument("--resubscribe", action="store_true",
                      help="make people the file lists as active active again, even if they unsubscribed, "
                           "bounced or complained (only with their consent)")
    load.set_defaults(run=import_command)

    show = actions.add_parser("list", help="list subscribers", description="List subscribers by address.")
    _filters(show)
    show.add_argument("--format", choices=("table", "csv", "json"), default="table",
                      help="output format (default: table)")
    show.set_defaults(run=list_command)

    export = actions.add_parser("export", help="write subscribers as CSV that import reads back",
                                description="Write subscribers as CSV (email,name,tags,status and one column "
                                            "per attribute) that 'subscribers import' reads back unchanged.")
    _filters(export)
    export.add_argument("--out", metavar="FILE", type=Path, help="file to write (default: standard output)")
    export.set_defaults(run=export_command)

    leave = actions.add_parser("unsubscribe", help="unsubscribe an address and suppress it",
                               description="Unsubscribe an address and add it to the suppressions, so that no "
                                           "import or send reaches it again. An unknown address is suppressed too.")
    leave.add_argument("email", metavar="EMAIL", help="the address to unsubscribe")
    leave.add_argument("--reason", choices=SUPPRESSION_REASONS, default="unsubscribed",
                       help="why (default: unsubscribed); bounced and complained become the status")
    leave.set_defaults(run=unsubscribe_command)
