"""The four providers' webhooks in-process, with keys made in the test: who may post, and what an event does.

Payloads are written here in the shapes of the providers' documentation (not built by the emulator), so the
parsers are checked against the providers' words rather than against our own emulator.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy import select, update
from starlette.testclient import TestClient

from pipeline import send
from pipeline.config import Settings, WebhookSecrets
from pipeline.store import Store
from pipeline.store.events import recorded
from pipeline.store.tables import deliveries, events, subscribers, suppressions
from pipeline.web.app import create_app
from pipeline.webhooks import signatures

from ..test_send import _audience, _edition, _start

PROVIDERS = ("postmark", "sendgrid", "mailgun", "resend")
PEOPLE = [("ada@example.net", "Ada", "policy"), ("bob@example.net", "Bob", "policy"),
          ("cy@example.net", "Cy", "policy"), ("di@example.net", "Di", "policy")]


@dataclass
class Keys:
    sendgrid: ec.EllipticCurvePrivateKey
    sendgrid_public: str
    mailgun: str
    resend: str
    user: str = "hooks"
    password: str = "p4ss-" + secrets.token_hex(8)


@pytest.fixture
def keys() -> Keys:
    private, public = signatures.new_sendgrid_key()
    return Keys(sendgrid=private, sendgrid_public=public, mailgun=secrets.token_hex(16),
                resend="whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())


def _secrets(keys: Keys) -> WebhookSecrets:
    return WebhookSecrets(postmark_user=SecretStr(keys.user), postmark_password=SecretStr(keys.password),
                          sendgrid_public_key=SecretStr(keys.sendgrid_public),
                          mailgun_signing_key=SecretStr(keys.mailgun),
                          resend_secret=SecretStr(keys.resend))


@pytest.fixture
def hooked(settings: Settings, keys: Keys) -> Settings:
    return settings.model_copy(update={"webhook_secrets": _secrets(keys)})


@pytest.fixture
def hooks(hooked: Settings, store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(hooked, store), base_url="https://report.example.org",
                    raise_server_exceptions=False) as client:
        yield client


@dataclass(frozen=True)
class Sent:
    send_id: int
    rows: dict[str, Any]  # by address: id, provider_message_id, status


@pytest.fixture
def sent(project: Path, hooked: Settings, store: Store) -> Sent:
    """A real send of the sample edition to PEOPLE through the outbox."""
    _audience(store, project, PEOPLE)
    send_id = _start(store, hooked, _edition(project, hooked))
    asyncio.run(send.run_send(store, hooked, send_id))
    with store.read() as connection:
        rows = {row.email: row for row in connection.execute(select(deliveries).where(deliveries.c.send_id == send_id))}
    return Sent(send_id, rows)


# -- how each provider signs and shapes its requests -------------------------------------------------------------

def post(client: TestClient, provider: str, keys: Keys, payload: Any, *, raw: bytes | None = None,
         at: float | None = None, tamper: bool = False, wrong_key: bool = False, event_id: str | None = None) -> Any:
    """Post ``payload`` to our endpoint for ``provider``, signed as that provider signs it."""
    stamp = int(time.time() if at is None else at)
    if provider == "mailgun":
        token = secrets.token_hex(25)
        key = secrets.token_hex(16) if wrong_key else keys.mailgun
        signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
        # Mailgun signs its timestamp and token, not the event: tampering shows in the token.
        payload = {"signature": {"timestamp": str(stamp), "token": token + ("0" if tamper else ""),
                                 "signature": signature}, **payload}
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if provider == "postmark":
        password = "guess" if wrong_key else keys.password
        headers["Authorization"] = signatures.basic_authorization(keys.user, password)
    elif provider == "sendgrid":
        private = ec.generate_private_key(ec.SECP256R1()) if wrong_key else keys.sendgrid
        headers |= signatures.sign_sendgrid(private, body, stamp)
    elif provider == "resend":
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode() if wrong_key else keys.resend
        headers |= signatures.sign_resend(signatures.svix_webhook(secret), event_id or f"msg_{secrets.token_hex(8)}",
                                          stamp, body)
    if tamper:
        body = body.replace(b"example.net", b"example.org", 1)
    return client.post(f"/webhooks/{provider}", content=body, headers=headers)


def event(provider: str, kind: str, email: str, *, delivery: int | None = None, send_id: int | None = None,
          message_id: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    """One event as ``provider`` documents it; kind is ours (delivered, bounced, soft_bounced, complained,
    unsubscribed) or anything else, passed as the provider's own type."""
    event_id = event_id or secrets.token_hex(8)
    ours = {"send": str(send_id), "delivery": str(delivery)} if delivery is not None else {}
    if provider == "postmark":
        record = {"delivered": ("Delivery", None), "bounced": ("Bounce", "HardBounce"),
                  "soft_bounced": ("Bounce", "SoftBounce"), "complained": ("SpamComplaint", "SpamComplaint")}
        record_type, bounce_type = record.get(kind, (kind, None))
        body: dict[str, Any] = {"RecordType": record_type, "MessageID": message_id or event_id, "Metadata": ours,
                                "MessageStream": "broadcast", "Tag": event_id}
        if record_type == "Delivery":
            body |= {"Recipient": email, "DeliveredAt": "2026-12-01T10:00:00Z", "Details": "Test delivery"}
        elif kind == "unsubscribed":
            body |= {"RecordType": "SubscriptionChange", "Recipient": email, "SuppressSending": True,
                     "SuppressionReason": "ManualSuppression", "ChangedAt": "2026-12-01T10:00:00Z"}
        else:
            body |= {"Email": email, "Type": bounce_type, "BouncedAt": "2026-12-01T10:00:00Z",
                     "Description": "The server was unable to deliver your message"}
        return body
    if provider == "sendgrid":
        name = {"bounced": "bounce", "soft_bounced": "bounce", "complained": "spamreport",
                "unsubscribed": "unsubscribe"}.get(kind, kind)
        body = {"email": email, "timestamp": int(time.time()), "event": name, "sg_event_id": event_id,
                "sg_message_id": f"{message_id or 'x' * 22}.filterdrecv-5645d9c87f-78xgx-1-5EB5A9DB-4.0", **ours}
        if kind in ("bounced", "soft_bounced"):
            body |= {"type": "bounce" if kind == "bounced" else "blocked", "reason": "550 5.1.1 unknown user",
                     "status": "5.1.1"}
        return body
    if provider == "mailgun":
        name = {"bounced": "failed", "soft_bounced": "failed"}.get(kind, kind)
        data: dict[str, Any] = {"event": name, "id": event_id, "timestamp": time.time(), "recipient": email,
                                "message": {"headers": {"message-id": message_id or "none@mg.example.org"}},
                                "user-variables": ours}
        if name == "failed":
            data |= {"severity": "permanent" if kind == "bounced" else "temporary", "reason": "bounce",
                     "delivery-status": {"code": 550, "description": "No such mailbox"}}
        return {"event-data": data}
    name = {"bounced": "email.bounced", "soft_bounced": "email.bounced", "delivered": "email.delivered",
            "complained": "email.complained"}.get(kind, f"email.{kind}")
    data = {"email_id": message_id or event_id, "created_at": "2026-12-01T10:00:00.000Z", "from": "a@example.org",
            "to": [email], "subject": "Hello", "tags": ours}
    if kind in ("bounced", "soft_bounced"):
        data["bounce"] = {"type": "Permanent" if kind == "bounced" else "Transient", "subType": "General",
                          "message": "The recipient's server rejected it", "diagnosticCode": ["smtp; 550 5.1.1"]}
    return {"type": name, "created_at": "2026-12-01T10:00:01.000Z", "data": data}


