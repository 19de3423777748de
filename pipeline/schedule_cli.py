"""The ``schedule`` and ``run`` commands: thin wrappers over schedule.py."""

from __future__ import annotations

import argparse
import logging

from pipeline.config import Settings
from pipeline.errors import ScheduleError
from pipeline.store import Store

ACTIONS = ("list", "cancel", "move")


def add_schedule_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    schedule = commands.add_parser(
        "schedule", help="schedule a draft, or list, cancel or move scheduled sends",
        description="newsletter schedule DRAFT --at '2026-12-01 09:00' [--tz ZONE]: check the draft and schedule "
                    "it (it is rebuilt and re-checked when it fires). newsletter schedule list | cancel ID | "
                    "move ID --at TIME.")
    schedule.add_argument("target", metavar="DRAFT|list|cancel|move", help="a draft to schedule, or an action")
    schedule.add_argument("send_id", metavar="ID", nargs="?", type=int, help="the send, for cancel and move")
    schedule.add_argument("--at", metavar="TIME", help="when: 'YYYY-MM-DD HH:MM' in --tz, or with an offset")
    schedule.add_argument("--tz", metavar="ZONE", help="time zone of --at (default: the publication's timezone)")
    schedule.add_argument("--fold", type=int, choices=(0, 1),
                          help="for a time that happens twice (clocks falling back): 0 the first, 1 the second")
    schedule.add_argument("--offline", action="store_true", help="check gate without requesting links")
    schedule.add_argument("--force", action="store_true", help="schedule although the checks found errors")
    schedule.add_argument("--reason", help="why the checks are overridden (recorded with the send)")
    schedule.set_defaults(run=run_schedule_command)

    run = commands.add_parser(
        "run", help="the scheduler: fire scheduled sends on time, pick up dropped drafts, resume sends",
        description="Run the scheduler until SIGTERM or Ctrl+C: it fires due sends (rebuilt and re-checked), "
                    "schedules drafts dropped with send_at, marks sends later than max_lateness as missed, "
                    "resumes sends a stopped runner left, and mails staff notices.")
    run.add_argument("--until-idle", action="store_true",
                     help="exit once nothing is scheduled or being sent (for scripts and the demo)")
    run.set_defaults(run=run_scheduler_command)


def _when(args: argparse.Namespace, settings: Settings):  # type: ignore[no-untyped-def]
    from pipeline.when import parse_when, zone

    if not args.at:
        raise ScheduleError("--at TIME is required")
    tz = zone(args.tz or settings.publication.timezone)
    return parse_when(args.at, tz, fold=args.fold), tz


def run_schedule_command(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline import schedule
    from pipeline.when import describe

    store = Store.from_settings(settings)
    if args.target == "list":
        return _print_calendar(schedule.calendar(store, settings))
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
        print(f"send {args.send_id} moved to {describe(at, tz)}")
        return 0
    return _schedule_draft(args, settings, store, at, tz)


def _schedule_draft(args: argparse.Namespace, settings: Settings, store: Store, at, tz) -> int:  # type: ignore[no-untyped-def]
    from pipeline import schedule
    from pipeline.sending_cli import checked_build
    from pipeline.when import describe

    schedule.require_future(at, tz)  # before the build: a mistyped time fails fast
    build, override = checked_build(args.target, args, settings)
    send_id = schedule.schedule_build(store, settings, build, at, timezone=tz.key,
                                      override_reason=override.reason if override else None)
    print(f"send {send_id}: {build.edition.name} scheduled for {describe(at, tz)}")
    print("it is rebuilt and checked again when it fires; 'newsletter run' must be running then")
    return 0


def _print_calendar(lines) -> int:  # type: ignore[no-untyped-def]
    from pipeline.when import describe, zone

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
    from pipeline.schedule import run_forever

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_forever(Store.from_settings(settings), settings, until_idle=args.until_idle)
