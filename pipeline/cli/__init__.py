"""The ``newsletter`` command: thin commands over the pipeline's stages, one module per group.

    build.py        build, preview, check, config show
    send.py         send, logs
    schedule.py     schedule, run
    subscribers.py  subscribers import|list|export|unsubscribe
    emulator.py     emulator
    web.py          serve
    users.py        users add|list|passwd|token|remove

Every command parses its arguments, calls the library and prints the result. Registering the commands
imports nothing heavy: each command imports the stages it runs (and the settings are loaded) only once
the arguments are parsed, so ``--help`` and a usage error start at once; tests/test_startup.py holds
that line.
``asyncio.run`` is called here, at the edge (and in the scheduler's threads), nowhere else. A
``NewsletterError`` becomes one line on stderr and its exit code (2; 1 for
failed checks).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipeline import __version__
from pipeline.cli import build, emulator, schedule, send, subscribers, users, web
from pipeline.errors import NewsletterError

if TYPE_CHECKING:
    from pipeline.config import Settings

GROUPS = (build, send, subscribers, schedule, web, users, emulator)


def parser() -> argparse.ArgumentParser:
    """The whole command line: each group registers its commands."""
    top = argparse.ArgumentParser(
        prog="newsletter",
        description="Turn an editor's draft directory into a checked, scheduled, logged email edition.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top.add_argument("--config", metavar="PATH",
                     help="settings file (default: $NEWSLETTER_CONFIG or ./newsletter.toml)")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_commands(commands)
    return top


def _settings_if_any(path: str | None) -> Settings | None:
    from pipeline.config import load_settings

    try:
        return load_settings(path)
    except NewsletterError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 ok, 1 failed checks, 2 bad input or usage)."""
    args = parser().parse_args(argv)
    try:
        from pipeline.config import load_settings

        # The emulator needs no publication; it reads the settings only to print hints when it can.
        optional = getattr(args, "settings_optional", False)
        settings = _settings_if_any(args.config) if optional else load_settings(args.config)
        code: int = args.run(args, settings)
        return code
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
