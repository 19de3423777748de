"""SendGrid's v3 mail send: the exact requests, and what each answer means."""

from __future__ import annotations

import json

import httpx

from pipeline.errors import ProviderRejected
from pipeline.messages import personalise
from pipeline.providers.http import RetryPolicy
from pipeline.providers.sendgrid import SendGridProvider

from .conftest import (
    HTML,
    KEY,
    Server,
    Sleeps,
    assert_key_only_in,
    failure,
    make_batch,
    make_settings,
    ok_json,
    run,
    send_batch,
)

# ---------------------------------------------------------------- SendGrid


def _sendgrid_render(content: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        content = content.replace(key, value)
    return content


def test_sendgrid_request(policy: RetryPolicy) -> None:
    settings = make_settings("sendgrid")
    batch = make_batch(settings, 4)
    server = Server(httpx.Response(202, headers={"X-Message-Id": "sg-abc"}))
    outcomes = run(send_batch(SendGridProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert_key_only_in(request, "Authorization")
    assert request.content.count(b"LONG-SHARED-HTML-BODY") == 1  # the edition travels once
    assert request.content.count(b"LONG-SHARED-TEXT-BODY") == 1
    body = json.loads(request.content)
    assert body["from"] == {"email": "report@example.org", "name": "The Test Report"}
    assert body["reply_to"] == {"email": "editor@example.org"}
    assert body["headers"] == dict(batch.mail.list_headers)
    [text, html] = body["content"]
    assert text["type"] == "text/plain" and html["type"] == "text/html"
    assert "-name-" in text["value"] and "-name_html-" in html["value"] and "{{" not in html["value"]
    assert len(body["personalizations"]) == 4
    for item, person in zip(body["personalizations"], batch.recipients, strict=True):
        assert item["to"][0]["email"] == person.email
        assert "," not in item["to"][0].get("name", "") and ";" not in item["to"][0].get("name", "")
        assert item["custom_args"] == {"send": "42", "delivery": str(person.delivery_id)}
        assert item["headers"] == {"List-Unsubscribe": person.headers["List-Unsubscribe"],
                                   "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
        assert (_sendgrid_render(html["value"], item["substitutions"]),
                _sendgrid_render(text["value"], item["substitutions"])) == personalise(batch.mail, person)
    assert body["personalizations"][0]["substitutions"]["-name_html-"] == "Zoë &lt;O&#x27;Brien&gt; &amp; Co"
    assert body["personalizations"][0]["substitutions"]["-name-"] == "Zoë <O'Brien> & Co"
    assert [(o.status, o.provider_message_id) for o in outcomes] == [("sent", "sg-abc")] * 4


def test_sendgrid_keys_that_occur_in_the_edition_are_not_used(policy: RetryPolicy) -> None:
    settings = make_settings("sendgrid")
    batch = make_batch(settings, 2, html=HTML.replace("LONG", "first-name-field -view_url_html- x-name"))
    server = Server(httpx.Response(202, headers={"X-Message-Id": "sg-1"}))
    run(send_batch(SendGridProvider(settings, server.client(), policy=policy), batch))
    body = json.loads(server.requests[0].content)
    [text, html] = body["content"]
    for item, person in zip(body["personalizations"], batch.recipients, strict=True):
        assert "-name-" not in item["substitutions"]
        assert (_sendgrid_render(html["value"], item["substitutions"]),
                _sendgrid_render(text["value"], item["substitutions"])) == personalise(batch.mail, person)


def test_sendgrid_400_rejects_with_the_field(policy: RetryPolicy) -> None:
    settings = make_settings("sendgrid")
    server = Server(ok_json({"errors": [{"message": "The from address does not match a verified Sender Identity.",
                                         "field": "from"}]}, status=400))
    exc = failure(send_batch(SendGridProvider(settings, server.client(), policy=policy), make_batch(settings)),
                  ProviderRejected)
    assert "verified Sender Identity. (from)" in str(exc)


def test_sendgrid_429_with_rate_limit_reset(sleeps: Sleeps) -> None:
    settings = make_settings("sendgrid")
    policy = RetryPolicy(max_retries=1, sleep=sleeps)
    server = Server(httpx.Response(429, headers={"X-RateLimit-Reset": "4"}), httpx.Response(202))
    outcomes = run(send_batch(SendGridProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert sleeps == [4] and len(server.requests) == 2
    assert [o.status for o in outcomes] == ["sent", "sent"]
