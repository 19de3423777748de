"""The ``newsletter`` command: thin commands over the pipeline's stages.

Every command parses its arguments, calls one library function and prints the
result. A ``NewsletterError`` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import __version__
from pipeline.build import build_edition
from pipeline.config import GMAIL_CLIP_BYTES, Settings, describe_settings, load_settings
from pipeline.emulator import add_emulator_command
from pipeline.errors import NewsletterError
from pipeline.schedule_cli import add_schedule_commands
from pipeline.sending_cli import add_sending_commands
from pipeline.subscribers_cli import add_subscriber_commands

Command = Callable[[argparse.Namespace, Settings], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newsletter",
        description="Turn an editor's draft directory into a checked, scheduled, logged email edition.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="settings file (default: $NEWSLETTER_CONFIG or ./newsletter.toml)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = commands.add_parser("build", help="render a draft into email.html, email.txt, web.html and manifest.json",
                                description="Render a draft into email.html, email.txt, web.html and manifest.json.")
    build.add_argument("draft", metavar="DRAFT", help="draft folder, or its name under the drafts folder")
    build.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: build/<draft-name>)")
    build.set_defaults(run=_build)

    preview = commands.add_parser("preview", help="build a draft and take desktop and mobile screenshots of the email",
                                  description="Build a draft, then write desktop.png (640 px) and mobile.png (375 px) "
                                              "full-page screenshots of email.html taken in headless Chromium.")
    preview.add_argument("draft", metavar="DRAFT", help="draft folder, or its name under the drafts folder")
    preview.add_argument("--out", metavar="DIR", type=Path, help="output folder (default: build/<draft-name>)")
    preview.set_defaults(run=_preview)

    check = commands.add_parser(
        "check", help="pre-flight checks: links, disclaimers, content, images, size, client support",
        description="Build the draft and check email.html, email.txt and web.html. Exit 0: no errors (warnings "
                    "allowed); 1: at least one error; 2: the draft could not be built.")
    check.add_argument("draft", metavar="DRAFT", help="draft folder, or its name under the drafts folder")
    check.add_argument("--offline", action="store_true", help="skip requesting links (syntax is still checked)")
    check.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    check.set_defaults(run=_check)

    add_sending_commands(commands)
    add_subscriber_commands(commands)
    add_schedule_commands(commands)
    add_emulator_command(commands)

    config = commands.add_parser("config", help="inspect the settings", description="Inspect the settings.")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_commands.add_parser("show", help="print the effective settings, secrets masked",
                                      description="Print the effective settings as TOML, secrets masked.")
    show.set_defaults(run=_config_show)
    return parser


def draft_folder(name: str, settings: Settings) -> Path:
    """A draft given as a path, or as a folder name under the drafts folder."""
    path = Path(name)
    if path.is_dir() or path.is_absolute() or len(path.parts) > 1:
        return path
    return settings.paths.drafts / name


def _build(args: argparse.Namespace, settings: Settings) -> int:
    build = build_edition(draft_folder(args.draft, settings), settings, args.out)
    _report_build(build, settings)
    return 0


def _report_build(build, settings: Settings) -> None:  # type: ignore[no-untyped-def]
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
    from pipeline.preview import screenshot_email

    build = build_edition(draft_folder(args.draft, settings), settings, args.out)
    _report_build(build, settings)
    for shot in screenshot_email(build.folder / "email.html", build.folder):
        overflow = "" if shot.scroll_width <= shot.width else f" (overflows: {shot.scroll_width} px wide)"
        print(f"  {shot.path}  {shot.width} px wide, {shot.height} px tall{overflow}")
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.checks import check_edition
    from pipeline.draft import read_draft
    from pipeline.render import render_edition

    edition = render_edition(read_draft(draft_folder(args.draft, settings)), settings)
    report = check_edition(edition, settings, offline=args.offline)
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def format_report(report) -> str:  # type: ignore[no-untyped-def]
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
    print(describe_settings(settings), end="")
    return 0


def _settings_if_any(path: str | None) -> Settings | None:
    try:
        return load_settings(path)
    except NewsletterError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 failed checks, 2 bad input or usage)."""
    args = _parser().parse_args(argv)
    try:
        # The emulator needs no publication; it reads the settings only to print hints when it can.
        optional = getattr(args, "settings_optional", False)
        settings = _settings_if_any(args.config) if optional else load_settings(args.config)
        return args.run(args, settings)
    except NewsletterError as exc:
        print(f"newsletter: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("newsletter: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): not an error worth a traceback
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())
