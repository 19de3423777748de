"""Routes: ``POST /webhooks/postmark|sendgrid|mailgun|resend``, the mail providers' events.

Each request is authenticated the way its provider does it (``pipeline.webhooks.signatures``), parsed into
``ProviderEvent`` records (``pipeline.webhooks.events``) and recorded and applied in one transaction
(``pipeline.store.events``). The answers, always one plain line:

* 200: taken (a repeated event too: it changes nothing, and the provider stops retrying it);
* 400: the body is not that provider's JSON; 401: the credentials, signature or signed timestamp do not hold;
  413: a body over ``[web] max_body_bytes`` (the guard);
* 503: this provider's key variable is unset, or holds something that is not a key, or the database is busy.
  503 rather than 404 because every provider retries a 5xx for hours: events sent while an operator sets
  the variable are not lost. Nothing is changed either way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from standardwebhooks.webhooks import Webhook
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.config import Settings
from pipeline.errors import StoreError, WebhookError, WebhookMalformed
from pipeline.store.events import ingest
from pipeline.web.site import Site
from pipeline.webhooks import events, signatures
from pipeline.webhooks.events import ProviderEvent

log = logging.getLogger("newsletter.web")

PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend")


class WebhookUnavailable(WebhookError):
    status = 503


@dataclass(frozen=True, kw_only=True)
class Keys:
    """Each provider's key, ready to check with, or why there is none (a sentence naming the variable)."""

    tolerance: float
    postmark: tuple[str, str] | None = None
    sendgrid: ec.EllipticCurvePublicKey | None = None
    mailgun: str | None = None
    resend: Webhook | None = None
    missing: Mapping[str, str] | None = None
    mailgun_tokens: signatures.MailgunTokens | None = None

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        names, secrets = settings.webhooks, settings.webhook_secrets
        found: dict[str, Any] = {}
        missing: dict[str, str] = {}
        if secrets.postmark_user and secrets.postmark_password:
            found["postmark"] = (secrets.postmark_user.get_secret_value(),
                                 secrets.postmark_password.get_secret_value())
        else:
            missing["postmark"] = f"set {names.postmark_user_env} and {names.postmark_password_env}"
        readers: dict[str, tuple[Any, str, Callable[[str], Any]]] = {
            "sendgrid": (secrets.sendgrid_public_key, names.sendgrid_public_key_env, signatures.sendgrid_public_key),
            "mailgun": (secrets.mailgun_signing_key, names.mailgun_signing_key_env, str),
            "resend": (secrets.resend_secret, names.resend_secret_env, signatures.svix_webhook)}
        for name, (secret, variable, read) in readers.items():
            if secret is None:
                missing[name] = f"set {variable}"
                continue
            try:
                found[name] = read(secret.get_secret_value())
            except ValueError as exc:
                missing[name] = f"{exc} (in {variable})"
                log.warning("webhooks from %s are refused: %s", name, missing[name])
        tolerance = settings.webhooks.tolerance_seconds
        return cls(tolerance=tolerance, missing=missing, mailgun_tokens=signatures.MailgunTokens(tolerance), **found)

    def need(self, provider: str) -> Any:
        key = getattr(self, provider)
        if key is None:
            reason = (self.missing or {}).get(provider, "no key")
            raise WebhookUnavailable(f"webhooks from {provider} are not configured on this server: {reason}")
        return key


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WebhookMalformed("the body is not JSON") from None


# One reader per provider: authenticate, then parse (Mailgun signs inside its JSON, so it parses first).

def _postmark(keys: Keys, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
    user, password = keys.need("postmark")
    signatures.check_postmark(headers.get("authorization"), user=user, password=password)
    return events.postmark(_json(body))


def _sendgrid(keys: Keys, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
    signatures.check_sendgrid(body, headers, public_key=keys.need("sendgrid"), tolerance=keys.tolerance)
    return events.sendgrid(_json(body))


def _mailgun(keys: Keys, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
    signing_key = keys.need("mailgun")
    payload = _json(body)
    signatures.check_mailgun(payload, signing_key=signing_key, tolerance=keys.tolerance, tokens=keys.mailgun_tokens)
    return events.mailgun(payload)


def _resend(keys: Keys, body: bytes, headers: Mapping[str, str]) -> list[ProviderEvent]:
    message_id = signatures.check_resend(body, headers, webhook=keys.need("resend"), tolerance=keys.tolerance)
    return events.resend(_json(body), message_id=message_id)


READERS: dict[str, Callable[[Keys, bytes, Mapping[str, str]], list[ProviderEvent]]] = {
    "postmark": _postmark, "sendgrid": _sendgrid, "mailgun": _mailgun, "resend": _resend}


def _endpoint(site: Site, keys: Keys, provider: str) -> Callable[[Request], Awaitable[Response]]:
    reader, limit = READERS[provider], site.settings.webhooks.soft_bounce_limit

    async def endpoint(request: Request) -> Response:
        body = await request.body()  # the guard stops it past max_body_bytes (413)
        try:
            provider_events = reader(keys, body, request.headers)
            outcome = await run_in_threadpool(ingest, site.store, provider_events, soft_bounce_limit=limit)
        except WebhookError as exc:
            log.warning("webhook from %s refused (%d): %s", provider, exc.status, exc)
            return PlainTextResponse(str(exc), status_code=exc.status)
        except StoreError as exc:
            log.error("webhook from %s not recorded: %s", provider, exc)
            return PlainTextResponse("the events could not be recorded now; nothing was changed, try again later",
                                     status_code=503)
        log.info("webhook from %s: %d events, %d new, %d matched, %d addresses suppressed", provider,
                 outcome.received, outcome.new, outcome.matched, outcome.suppressed)
        return PlainTextResponse(f"ok: {outcome.received} events, {outcome.new} new")

    endpoint.__name__ = f"{provider}_webhook"
    return endpoint


def routes(site: Site) -> list[BaseRoute]:
    keys = Keys.of(site.settings)
    return [Route(f"/webhooks/{provider}", _endpoint(site, keys, provider), methods=["POST"])
            for provider in PROVIDERS]
