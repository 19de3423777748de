"""Postmark's batch API: the exact requests, and what each answer means."""

from __future__ import annotations

import json

import httpx
import pytest

from pipeline.errors import ProviderRejected
from pipeline.messages import personalise
from pipeline.providers import postmark as postmark_module
from pipeline.providers.http import RetryPolicy
from pipeline.providers.postmark import PostmarkProvider

from .conftest import (
    KEY,
    Server,
    assert_key_only_in,
    failure,
    make_batch,
    make_settings,
    ok_json,
    postmark_ok,
    run,
    send_batch,
)

# ---------------------------------------------------------------- Postmark


def test_postmark_request(policy: RetryPolicy) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 4)
    server = Server(postmark_ok)
    outcomes = run(send_batch(PostmarkProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert request.method == "POST" and str(request.url) == "https://api.postmarkapp.com/email/batch"
    assert request.headers["X-Postmark-Server-Token"] == KEY
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Content-Type"] == "application/json"
    assert_key_only_in(request, "X-Postmark-Server-Token")
    sent = json.loads(request.content)
    assert len(sent) == 4
    for message, person in zip(sent, batch.recipients, strict=True):
        html, text = personalise(batch.mail, person)
        assert message["HtmlBody"] == html and message["TextBody"] == text
        assert person.email in message["To"]
        assert message["From"] == "The Test Report <report@example.org>"
        assert message["ReplyTo"] == "editor@example.org"
        assert message["MessageStream"] == "broadcast"
        assert message["Metadata"] == {"send": "42", "delivery": str(person.delivery_id)}
        headers = {h["Name"]: h["Value"] for h in message["Headers"]}
        assert headers["List-Unsubscribe"] == person.headers["List-Unsubscribe"]
        assert person.values["unsubscribe_url"] in headers["List-Unsubscribe"]
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "Message-ID" not in headers  # Postmark assigns its own
    assert [o.status for o in outcomes] == ["sent"] * 4
    assert [o.provider_message_id for o in outcomes] == ["pm-0", "pm-1", "pm-2", "pm-3"]





def test_postmark_message_stream_and_base_url_from_settings(policy: RetryPolicy) -> None:
    settings = make_settings("postmark", message_stream="newsletters", base_url="http://127.0.0.1:9/pm/")
    server = Server(postmark_ok)
    run(send_batch(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings, 1)))
    assert str(server.requests[0].url) == "http://127.0.0.1:9/pm/email/batch"
    assert json.loads(server.requests[0].content)[0]["MessageStream"] == "newsletters"


def test_postmark_per_message_errors(policy: RetryPolicy) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 4)
    answers = [{"ErrorCode": 0, "MessageID": "ok-1", "Message": "OK"},
               {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive."},
               {"ErrorCode": 300, "Message": "Invalid 'To' address: 'x'."},
               {"ErrorCode": 405, "Message": "Not allowed to send: you ran out of credits."}]
    outcomes = run(send_batch(PostmarkProvider(settings, Server(ok_json(answers)).client(), policy=policy), batch))
    sent, inactive, invalid, credits = outcomes
    assert sent.status == "sent" and sent.provider_message_id == "ok-1" and not sent.suppress
    assert (inactive.status, inactive.error_class, inactive.suppress) == ("failed", "permanent", True)
    assert "406" in inactive.error_text and "inactive" in inactive.error_text
    assert (invalid.status, invalid.error_class, invalid.suppress) == ("failed", "permanent", False)
    assert (credits.status, credits.error_class, credits.suppress) == ("failed", "transient", False)
    assert [o.delivery_id for o in outcomes] == [p.delivery_id for p in batch.recipients]


def test_postmark_422_rejects_the_batch(policy: RetryPolicy) -> None:
    settings = make_settings("postmark")
    server = Server(ok_json({"ErrorCode": 300, "Message": "Invalid 'From' address."}, status=422))
    exc = failure(send_batch(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings)),
                  ProviderRejected)
    assert "Invalid 'From' address." in str(exc)
    assert len(server.requests) == 1


def test_postmark_splits_a_batch_over_the_request_size(policy: RetryPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 5)
    one = len(PostmarkProvider(settings, Server(postmark_ok).client(), policy=policy)._encode(
        batch.mail, batch.recipients[0]))
    monkeypatch.setattr(postmark_module, "MAX_REQUEST_BYTES", one * 2 + 40)
    server = Server(postmark_ok)
    outcomes = run(send_batch(PostmarkProvider(settings, server.client(), policy=policy), batch))
    assert [len(json.loads(r.content)) for r in server.requests] == [2, 2, 1]
    assert all(len(r.content) <= one * 2 + 40 for r in server.requests)
    assert [o.status for o in outcomes] == ["sent"] * 5


def test_postmark_later_part_failing_keeps_earlier_outcomes(policy: RetryPolicy,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 5)
    monkeypatch.setattr(postmark_module, "MAX_MESSAGES", 2)
    server = Server(postmark_ok, httpx.ReadTimeout("timed out"))
    outcomes = run(send_batch(PostmarkProvider(settings, server.client(), policy=policy), batch))
    assert len(server.requests) == 2  # the third part is not attempted
    assert [o.status for o in outcomes] == ["sent", "sent", "uncertain", "uncertain", "failed"]
    assert outcomes[4].error_class == "transient"


def test_postmark_message_over_10_mb_fails_without_being_sent(policy: RetryPolicy,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postmark")
    monkeypatch.setattr(postmark_module, "MAX_MESSAGE_BYTES", 100)
    server = Server(postmark_ok)
    outcomes = run(send_batch(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert server.requests == []
    assert [(o.status, o.error_class) for o in outcomes] == [("failed", "permanent")] * 2
