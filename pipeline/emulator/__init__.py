"""A local stand-in for the Postmark, SendGrid, Mailgun and Resend send APIs.

One HTTP server (uvicorn + Starlette) serves the four providers at their real paths, with
their real authentication, limits, validation (against the providers' own published
schemas, shipped in ``specs/``) and answers, and records every accepted message, one
record per recipient, instead of sending it:

    POST /email/batch           Postmark   X-Postmark-Server-Token             postmark.py
    POST /v3/mail/send          SendGrid   Authorization: Bearer KEY           sendgrid.py
    POST /v3/{domain}/messages  Mailgun    Basic api:KEY (US and EU hosts)     mailgun.py
    POST /emails/batch          Resend     Authorization: Bearer KEY           resend.py

Every provider accepts the key ``emulator-key`` unless given another. The control API:

    GET  /_emulator/messages?provider=&to=&batch=&limit=&offset=   recorded messages
    GET  /_emulator/stats                                          counts; when the first send request
                                                                   came and the last answer left; a digest
                                                                   of the bodies (``digest.py``)
    POST /_emulator/reset                                          forget everything
    GET  /_emulator/faults, POST /_emulator/faults                 the fault plan

A fault plan (all keys optional; rates are per request and add up to at most 1)::

    {"seed": 42, "error_rates": {"500": 0.1, "503": 0.02}, "rate_limit": {"rate": 0.05, "retry_after": 1},
     "latency_ms": 0, "late": {"rate": 0.02, "delay_s": 3}, "drop_rate": 0.0, "inactive": ["a@example.net"]}

In tests and benchmarks::

    with run_emulator_in_thread() as emulator:
        provider = PostmarkProvider(..., base_url=emulator.url)
        ...
        emulator.messages(provider="postmark")

The modules: ``state`` (records, faults, idempotency keys), ``common`` (schemas, bodies,
addresses, keys), one module per provider, ``app`` (routes and fault injection),
``server`` (threads and the foreground server). The command is ``pipeline/cli/emulator.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.emulator.app import create_app
    from pipeline.emulator.server import EmulatorHandle, run_emulator_in_thread
    from pipeline.emulator.state import DEFAULT_KEY, PROVIDERS, Emulator

__all__ = ["DEFAULT_KEY", "PROVIDERS", "Emulator", "EmulatorHandle", "create_app",
           "run_emulator_in_thread"]

_LAZY = {"create_app": "app", "EmulatorHandle": "server", "run_emulator_in_thread": "server",
         "DEFAULT_KEY": "state", "PROVIDERS": "state", "Emulator": "state"}


def __getattr__(name: str) -> Any:
    # The server and its dependencies load only when used, so that the CLI starts fast.
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"pipeline.emulator.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'pipeline.emulator' has no attribute {name!r}")
