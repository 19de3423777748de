"""The ``serve`` command: the publication's web side (unsubscribe, signup, preferences, archive, webhooks)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.errors import NewsletterError

if TYPE_CHECKING:
    from pipeline.config import Settings


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="serve unsubscribe links, signups, preferences, the archive and provider webhooks",
        description="Serve the publication's web side on uvicorn: one-click unsubscribe (RFC 8058), signup with "
                    "double opt-in, readers' preferences and data, the archive with its Atom feed, and the mail "
                    "provider's webhooks. Put it behind a TLS proxy at [publication] base_url.")
    serve.add_argument("--host", help="address to listen on (default: [web] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: [web] port, 8025; 0: any free port)")
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    import uvicorn

    from pipeline.web.app import create_app

    host = args.host or settings.web.host
    port = settings.web.port if args.port is None else args.port
    app = create_app(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning",
                            proxy_headers=True, forwarded_allow_ips=settings.web.forwarded_allow_ips,
                            server_header=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    print(f"newsletter serve: {settings.publication.name} on http://{host}:{port}/ "
          f"(public address {settings.publication.base_url}/); Ctrl-C stops", flush=True)
    try:
        server.run()
    except OSError as exc:
        raise NewsletterError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if not server.started:
        raise NewsletterError(f"cannot listen on {host}:{port}")
    print("newsletter serve: stopped", flush=True)
    return 0
