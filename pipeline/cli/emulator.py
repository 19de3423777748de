"""The ``emulator`` command: serve the local provider emulator in the foreground.

Kept free of the server's imports so that registering the command costs the CLI nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

PROVIDER_NAMES = ("postmark", "sendgrid", "mailgun", "resend")
KEY_VARIABLES = {"postmark": "POSTMARK_SERVER_TOKEN", "sendgrid": "SENDGRID_API_KEY", "mailgun": "MAILGUN_API_KEY",
                 "resend": "RESEND_API_KEY"}
DEFAULT_PORT = 8750


def add_commands(commands: argparse._SubParsersAction) -> None:
    emulator = commands.add_parser(
        "emulator", help="run a local stand-in for the Postmark, SendGrid, Mailgun and Resend APIs",
        description="Serve the four providers' send APIs at their real paths, with their real authentication, "
                    "validation and answers, recording every accepted message instead of sending it, so a send "
                    "can be rehearsed. Faults (errors, rate limits, late answers, dropped connections) can be "
                    "injected through POST /_emulator/faults.")
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    emulator.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT}; 0: any)")
    emulator.add_argument("--seed", type=int, help="make fault draws and message ids reproducible")
    emulator.add_argument("--key", metavar="PROVIDER=VALUE", action="append", default=[], type=_key,
                          help="the key a provider accepts (repeatable; default for every provider: emulator-key)")
    emulator.set_defaults(run=run_emulator_command, settings_optional=True)


def _key(text: str) -> tuple[str, str]:
    provider, equals, value = text.partition("=")
    if not equals or provider not in PROVIDER_NAMES or not value:
        raise argparse.ArgumentTypeError(f"expected PROVIDER=VALUE with PROVIDER one of {', '.join(PROVIDER_NAMES)}")
    return provider, value


def run_emulator_command(args: argparse.Namespace, settings: Any) -> int:
    from pipeline.emulator.server import serve

    keys = dict(args.key)
    provider = getattr(getattr(settings, "provider", None), "name", None)

    def announce(url: str) -> None:
        print(instructions(url, keys, provider), flush=True)

    try:
        serve(args.host, args.port, keys=keys, seed=args.seed, on_ready=announce)
    except KeyboardInterrupt:
        print("newsletter emulator: stopped")
    except OSError as exc:
        from pipeline.errors import NewsletterError

        raise NewsletterError(f"the emulator cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    return 0


def instructions(url: str, keys: dict[str, str], provider: str | None) -> str:
    """What to tell the person who started the emulator: where it is and how to point the pipeline at it."""
    chosen = provider if provider in PROVIDER_NAMES else "postmark"
    variable = KEY_VARIABLES[chosen]
    key = "the key you gave with --key" if chosen in keys else "emulator-key"
    lines = [f"newsletter emulator: listening on {url}  (Ctrl+C to stop)",
             "  POST /email/batch (Postmark), /v3/mail/send (SendGrid), /v3/{domain}/messages (Mailgun, US and EU), "
             "/emails/batch (Resend)",
             f"  recorded messages: {url}/_emulator/messages   stats: {url}/_emulator/stats   "
             f"faults: {url}/_emulator/faults",
             "keys: " + ", ".join(f"{name}={'(from --key)' if name in keys else 'emulator-key'}"
                                  for name in PROVIDER_NAMES),
             "",
             "To rehearse a send, set in newsletter.toml:",
             "  [provider]",
             f'  name = "{chosen}"',
             f'  base_url = "{url}"',
             f'  api_key_env = "{variable}"']
    if chosen == "mailgun":
        lines.append('  domain = "mg.example.org"   # any domain is accepted')
    lines.append(f"and export {variable} as {key}.")
    return "\n".join(lines)
