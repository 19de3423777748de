"""How each provider proves a webhook request is its own, checked here (and signed here, for the emulator).

* Postmark signs nothing: the webhook URL carries HTTP Basic credentials, compared in constant time.
* SendGrid's Signed Event Webhook: an ECDSA P-256 / SHA-256 signature (base64 DER) of ``timestamp + raw body``
  in ``X-Twilio-Email-Event-Webhook-Signature``, the timestamp in ``...-Timestamp``; the public key is the
  base64 DER (SubjectPublicKeyInfo) string SendGrid shows. Checked with ``cryptography``.
* Mailgun: HMAC-SHA256, keyed with the webhook signing key, of ``timestamp + token``, both in the JSON body's
  ``signature`` object beside the hex ``signature``. The event itself is not signed, so a token already used
  for another event is refused (``MailgunTokens``), as Mailgun advises.
* Resend signs with Svix: ``svix-id``, ``svix-timestamp``, ``svix-signature`` (``v1,<base64>`` HMAC-SHA256 of
  ``id.timestamp.body`` keyed with the ``whsec_`` secret). Checked with ``standardwebhooks``, the library the
  ``svix`` package itself delegates to; it reads ``webhook-*`` headers, so the ``svix-*`` ones are handed to it
  under those names, as ``svix.webhooks.Webhook`` does. It refuses timestamps more than 5 minutes away on its
  own; ``tolerance_seconds`` is checked first, so a smaller tolerance holds too.

A timestamp more than ``tolerance`` seconds away from now (in either direction) is refused: a replay of a
recorded request, or a clock badly wrong. Every refusal is a ``WebhookUnsigned`` with a reason that names
no secret.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from pipeline.errors import WebhookUnsigned

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
SVIX_HEADERS = ("svix-id", "svix-timestamp", "svix-signature")


def _fresh(timestamp: str | None, tolerance: float, now: float | None) -> None:
    try:
        moment = float(timestamp or "")
    except ValueError:
        raise WebhookUnsigned("the signed timestamp is missing or not a number") from None
    if abs((time.time() if now is None else now) - moment) > tolerance:
        raise WebhookUnsigned(f"the signed timestamp is more than {tolerance:g} seconds away from now")


# -- Postmark ----------------------------------------------------------------------------------------------------

def check_postmark(authorization: str | None, *, user: str, password: str) -> None:
    """HTTP Basic ``user:password``; both halves compared in constant time, whatever the first one gave."""
    scheme, _, encoded = (authorization or "").partition(" ")
    try:
        given = base64.b64decode(encoded.strip(), validate=True) if scheme.lower() == "basic" else b""
    except (ValueError, binascii.Error):
        given = b""
    given_user, colon, given_password = given.partition(b":")
    user_ok = hmac.compare_digest(given_user, user.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    if not (colon and user_ok and password_ok):
        raise WebhookUnsigned("HTTP Basic credentials missing or wrong")


def basic_authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- SendGrid ----------------------------------------------------------------------------------------------------

def sendgrid_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER); a PEM block is taken too."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ValueError("the SendGrid webhook key is not a base64 DER (or PEM) public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the SendGrid webhook key is not an ECDSA P-256 public key")
    return key


def check_sendgrid(body: bytes, headers: Mapping[str, str], *, public_key: ec.EllipticCurvePublicKey,
                   tolerance: float, now: float | None = None) -> None:
    signature, timestamp = headers.get(SENDGRID_SIGNATURE), headers.get(SENDGRID_TIMESTAMP)
    if not signature or not timestamp:
        raise WebhookUnsigned(f"{SENDGRID_SIGNATURE} or {SENDGRID_TIMESTAMP} missing")
    _fresh(timestamp, tolerance, now)
    try:
        public_key.verify(base64.b64decode(signature, validate=True), timestamp.encode() + body,
                          ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise WebhookUnsigned("the SendGrid signature does not match") from None


def new_sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A signing key and its public half in SendGrid's format (base64 DER), for the emulator and tests."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sign_sendgrid(private_key: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int) -> dict[str, str]:
    signature = private_key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SENDGRID_SIGNATURE: base64.b64encode(signature).decode(), SENDGRID_TIMESTAMP: str(timestamp)}


# -- Mailgun -----------------------------------------------------------------------------------------------------

class MailgunTokens:
    """The tokens of the Mailgun requests taken within the tolerance, and the event each one carried.

    Mailgun signs its timestamp and token, not the event: a captured request's signature could be sent again
    with another event beside it. Mailgun's advice is to refuse a token seen before; the same token with the
    same event is a retry, taken (and idempotent). Kept in memory: one server process sees its own requests.
    """

    def __init__(self, tolerance: float):
        self.tolerance = tolerance
        self.seen: dict[str, tuple[float, str]] = {}  # token -> (when it was signed, the digest of its event)

    def check(self, token: str, timestamp: float, event: Any) -> None:
        digest = hashlib.sha256(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        horizon = time.time() - 2 * self.tolerance
        if len(self.seen) > 10_000:
            self.seen = {key: value for key, value in self.seen.items() if value[0] >= horizon}
        known = self.seen.get(token)
        if known is not None and known[1] != digest:
            raise WebhookUnsigned("this Mailgun token was already used for another event")
        self.seen[token] = (timestamp, digest)


def check_mailgun(body: Any, *, signing_key: str, tolerance: float, now: float | None = None,
                  tokens: MailgunTokens | None = None) -> None:
    signed = body.get("signature") if isinstance(body, dict) else None
    if not isinstance(signed, dict):
        raise WebhookUnsigned("the Mailgun webhook has no signature object")
    timestamp, token, signature = (signed.get(name) for name in ("timestamp", "token", "signature"))
    if not all(isinstance(value, str | int) for value in (timestamp, token, signature)):
        raise WebhookUnsigned("the Mailgun signature lacks its timestamp, token or signature")
    _fresh(str(timestamp), tolerance, now)
    expected = mailgun_signature(signing_key, str(timestamp), str(token))
    if not hmac.compare_digest(expected.encode(), str(signature).encode()):
        raise WebhookUnsigned("the Mailgun signature does not match")
    if tokens is not None:
        tokens.check(str(token), float(timestamp or 0), body.get("event-data"))


def mailgun_signature(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


# -- Resend (Svix) -----------------------------------------------------------------------------------------------

def svix_webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except Exception:  # binascii.Error, EmptyWebhookSecretError: the secret in the environment is not one
        raise ValueError("the Resend webhook secret is not a Svix secret (whsec_ and base64)") from None


def check_resend(body: bytes, headers: Mapping[str, str], *, webhook: Webhook, tolerance: float,
                 now: float | None = None) -> str:
    """The request's ``svix-id`` once its signature holds."""
    message_id, timestamp, signature = (headers.get(name) for name in SVIX_HEADERS)
    if not (message_id and timestamp and signature):
        raise WebhookUnsigned("svix-id, svix-timestamp or svix-signature missing")
    _fresh(timestamp, tolerance, now)
    standard = {"webhook-id": message_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    try:
        webhook.verify(body, standard, json_parse=False)
    except (WebhookVerificationError, ValueError):  # ValueError: a body not UTF-8, a signature not "v1,base64"
        raise WebhookUnsigned("the Svix signature does not match") from None
    return message_id


def sign_resend(webhook: Webhook, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return {"svix-id": message_id, "svix-timestamp": str(timestamp),
            "svix-signature": webhook.sign(message_id, moment, body.decode())}