def body_for(provider: str, events_: list[dict[str, Any]]) -> Any:
    """SendGrid posts an array; the others one event per request."""
    return events_ if provider == "sendgrid" else events_[0]


def state(store: Store) -> tuple[Any, ...]:
    """Everything an event may change."""
    with store.read() as connection:
        return tuple(tuple(map(tuple, connection.execute(select(table).order_by(*table.primary_key.columns))))
                     for table in (events, suppressions, subscribers, deliveries))


def status_of(store: Store, email: str) -> tuple[str, int, str | None]:
    with store.read() as connection:
        row = connection.execute(select(subscribers.c.status, subscribers.c.soft_bounces)
                                 .where(subscribers.c.email_key == email)).one()
        reason = connection.scalar(select(suppressions.c.reason).where(suppressions.c.email_key == email))
    return row.status, row.soft_bounces, reason


# -- who may post ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_signed_event_is_taken_and_marks_its_delivery(provider: str, hooks: TestClient, keys: Keys, sent: Sent,
                                                        store: Store) -> None:
    row = sent.rows["ada@example.net"]
    response = post(hooks, provider, keys, body_for(provider, [event(provider, "delivered", "ada@example.net",
                                                                     delivery=row.id, send_id=sent.send_id)]))
    assert response.status_code == 200, response.text
    assert response.text == "ok: 1 events, 1 new"
    (stored,) = recorded(store, provider=provider)
    assert (stored.kind, stored.delivery_id, stored.send_id, stored.matched) == ("delivered", row.id, sent.send_id,
                                                                                 True)
    with store.read() as connection:
        assert connection.scalar(select(deliveries.c.event).where(deliveries.c.id == row.id)) == "delivered"


