"""Resend's batch API: the exact requests, idempotency keys, and what each answer means."""

from __future__ import annotations

import json

import httpx

from pipeline.errors import (
    ProviderAuthError,
    ProviderRejected,
)
from pipeline.messages import personalise
from pipeline.providers.http import RetryPolicy
from pipeline.providers.resend import ResendProvider

from .conftest import (
    KEY,
    KEY_ENV,
    Server,
    assert_key_only_in,
    failure,
    make_batch,
    make_settings,
    ok_json,
    resend_ok,
    run,
    send_batch,
)

# ---------------------------------------------------------------- Resend


def test_resend_request(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    batch = make_batch(settings, 4, batch_id="5f0c")
    server = Server(resend_ok)
    outcomes = run(send_batch(ResendProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert str(request.url) == "https://api.resend.com/emails/batch"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == "5f0c"
    assert_key_only_in(request, "Authorization")
    items = json.loads(request.content)
    assert len(items) == 4
    for item, person in zip(items, batch.recipients, strict=True):
        html, text = personalise(batch.mail, person)
        assert (item["html"], item["text"]) == (html, text)
        assert len(item["to"]) == 1 and person.email in item["to"][0]
        assert item["from"] == batch.mail.sender and item["subject"] == batch.mail.subject
        assert item["reply_to"] == "editor@example.org"
        assert item["headers"]["List-Unsubscribe"] == person.headers["List-Unsubscribe"]
        assert item["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert {"name": "delivery", "value": str(person.delivery_id)} in item["tags"]
    assert [(o.delivery_id, o.status, o.provider_message_id) for o in outcomes] == [
        (100, "sent", "re-0"), (101, "sent", "re-1"), (102, "sent", "re-2"), (103, "sent", "re-3")]


def test_resend_retries_a_timed_out_batch_with_the_same_idempotency_key(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    server = Server(httpx.ReadTimeout("timed out"), resend_ok)
    provider = ResendProvider(settings, server.client(), policy=policy)
    assert provider.idempotent
    outcomes = run(send_batch(provider, make_batch(settings, 3, batch_id="b-77")))
    assert [r.headers["Idempotency-Key"] for r in server.requests] == ["b-77", "b-77"]
    assert server.requests[0].content == server.requests[1].content
    assert [o.status for o in outcomes] == ["sent"] * 3


def test_resend_waits_while_the_same_key_is_in_progress(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    busy = ok_json({"statusCode": 409, "name": "concurrent_idempotent_requests", "message": "in progress"}, 409)
    server = Server(httpx.ReadTimeout("timed out"), busy, resend_ok)
    outcomes = run(send_batch(ResendProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert len(server.requests) == 3 and [o.status for o in outcomes] == ["sent", "sent"]


def test_resend_splits_over_100_with_distinct_keys(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    server = Server(resend_ok)
    outcomes = run(send_batch(ResendProvider(settings, server.client(), policy=policy),
                         make_batch(settings, 150, batch_id="big")))
    assert [(r.headers["Idempotency-Key"], len(json.loads(r.content))) for r in server.requests] == [
        ("big", 100), ("big.1", 50)]
    assert len(outcomes) == 150


def test_resend_422_and_401(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    invalid = Server(ok_json({"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}, 422))
    exc = failure(send_batch(ResendProvider(settings, invalid.client(), policy=policy), make_batch(settings)),
                  ProviderRejected)
    assert "Invalid `to` field." in str(exc) and len(invalid.requests) == 1
    refused = Server(ok_json({"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"}, 401))
    exc = failure(send_batch(ResendProvider(settings, refused.client(), policy=policy), make_batch(settings)),
                  ProviderAuthError)
    assert KEY_ENV in str(exc) and len(refused.requests) == 1
