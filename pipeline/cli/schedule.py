"""The ``schedule`` and ``run`` commands: thin wrappers over ``schedule``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from pipeline.cli.common import add_format, add_gate, parse_send_id
from pipeline.errors import ScheduleError

if TYPE_CHECKING:
    import datetime as dt
    from zoneinfo import ZoneInfo

    from pipeline.config import Settings
    from pipeline.schedule import ScheduledLine
    from pipeline.store import Store

ACTIONS = ("list", "cancel", "move")


def add_commands(commands: argparse._SubParsersAction) -> None:
    schedule = commands.add_parser(
        "schedule", help="schedule a draft, or list, cancel or move scheduled sends",
        description="newsletter schedule DRAFT --at '2026-12-01 09:00' [--tz ZONE]: check the draft and schedule "
                    "it (it is rebuilt and re-checked when it fires). newsletter schedule list | cancel ID | "
                    "move ID --at TIME (a held or missed send too: it is scheduled again).")
    schedule.add_argument("target", metavar="DRAFT|list|cancel|move", help="a draft to schedule, or an action")
    schedule.add_argument("send_id", metavar="ID", nargs="?", type=parse_send_id,
                          help="the send, for cancel and move")
    schedule.add_argument("--at", metavar="TIME", help="when: 'YYYY-MM-DD HH:MM' in --tz, or with an offset")
    schedule.add_argument("--tz", metavar="ZONE", help="time zone of --at (default: the publication's timezone)")
    schedule.add_argument("--fold", type=int, choices=(0, 1),
                          help="for a time that happens twice (clocks falling back): 0 the first, 1 the second")
    add_gate(schedule, "schedule")
    add_format(schedule, "table", "json", "csv")
    schedule.set_defaults(run=run_schedule_command)

    run = commands.add_parser(
        "run", help="the scheduler: fire scheduled sends on time, pick up dropped drafts, resume sends",
        description="Run the scheduler until SIGTERM or Ctrl+C: it fires due sends (rebuilt and re-checked), "
                    "schedules drafts dropped with send_at, marks sends later than max_lateness as missed, "
                    "resumes sends whose sender stopped, and mails staff notices.")
    run.add_argument("--until-idle", action="store_true",
                     help="exit once nothing is scheduled or being sent (for scripts and the demo)")
    run.set_defaults(run=run_scheduler_command)


def _when(args: argparse.Namespace, settings: Settings) -> tuple[dt.datetime, ZoneInfo]:
    from pipeline.when import parse_when, zone

    if not args.at:
        raise ScheduleError("--at TIME is required")
    tz = zone(args.tz or settings.publication.timezone)
    return parse_when(args.at, tz, fold=args.fold), tz


def run_schedule_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import schedule
    from pipeline.store import Store
    from pipeline.when import describe

    store = Store.from_settings(settings)
    if args.target == "list":
        return _print_calendar(schedule.calendar(store, settings), args.format)
    if args.target in ("cancel", "move") and args.send_id is None:
        raise ScheduleError(f"schedule {args.target} needs the send's ID (see 'newsletter schedule list')")
    if args.target == "cancel":
        from pipeline.send import cancel_send

        cancel_send(store, args.send_id)
        print(f"send {args.send_id} cancelled")
        return 0
    at, tz = _when(args, settings)
    if args.target == "move":
        schedule.move(store, args.send_id, at)
        print(f"send {args.send_id} scheduled for {describe(at, tz)}")
        return 0
    return _schedule_draft(args, settings, store, at, tz)


def _schedule_draft(args: argparse.Namespace, settings: Settings, store: Store, at: dt.datetime,
                    tz: ZoneInfo) -> int:
    from pipeline import schedule
    from pipeline.cli.send import checked_build
    from pipeline.when import describe

    schedule.require_future(at, tz)  # before the build: a mistyped time fails fast
    build, report, override = checked_build(args.target, args, settings)
    send_id = schedule.schedule_build(store, settings, build, at, timezone=tz.key,
                                      override_reason=override.reason if override else None, report=report)
    print(f"send {send_id}: {build.edition.name} scheduled for {describe(at, tz)}")
    print("it is rebuilt and checked again when it fires; 'newsletter run' must be running then")
    return 0


def _print_calendar(lines: list[ScheduledLine], fmt: str) -> int:
    from pipeline.csvcells import DictWriter
    from pipeline.when import describe, zone

    if fmt != "table":
        rows = [{"id": line.id, "status": line.status, "at": line.at.isoformat() if line.at else None,
                 "timezone": line.timezone, "changed": line.changed, "edition": line.edition, "reason": line.reason}
                for line in lines]
        if fmt == "json":
            print(json.dumps(rows, ensure_ascii=False, indent=2))
        else:
            writer = DictWriter(sys.stdout, fieldnames=["id", "status", "at", "timezone", "changed", "edition",
                                                            "reason"])
            writer.writeheader()
            writer.writerows(rows)
        return 0
    if not lines:
        print("nothing scheduled")
        return 0
    print(f"{'send':>4}  {'status':<10} {'when':<58} {'changed':<8} edition")
    for line in lines:
        when = describe(line.at, zone(line.timezone)) if line.at else "-"
        print(f"{line.id:>4}  {line.status:<10} {when:<58} {line.changed:<8} {line.edition}")
        if line.reason:
            print(f"{'':>6}{line.reason}")
    return 0


def run_scheduler_command(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from pipeline.schedule import run_forever
    from pipeline.store import Store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_forever(Store.from_settings(settings), settings, until_idle=args.until_idle)