# Postmark signs no body (its HTTP Basic credentials are the whole proof): a tampered body is not a fault there.
FORGERIES = [(provider, fault) for provider in PROVIDERS for fault in ("tamper", "wrong_key", "unsigned")
             if (provider, fault) != ("postmark", "tamper")]


@pytest.mark.parametrize(("provider", "fault"), FORGERIES)
def test_a_forged_request_is_refused_and_changes_nothing(provider: str, fault: str, hooks: TestClient, keys: Keys,
                                                         sent: Sent, store: Store) -> None:
    before = state(store)
    payload = body_for(provider, [event(provider, "bounced", "ada@example.net")])
    if fault == "unsigned":
        response = hooks.post(f"/webhooks/{provider}", json=payload)
    else:
        response = post(hooks, provider, keys, payload, tamper=fault == "tamper", wrong_key=fault == "wrong_key")
    assert response.status_code == 401
    assert "\n" not in response.text.strip() and "Traceback" not in response.text
    assert keys.mailgun not in response.text and keys.password not in response.text
    assert state(store) == before


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "resend"])
@pytest.mark.parametrize("offset", [-301, 301])
def test_a_timestamp_outside_the_tolerance_is_refused(provider: str, offset: int, hooks: TestClient, keys: Keys,
                                                      sent: Sent, store: Store) -> None:
    before = state(store)
    payload = body_for(provider, [event(provider, "bounced", "ada@example.net")])
    assert post(hooks, provider, keys, payload, at=time.time() + offset).status_code == 401
    assert state(store) == before
    assert post(hooks, provider, keys, payload, at=time.time() - 60).status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_repeated_event_changes_nothing(provider: str, hooks: TestClient, keys: Keys, sent: Sent,
                                          store: Store) -> None:
    payload = body_for(provider, [event(provider, "soft_bounced", "bob@example.net", event_id="evt-1")])
    assert post(hooks, provider, keys, payload, event_id="msg_1").text == "ok: 1 events, 1 new"
    before = state(store)
    again = post(hooks, provider, keys, payload, event_id="msg_1")
    assert (again.status_code, again.text) == (200, "ok: 1 events, 0 new")
    assert state(store) == before
    assert status_of(store, "bob@example.net")[1] == 1  # counted once


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_event_type_is_recorded_and_answered_200(provider: str, hooks: TestClient, keys: Keys,
                                                            sent: Sent, store: Store) -> None:
    kind = {"postmark": "Open", "sendgrid": "open", "mailgun": "opened", "resend": "opened"}[provider]
    response = post(hooks, provider, keys, body_for(provider, [event(provider, kind, "cy@example.net")]))
    assert response.status_code == 200
    (stored,) = recorded(store, provider=provider)
    assert stored.kind == "other" and kind in (stored.detail or "")
    assert status_of(store, "cy@example.net") == ("active", 0, None)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_that_is_not_json_is_400_in_one_line(provider: str, hooks: TestClient, keys: Keys,
                                                    store: Store) -> None:
    before = state(store)
    if provider == "mailgun":  # Mailgun signs inside its JSON: a body that is not JSON cannot be signed
        response = hooks.post("/webhooks/mailgun", content=b"{not json", headers={"Content-Type": "application/json"})
    else:
        response = post(hooks, provider, keys, None, raw=b"{not json")
    assert (response.status_code, response.text) == (400, "the body is not JSON")
    assert post(hooks, "sendgrid", keys, {"not": "an array"}).status_code == 400
    assert state(store) == before


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_is_413(chunked: bool, hooks: TestClient, hooked: Settings, store: Store) -> None:
    too_big = b"[" + b" " * hooked.web.max_body_bytes + b"]"
    content: Any = iter([too_big[:1000], too_big[1000:]]) if chunked else too_big
    response = hooks.post("/webhooks/sendgrid", content=content)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/plain")
    assert recorded(store) == []


