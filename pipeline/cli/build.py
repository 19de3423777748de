"""The ``build``, ``preview``, ``check`` and ``config`` commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli.common import add_draft, add_format, draft_folder

if TYPE_CHECKING:
    from pipeline.build import Build
    from pipeline.checks import Report
    from pipeline.config import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser("build", help="render a draft into email.html, email.txt, web.html and manifest.json",
                                description="Render a draft into email.html, email.txt, web.html and manifest.json.")
    add_draft(build)
    build.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: build/<draft-name>)")
    build.set_defaults(run=_build)

    preview = commands.add_parser("preview", help="build a draft and take desktop and mobile screenshots of the email",
                                  description="Build a draft, then write desktop.png (640 px) and mobile.png (375 px) "
                                              "full-page screenshots of email.html taken in headless Chromium.")
    add_draft(preview)
    preview.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: build/<draft-name>)")
    preview.set_defaults(run=_preview)

    check = commands.add_parser(
        "check", help="pre-flight checks: links, disclaimers, content, images, size, client support",
        description="Build the draft and check email.html, email.txt and web.html. Exit 0: no errors (warnings "
                    "allowed); 1: at least one error; 2: the draft could not be built.")
    add_draft(check)
    check.add_argument("--offline", action="store_true", help="skip requesting links (syntax is still checked)")
    add_format(check, "text", "json")
    check.set_defaults(run=_check)

    config = commands.add_parser("config", help="inspect the settings", description="Inspect the settings.")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_commands.add_parser("show", help="print the effective settings, secrets masked",
                                      description="Print the effective settings as TOML, secrets masked.")
    show.set_defaults(run=_config_show)


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.prepare import prepare_and_write

    build = prepare_and_write(draft_folder(args.draft, settings), settings, args.out)
    report_build(build, settings)
    return 0


def report_build(build: Build, settings: Settings) -> None:
    from pipeline.config import GMAIL_CLIP_BYTES

    limit = settings.checks.max_html_bytes
    size = build.email_bytes
    print(f"built {build.edition.name} into {build.folder}")
    for name in ("email.html", "email.txt", "web.html", "manifest.json"):
        print(f"  {build.folder / name}")
    print(f"email.html: {size:,} bytes ({size / limit:.0%} of the {limit:,}-byte limit"
          f"{'; Gmail clips above ' + format(GMAIL_CLIP_BYTES, ',') if limit == GMAIL_CLIP_BYTES else ''})")
    if size > limit:
        print(f"warning: email.html is over max_html_bytes ({limit:,}): Gmail will clip it", file=sys.stderr)


def _preview(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.prepare import prepare_and_write
    from pipeline.preview import screenshot_email

    build = prepare_and_write(draft_folder(args.draft, settings), settings, args.out)
    report_build(build, settings)
    for shot in screenshot_email(build.folder / "email.html", build.folder):
        overflow = "" if shot.scroll_width <= shot.width else f" (overflows: {shot.scroll_width} px wide)"
        print(f"  {shot.path}  {shot.width} px wide, {shot.height} px tall{overflow}")
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import json

    from pipeline.checks import check_edition
    from pipeline.prepare import prepare

    edition = prepare(draft_folder(args.draft, settings), settings)
    report = asyncio.run(check_edition(edition, settings, offline=args.offline))
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def format_report(report: Report) -> str:
    """Problems grouped by severity, errors first, each with its place; a summary line last."""
    lines = []
    for title, group in (("errors", report.errors), ("warnings", report.warnings)):
        if group:
            lines.append(f"{title} ({len(group)}):")
            width = max(len(problem.location) for problem in group)
            lines += [f"  {problem.location:<{width}}  [{problem.check}] {problem.message}" for problem in group]
    counts: dict[str, int] = {}
    for link in report.links:
        counts[link.result] = counts.get(link.result, 0) + 1
    tally = ", ".join(f"{count} {result}" for result, count in sorted(counts.items()))
    verdict = "ok" if report.ok else "FAILED"
    lines.append(f"{report.edition}: {verdict}: {len(report.errors)} error(s), {len(report.warnings)} warning(s); "
                 f"{len(report.links)} link(s): {tally or 'none'}")
    return "\n".join(lines)


def _config_show(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.config import describe_settings

    print(describe_settings(settings), end="")
    return 0
