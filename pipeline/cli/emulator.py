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
    hooks = emulator.add_argument_group(
        "webhooks", "post each accepted message's events back, signed as the real provider signs them")
    hooks.add_argument("--webhook-url", metavar="URL",
                       help="where newsletter serve takes webhooks, e.g. http://127.0.0.1:8025/webhooks "
                            "(events go to URL/postmark, URL/sendgrid, URL/mailgun, URL/resend)")
    hooks.add_argument("--bounce-rate", type=_rate, default=0.02, help="share of messages hard-bounced (0.02)")
    hooks.add_argument("--soft-bounce-rate", type=_rate, default=0.0, help="share soft-bounced (0)")
    hooks.add_argument("--complaint-rate", type=_rate, default=0.005, help="share marked as spam (0.005)")
    hooks.add_argument("--webhook-seed", type=int, help="make the outcomes reproducible (default: --seed)")
    emulator.set_defaults(run=run_emulator_command, settings_optional=True)


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return rate


def _key(text: str) -> tuple[str, str]:
    provider, equals, value = text.partition("=")
    if not equals or provider not in PROVIDER_NAMES or not value:
        raise argparse.ArgumentTypeError(f"expected PROVIDER=VALUE with PROVIDER one of {', '.join(PROVIDER_NAMES)}")
    return provider, value


def run_emulator_command(args: argparse.Namespace, settings: Any) -> int:
    from pipeline.emulator.server import serve
    from pipeline.errors import NewsletterError

    keys = dict(args.key)
    provider = getattr(getattr(settings, "provider", None), "name", None)
    poster = None
    if args.webhook_url:
        from pipeline.emulator.webhooks import WebhookPlan, WebhookPoster, environment_lines

        try:
            plan = WebhookPlan(url=args.webhook_url, bounce_rate=args.bounce_rate,
                               soft_bounce_rate=args.soft_bounce_rate, complaint_rate=args.complaint_rate,
                               seed=args.webhook_seed if args.webhook_seed is not None else args.seed)
        except ValueError as exc:
            raise NewsletterError(str(exc)) from None
        poster = WebhookPoster(plan)

    def announce(url: str) -> None:
        print(instructions(url, keys, provider), flush=True)
        if poster is not None:
            print(f"\nwebhooks: posting events to {poster.plan.url}/<provider>; outcomes: {url}/_emulator/webhooks"
                  "\nnewsletter serve checks them with these keys (made for this run):", flush=True)
            print("\n".join(f"  {line}" for line in environment_lines(poster.keys)), flush=True)

    try:
        serve(args.host, args.port, keys=keys, seed=args.seed, webhooks=poster, on_ready=announce)
    except KeyboardInterrupt:
        print("newsletter emulator: stopped")
    except OSError as exc:
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