def test_a_provider_without_its_key_is_503_and_changes_nothing(settings: Settings, store: Store,
                                                               keys: Keys) -> None:
    half = _secrets(keys).model_copy(update={"mailgun_signing_key": None, "postmark_password": None})
    with TestClient(create_app(settings.model_copy(update={"webhook_secrets": half}), store),
                    raise_server_exceptions=False) as client:
        for provider in ("mailgun", "postmark"):
            response = post(client, provider, keys, body_for(provider, [event(provider, "bounced", "a@example.net")]))
            assert response.status_code == 503
            assert "MAILGUN_WEBHOOK_SIGNING_KEY" in response.text or "POSTMARK_WEBHOOK_PASSWORD" in response.text
        assert post(client, "resend", keys, event("resend", "delivered", "a@example.net")).status_code == 200
    assert [row.provider for row in recorded(store)] == ["resend"]


def test_a_key_that_is_not_a_key_is_503(settings: Settings, store: Store, keys: Keys) -> None:
    broken = _secrets(keys).model_copy(update={"sendgrid_public_key": SecretStr("not-a-key")})
    with TestClient(create_app(settings.model_copy(update={"webhook_secrets": broken}), store),
                    raise_server_exceptions=False) as client:
        response = post(client, "sendgrid", keys, [event("sendgrid", "bounced", "a@example.net")])
    assert response.status_code == 503 and "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.text
    assert "not-a-key" not in response.text


# -- what an event does ------------------------------------------------------------------------------------------

def test_events_match_by_delivery_id_or_by_message_id(hooks: TestClient, keys: Keys, sent: Sent,
                                                      store: Store) -> None:
    ada, bob = sent.rows["ada@example.net"], sent.rows["bob@example.net"]
    with store.begin() as connection:  # as SendGrid's send API answered: one X-Message-Id for the batch
        connection.execute(update(deliveries).where(deliveries.c.send_id == sent.send_id)
                           .values(provider_message_id="batchMessageId00000000"))
    post(hooks, "sendgrid", keys, [
        event("sendgrid", "delivered", "ada@example.net", delivery=ada.id, send_id=sent.send_id),
        event("sendgrid", "delivered", "bob@example.net", message_id="batchMessageId00000000"),
        event("sendgrid", "delivered", "zed@example.net", message_id="batchMessageId00000000"),
        # a test send numbers its recipients from 1: its delivery ids name none of our rows
        event("sendgrid", "delivered", "cy@example.net", delivery=ada.id, send_id=None)])
    found = {row.email: (row.delivery_id, row.matched) for row in recorded(store)}
    assert found == {"ada@example.net": (ada.id, True), "bob@example.net": (bob.id, True),
                     "zed@example.net": (None, False), "cy@example.net": (None, False)}


def test_an_unmatched_hard_bounce_still_suppresses_the_address(hooks: TestClient, keys: Keys, sent: Sent,
                                                               store: Store) -> None:
    post(hooks, "mailgun", keys, event("mailgun", "bounced", "Stranger@Example.com"))
    (stored,) = recorded(store)
    assert (stored.kind, stored.matched, stored.delivery_id) == ("bounced", False, None)
    with store.read() as connection:
        assert connection.scalar(select(suppressions.c.reason)
                                 .where(suppressions.c.email_key == "stranger@example.com")) == "bounced"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bounces_complaints_and_unsubscribes_suppress(provider: str, hooks: TestClient, keys: Keys, sent: Sent,
                                                      store: Store) -> None:
    for kind, person in (("bounced", "ada"), ("complained", "bob"), ("unsubscribed", "cy")):
        if provider == "resend" and kind == "unsubscribed":
            continue  # Resend reports no unsubscribes
        row = sent.rows[f"{person}@example.net"]
        response = post(hooks, provider, keys, body_for(provider, [
            event(provider, kind, row.email, delivery=row.id, send_id=sent.send_id)]))
        assert response.status_code == 200
    assert status_of(store, "ada@example.net") == ("bounced", 0, "bounced")
    assert status_of(store, "bob@example.net") == ("complained", 0, "complained")
    if provider != "resend":
        assert status_of(store, "cy@example.net") == ("unsubscribed", 0, "unsubscribed")
        with store.read() as connection:
            assert connection.scalar(select(subscribers.c.unsubscribe_channel)
                                     .where(subscribers.c.email_key == "cy@example.net")) == "webhook"
    assert status_of(store, "di@example.net") == ("active", 0, None)
    with store.read() as connection:
        words = dict(connection.execute(select(deliveries.c.email, deliveries.c.event)
                                        .where(deliveries.c.send_id == sent.send_id)).all())
    assert words["ada@example.net"] == "bounced" and words["bob@example.net"] == "complained"
    assert words["di@example.net"] is None


def test_soft_bounces_suppress_at_the_limit_and_a_delivery_resets_them(hooks: TestClient, keys: Keys, sent: Sent,
                                                                       store: Store, hooked: Settings) -> None:
    assert hooked.webhooks.soft_bounce_limit == 3
    soft = [event("sendgrid", "soft_bounced", "di@example.net") for _ in range(2)]
    post(hooks, "sendgrid", keys, soft)
    assert status_of(store, "di@example.net") == ("active", 2, None)
    post(hooks, "sendgrid", keys, [event("sendgrid", "delivered", "di@example.net")])
    assert status_of(store, "di@example.net") == ("active", 0, None)
    for _ in range(2):
        post(hooks, "sendgrid", keys, [event("sendgrid", "soft_bounced", "di@example.net")])
    assert status_of(store, "di@example.net") == ("active", 2, None)
    post(hooks, "sendgrid", keys, [event("sendgrid", "soft_bounced", "di@example.net")])
    assert status_of(store, "di@example.net") == ("bounced", 3, "bounced")


def test_an_uncertain_delivery_the_provider_reports_on_becomes_sent(hooks: TestClient, keys: Keys, sent: Sent,
                                                                    store: Store) -> None:
    ada, bob = sent.rows["ada@example.net"], sent.rows["bob@example.net"]
    with store.begin() as connection:  # as a sender that died mid-batch leaves them (see tests/test_send.py)
        connection.execute(update(deliveries).where(deliveries.c.id.in_([ada.id, bob.id]))
                           .values(status="uncertain", sent_at=None))
    post(hooks, "postmark", keys, event("postmark", "bounced", "ada@example.net", delivery=ada.id,
                                        send_id=sent.send_id))
    with store.read() as connection:
        statuses = dict(connection.execute(select(deliveries.c.email, deliveries.c.status)
                                           .where(deliveries.c.id.in_([ada.id, bob.id]))).all())
    assert statuses == {"ada@example.net": "sent", "bob@example.net": "uncertain"}


def test_a_later_event_is_the_last_word_whatever_order_it_arrives_in(hooks: TestClient, keys: Keys, sent: Sent,
                                                                     store: Store) -> None:
    ada = sent.rows["ada@example.net"]
    complaint = event("sendgrid", "complained", "ada@example.net", delivery=ada.id, send_id=sent.send_id)
    delivered = event("sendgrid", "delivered", "ada@example.net", delivery=ada.id, send_id=sent.send_id)
    delivered["timestamp"] = complaint["timestamp"] - 30
    post(hooks, "sendgrid", keys, [complaint])
    post(hooks, "sendgrid", keys, [delivered])
    with store.read() as connection:
        row = connection.execute(select(deliveries.c.event, deliveries.c.event_at)
                                 .where(deliveries.c.id == ada.id)).one()
    assert row.event == "complained"
    assert row.event_at == dt.datetime.fromtimestamp(complaint["timestamp"], dt.UTC)


def test_a_mailgun_signature_reused_for_another_event_is_refused(hooks: TestClient, keys: Keys, sent: Sent,
                                                                 store: Store) -> None:
    stamp, token = str(int(time.time())), secrets.token_hex(25)
    signed = {"timestamp": stamp, "token": token,
              "signature": hmac.new(keys.mailgun.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()}
    delivered = {"signature": signed, **event("mailgun", "delivered", "ada@example.net")}
    assert hooks.post("/webhooks/mailgun", json=delivered).status_code == 200
    assert hooks.post("/webhooks/mailgun", json=delivered).text == "ok: 1 events, 0 new"  # a retry
    before = state(store)
    forged = {"signature": signed, **event("mailgun", "bounced", "bob@example.net")}
    assert hooks.post("/webhooks/mailgun", json=forged).status_code == 401
    assert state(store) == before


def test_the_keys_come_from_the_variables_the_settings_name_and_are_never_shown(
        project: Path, settings: Settings, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import describe_settings, load_settings

    (project / "newsletter.toml").write_text((project / "newsletter.toml").read_text()
                                             + '\n[webhooks]\nmailgun_signing_key_env = "MY_MAILGUN_KEY"\n')
    monkeypatch.setenv("MY_MAILGUN_KEY", keys.mailgun)
    monkeypatch.setenv("RESEND_WEBHOOK_SECRET", keys.resend)
    loaded = load_settings(project / "newsletter.toml")
    hooks = loaded.webhook_secrets
    assert hooks.mailgun_signing_key is not None and hooks.mailgun_signing_key.get_secret_value() == keys.mailgun
    assert hooks.sendgrid_public_key is None
    shown = describe_settings(loaded) + repr(loaded)
    assert keys.mailgun not in shown and keys.resend not in shown
    assert "mailgun_signing_key set" in shown and "sendgrid_public_key not set" in shown
