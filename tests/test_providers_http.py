"""HTTP mail providers at the unit's edge: the exact requests they make, and what they make of answers.

Every request goes to an ``httpx.MockTransport``; no provider host is contacted.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import json
import logging
import re
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from pipeline import messages
from pipeline.config import Settings
from pipeline.errors import (
    ConfigError,
    ProviderAmbiguous,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from pipeline.mail import Batch, Mail, Recipient
from pipeline.messages import personalise
from pipeline.providers import PROVIDERS, make_provider
from pipeline.providers import postmark as postmark_module
from pipeline.providers.http import USER_AGENT, ApiKey, RetryPolicy, make_client, post, wait_from_headers
from pipeline.providers.mailgun import MailgunProvider
from pipeline.providers.postmark import PostmarkProvider
from pipeline.providers.resend import ResendProvider
from pipeline.providers.sendgrid import SendGridProvider

KEY = "sk-test-0123456789-NEVER-PRINT-ME"
KEY_ENV = "PROVIDER_TEST_KEY"
HTML = ('<html><body><p>Dear {{ name }},</p><p>LONG-SHARED-HTML-BODY</p>'
        '<a href="{{ view_url }}">view</a> <a href="{{unsubscribe_url}}">unsubscribe</a></body></html>')
TEXT = "Dear {{ name }},\n\nLONG-SHARED-TEXT-BODY\n\nView: {{ view_url }}\nUnsubscribe: {{ unsubscribe_url }}\n"
NAMES = ["Zoë <O'Brien> & Co", "Ann", "", "Bob, Jr.; Esq"]


def make_settings(name: str, *, key: str | None = KEY, key_env: str | None = KEY_ENV, **provider: Any) -> Settings:
    return Settings.model_validate({
        "publication": {"name": "The Test Report", "from": "The Test Report <report@example.org>",
                        "reply_to": "editor@example.org", "postal_address": "PO Box 1", "base_url":
                        "https://report.example.org", "asset_base_url": "https://report.example.org/assets"},
        "provider": {"name": name, "api_key_env": key_env, **provider},
        "provider_secret": key,
    })


def make_batch(settings: Settings, count: int = 3, *, html: str = HTML, batch_id: str = "batch-0001") -> Batch:
    mail = Mail(label="42", subject="The Test Report, March", html=html, text=TEXT, sender=settings.publication.from_,
                reply_to=settings.publication.reply_to, list_id=messages.list_id(settings))
    people = tuple(
        messages.recipient(settings, label="42", nonce="0f1e2d3c", delivery_id=100 + n, email=f"reader{n}@example.net",
                           name=NAMES[n % len(NAMES)], unsubscribe_url=f"https://report.example.org/u/tok{n}?a=1&b={n}",
                           view_url="https://report.example.org/archive/march/")
        for n in range(count))
    return Batch(id=batch_id, mail=mail, recipients=people)


Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """A MockTransport handler: records every request, answers from a script (the last answer repeats)."""

    def __init__(self, *answers: Answer):
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


class Sleeps(list[float]):
    """Records the waits instead of waiting."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def policy(sleeps: Sleeps) -> RetryPolicy:
    return RetryPolicy(max_retries=3, base_wait=0.5, max_wait=30, sleep=sleeps)


@pytest.fixture(autouse=True)
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with every log line captured; none may show the key."""
    caplog.set_level(logging.DEBUG)
    yield
    assert KEY not in caplog.text


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def failure(coroutine: Any, kind: type[ProviderError]) -> ProviderError:
    with pytest.raises(kind) as caught:
        run(coroutine)
    exc = caught.value
    assert KEY not in str(exc) and KEY not in exc.body and KEY not in repr(exc)
    return exc


def assert_key_only_in(request: httpx.Request, header: str) -> None:
    """The key travels in ``header`` and nowhere else: not in the URL, the body or another header."""
    assert KEY not in str(request.url)
    assert KEY.encode() not in request.content
    for name, value in request.headers.items():
        if name.lower() != header.lower():
            assert KEY not in value, name


def ok_json(data: Any, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers)


def postmark_ok(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    return ok_json([{"To": m["To"], "MessageID": f"pm-{i}", "ErrorCode": 0, "Message": "OK"}
                    for i, m in enumerate(sent)])


def resend_ok(request: httpx.Request) -> httpx.Response:
    return ok_json({"data": [{"id": f"re-{i}"} for i in range(len(json.loads(request.content)))]})


def form_fields(request: httpx.Request) -> list[tuple[str, str]]:
    """The fields of a multipart/form-data body, in order."""
    head = b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n"
    message = email.message_from_bytes(head + request.content, policy=email.policy.HTTP)
    return [(part.get_param("name", header="content-disposition"), part.get_payload(decode=True).decode())
            for part in message.iter_parts()]


# ---------------------------------------------------------------- http.post: retries and errors


URL = "https://api.provider.test/send"


def test_429_waits_as_retry_after_says_then_succeeds(policy: RetryPolicy, sleeps: Sleeps) -> None:
    server = Server(httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"}),
                    ok_json({"ok": True}))
    response = run(_post(server, policy))
    assert response.status_code == 200
    assert len(server.requests) == 2
    assert sleeps == [7]


async def _post(server: Server, policy: RetryPolicy, *, idempotent: bool = False, **kwargs: Any) -> httpx.Response:
    async with server.client() as client:
        return await post(client, URL, policy=policy, idempotent=idempotent, key=ApiKey(KEY, KEY_ENV),
                          content=b"{}", headers={"Authorization": f"Bearer {KEY}"}, **kwargs)


def test_provider_waits_are_capped_by_max_wait(sleeps: Sleeps) -> None:
    policy = RetryPolicy(max_retries=2, max_wait=12, sleep=sleeps)
    server = Server(httpx.Response(503, headers={"Retry-After": "3600"}), ok_json({}))
    run(_post(server, policy))
    assert sleeps == [12]


def test_backoff_is_exponential_with_full_jitter(sleeps: Sleeps) -> None:
    policy = RetryPolicy(max_retries=4, base_wait=1, max_wait=5, sleep=sleeps)
    run(_post(Server(httpx.Response(502), httpx.Response(500), httpx.Response(504), httpx.Response(503),
                     ok_json({})), policy))
    assert len(sleeps) == 4
    for attempt, wait in enumerate(sleeps, start=1):
        assert 0 <= wait <= min(5, 2 ** (attempt - 1))


def test_zero_waits_policy_never_waits(sleeps: Sleeps) -> None:
    policy = RetryPolicy(max_retries=2, base_wait=0, max_wait=0, sleep=sleeps)
    run(_post(Server(httpx.Response(429, headers={"Retry-After": "9"}), httpx.Response(503), ok_json({})), policy))
    assert sleeps == [0, 0]


def test_retry_after_as_http_date_and_rate_limit_reset() -> None:
    now = 1_700_000_000.0
    date = format_datetime(dt.datetime.fromtimestamp(now + 20, tz=dt.UTC), usegmt=True)
    assert wait_from_headers(httpx.Headers({"Retry-After": date}), now=now) == pytest.approx(20)
    assert wait_from_headers(httpx.Headers({"Retry-After": "2.5"}), now=now) == 2.5
    assert wait_from_headers(httpx.Headers({"X-RateLimit-Reset": str(int(now) + 42)}), now=now) == 42  # epoch
    assert wait_from_headers(httpx.Headers({"X-RateLimit-Reset": "13"}), now=now) == 13  # seconds
    assert wait_from_headers(httpx.Headers({"X-RateLimit-Reset": str(int(now + 5) * 1000)}), now=now) == 5  # ms
    assert wait_from_headers(httpx.Headers({"X-RateLimit-Reset": str(int(now) - 100)}), now=now) == 0  # past
    assert wait_from_headers(httpx.Headers({"Retry-After": "soon"}), now=now) is None
    assert wait_from_headers(httpx.Headers({}), now=now) is None


def test_503_every_time_gives_up_as_unavailable(policy: RetryPolicy, sleeps: Sleeps) -> None:
    server = Server(httpx.Response(503, json={"message": "Service Unavailable"}))
    exc = failure(_post(server, policy), ProviderUnavailable)
    assert len(server.requests) == policy.max_retries + 1
    assert len(sleeps) == policy.max_retries
    assert exc.status == 503
    assert "503" in str(exc) and "Service Unavailable" in str(exc) and "4 attempts" in str(exc)


@pytest.mark.parametrize("status", [400, 413, 422])
def test_invalid_request_is_never_retried(policy: RetryPolicy, status: int) -> None:
    server = Server(httpx.Response(status, json={"ErrorCode": 300, "Message": f"Invalid 'To' address, key {KEY}"}))
    exc = failure(_post(server, policy), ProviderRejected)
    assert len(server.requests) == 1
    assert exc.status == status
    assert "Invalid 'To' address" in str(exc)
    assert "***" in str(exc)  # the key the provider echoed is scrubbed


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_stops_at_once_and_names_the_variable(policy: RetryPolicy, status: int) -> None:
    server = Server(httpx.Response(status, json={"message": f"bad key {KEY}"}))
    exc = failure(_post(server, policy), ProviderAuthError)
    assert len(server.requests) == 1
    assert KEY_ENV in str(exc)


def test_read_timeout_is_ambiguous_and_not_retried_without_idempotency(policy: RetryPolicy) -> None:
    server = Server(httpx.ReadTimeout("timed out"), ok_json({}))
    exc = failure(_post(server, policy), ProviderAmbiguous)
    assert len(server.requests) == 1
    assert "may or may not" in str(exc)


@pytest.mark.parametrize("error", [httpx.WriteTimeout("timed out"), httpx.RemoteProtocolError("server hung up"),
                                   httpx.ReadError("connection reset")])
def test_errors_after_sending_are_ambiguous(policy: RetryPolicy, error: Exception) -> None:
    server = Server(error, ok_json({}))
    failure(_post(server, policy), ProviderAmbiguous)
    assert len(server.requests) == 1


def test_read_timeout_is_retried_when_idempotent(policy: RetryPolicy) -> None:
    server = Server(httpx.ReadTimeout("timed out"), ok_json({"ok": True}))
    assert run(_post(server, policy, idempotent=True)).status_code == 200
    assert len(server.requests) == 2


def test_idempotent_timeouts_every_time_stay_ambiguous(policy: RetryPolicy) -> None:
    server = Server(httpx.ReadTimeout("timed out"))
    failure(_post(server, policy, idempotent=True), ProviderAmbiguous)
    assert len(server.requests) == policy.max_retries + 1


@pytest.mark.parametrize("then", [httpx.Response(503, json={"message": "down"}),
                                  httpx.Response(401, json={"message": "bad key"}),
                                  httpx.Response(422, json={"message": "invalid"})])
def test_after_an_unanswered_attempt_any_failure_is_ambiguous(policy: RetryPolicy, then: httpx.Response) -> None:
    # The first attempt may have been accepted: a 503 to the end, or a refusal, cannot mean "nothing was sent".
    server = Server(httpx.ReadTimeout("timed out"), then)
    exc = failure(_post(server, policy, idempotent=True), ProviderAmbiguous)
    assert f"HTTP {then.status_code}" in str(exc) and "earlier attempt went unanswered" in str(exc)


@pytest.mark.parametrize("error", [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"),
                                   httpx.PoolTimeout("pool full")])
def test_connection_errors_before_sending_are_retried(policy: RetryPolicy, error: Exception) -> None:
    server = Server(error, ok_json({}))
    assert run(_post(server, policy)).status_code == 200
    assert len(server.requests) == 2


def test_connection_refused_every_time_is_unavailable(policy: RetryPolicy) -> None:
    server = Server(httpx.ConnectError("connection refused"))
    exc = failure(_post(server, policy), ProviderUnavailable)
    assert len(server.requests) == policy.max_retries + 1
    assert "connection refused" in str(exc)


def test_unexpected_status_is_unavailable_and_not_retried(policy: RetryPolicy) -> None:
    server = Server(httpx.Response(404, json={"message": "Domain not found: mg.example.org"}))
    exc = failure(_post(server, policy), ProviderUnavailable)
    assert len(server.requests) == 1
    assert "Domain not found" in str(exc)


def test_retries_are_logged_without_the_key(policy: RetryPolicy, caplog: pytest.LogCaptureFixture) -> None:
    run(_post(Server(httpx.Response(503, text=f"down {KEY}"), ok_json({})), policy))
    assert "503" in caplog.text and "attempt 2 of 4" in caplog.text
    assert KEY not in caplog.text


def test_api_key_repr_hides_the_key() -> None:
    assert KEY not in repr(ApiKey(KEY, KEY_ENV))


def test_client_factory_sets_user_agent_timeout_and_limits() -> None:
    settings = make_settings("postmark", timeout=12.5, concurrency=7)
    client = make_client(settings)
    try:
        assert client.headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("newsletter-pipeline/")
        assert client.timeout.read == 12.5
        assert client.timeout.connect == 12.5
    finally:
        run(client.aclose())


# ---------------------------------------------------------------- making providers


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun", "resend"])
def test_providers_are_registered_and_take_the_injected_client(name: str) -> None:
    assert name in PROVIDERS
    settings = make_settings(name, domain="mg.example.org")
    client = Server(ok_json({})).client()
    provider = make_provider(settings, client)
    assert provider.name == name
    assert provider.client is client  # type: ignore[attr-defined]
    run(provider.aclose())
    assert not client.is_closed  # a client it was given is left to its owner
    own = make_provider(settings)
    run(own.aclose())
    assert own.client.is_closed  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun", "resend"])
def test_missing_key_names_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=KEY_ENV):
        make_provider(make_settings(name, key=None, domain="mg.example.org"))
    with pytest.raises(ConfigError, match="api_key_env is not set"):
        make_provider(make_settings(name, key=None, key_env=None, domain="mg.example.org"))


def test_mailgun_needs_a_domain() -> None:
    with pytest.raises(ConfigError, match=r"\[provider\] domain"):
        make_provider(make_settings("mailgun"))


# ---------------------------------------------------------------- Postmark


def test_postmark_request(policy: RetryPolicy) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 4)
    server = Server(postmark_ok)
    outcomes = run(_send(PostmarkProvider(settings, server.client(), policy=policy), batch))
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


async def _send(provider: Any, batch: Batch) -> list[Any]:
    try:
        return await provider.send(batch)
    finally:
        await provider.aclose()


def test_postmark_message_stream_and_base_url_from_settings(policy: RetryPolicy) -> None:
    settings = make_settings("postmark", message_stream="newsletters", base_url="http://127.0.0.1:9/pm/")
    server = Server(postmark_ok)
    run(_send(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings, 1)))
    assert str(server.requests[0].url) == "http://127.0.0.1:9/pm/email/batch"
    assert json.loads(server.requests[0].content)[0]["MessageStream"] == "newsletters"


def test_postmark_per_message_errors(policy: RetryPolicy) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 4)
    answers = [{"ErrorCode": 0, "MessageID": "ok-1", "Message": "OK"},
               {"ErrorCode": 406, "Message": "You tried to send to recipient(s) that have been marked as inactive."},
               {"ErrorCode": 300, "Message": "Invalid 'To' address: 'x'."},
               {"ErrorCode": 405, "Message": "Not allowed to send: you ran out of credits."}]
    outcomes = run(_send(PostmarkProvider(settings, Server(ok_json(answers)).client(), policy=policy), batch))
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
    exc = failure(_send(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings)),
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
    outcomes = run(_send(PostmarkProvider(settings, server.client(), policy=policy), batch))
    assert [len(json.loads(r.content)) for r in server.requests] == [2, 2, 1]
    assert all(len(r.content) <= one * 2 + 40 for r in server.requests)
    assert [o.status for o in outcomes] == ["sent"] * 5


def test_postmark_later_part_failing_keeps_earlier_outcomes(policy: RetryPolicy,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postmark")
    batch = make_batch(settings, 5)
    monkeypatch.setattr(postmark_module, "MAX_MESSAGES", 2)
    server = Server(postmark_ok, httpx.ReadTimeout("timed out"))
    outcomes = run(_send(PostmarkProvider(settings, server.client(), policy=policy), batch))
    assert len(server.requests) == 2  # the third part is not attempted
    assert [o.status for o in outcomes] == ["sent", "sent", "uncertain", "uncertain", "failed"]
    assert outcomes[4].error_class == "transient"


def test_postmark_message_over_10_mb_fails_without_being_sent(policy: RetryPolicy,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings("postmark")
    monkeypatch.setattr(postmark_module, "MAX_MESSAGE_BYTES", 100)
    server = Server(postmark_ok)
    outcomes = run(_send(PostmarkProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert server.requests == []
    assert [(o.status, o.error_class) for o in outcomes] == [("failed", "permanent")] * 2


# ---------------------------------------------------------------- SendGrid


def _sendgrid_render(content: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        content = content.replace(key, value)
    return content


def test_sendgrid_request(policy: RetryPolicy) -> None:
    settings = make_settings("sendgrid")
    batch = make_batch(settings, 4)
    server = Server(httpx.Response(202, headers={"X-Message-Id": "sg-abc"}))
    outcomes = run(_send(SendGridProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert str(request.url) == "https://api.sendgrid.com/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert_key_only_in(request, "Authorization")
    assert request.content.count(b"LONG-SHARED-HTML-BODY") == 1  # the edition travels once
    assert request.content.count(b"LONG-SHARED-TEXT-BODY") == 1
    body = json.loads(request.content)
    assert body["from"] == {"email": "report@example.org", "name": "The Test Report"}
    assert body["reply_to"] == {"email": "editor@example.org"}
    assert body["headers"] == {"List-Id": batch.mail.list_id}
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
    run(_send(SendGridProvider(settings, server.client(), policy=policy), batch))
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
    exc = failure(_send(SendGridProvider(settings, server.client(), policy=policy), make_batch(settings)),
                  ProviderRejected)
    assert "verified Sender Identity. (from)" in str(exc)


def test_sendgrid_429_with_rate_limit_reset(sleeps: Sleeps) -> None:
    settings = make_settings("sendgrid")
    policy = RetryPolicy(max_retries=1, sleep=sleeps)
    server = Server(httpx.Response(429, headers={"X-RateLimit-Reset": "4"}), httpx.Response(202))
    outcomes = run(_send(SendGridProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert sleeps == [4] and len(server.requests) == 2
    assert [o.status for o in outcomes] == ["sent", "sent"]


# ---------------------------------------------------------------- Mailgun


def test_mailgun_request(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org")
    batch = make_batch(settings, 4)
    server = Server(ok_json({"id": "<20240301.1@mg.example.org>", "message": "Queued. Thank you."}))
    outcomes = run(_send(MailgunProvider(settings, server.client(), policy=policy), batch))
    [request] = server.requests
    assert str(request.url) == "https://api.mailgun.net/v3/mg.example.org/messages"
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    assert_key_only_in(request, "Authorization")
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(request)
    values = dict(fields)  # the last of a repeated name
    to = [value for name, value in fields if name == "to"]
    assert len(to) == 4 and all(p.email in t for t, p in zip(to, batch.recipients, strict=True))
    assert [name for name, _ in fields].count("html") == 1 and [name for name, _ in fields].count("text") == 1
    assert values["from"] == "The Test Report <report@example.org>" and values["subject"] == batch.mail.subject
    assert values["h:Reply-To"] == "editor@example.org"
    assert values["h:List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert values["h:List-Id"] == batch.mail.list_id
    assert values["v:send"] == "42" and values["v:delivery"] == "%recipient.delivery%"
    variables = json.loads(values["recipient-variables"])
    assert sorted(variables) == sorted(p.email for p in batch.recipients)
    for person in batch.recipients:
        mine = variables[person.email]

        def fill(text: str, mine: dict[str, str] = mine) -> str:
            return re.sub(r"%recipient\.(\w+)%", lambda m: mine[m[1]], text)

        assert (fill(values["html"]), fill(values["text"])) == personalise(batch.mail, person)
        assert fill(values["h:List-Unsubscribe"]) == person.headers["List-Unsubscribe"]
        assert person.values["unsubscribe_url"] in fill(values["h:List-Unsubscribe"])
        assert fill(values["v:delivery"]) == str(person.delivery_id)
    assert [(o.status, o.provider_message_id) for o in outcomes] == [("sent", "20240301.1@mg.example.org")] * 4


def test_mailgun_eu_region(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org", region="eu")
    server = Server(ok_json({"id": "<x@mg>", "message": "Queued."}))
    run(_send(MailgunProvider(settings, server.client(), policy=policy), make_batch(settings, 1)))
    assert str(server.requests[0].url) == "https://api.eu.mailgun.net/v3/mg.example.org/messages"


def test_mailgun_sends_the_same_address_twice_in_separate_requests(policy: RetryPolicy) -> None:
    settings = make_settings("mailgun", domain="mg.example.org")
    batch = make_batch(settings, 3)
    twin = Recipient(delivery_id=999, email=batch.recipients[0].email.upper(), name="Twin",
                     values=batch.recipients[0].values, headers=batch.recipients[0].headers)
    batch = Batch(id=batch.id, mail=batch.mail, recipients=(*batch.recipients, twin))
    server = Server(ok_json({"id": "<x@mg>", "message": "Queued."}))
    outcomes = run(_send(MailgunProvider(settings, server.client(), policy=policy), batch))
    assert [len([v for n, v in form_fields(r) if n == "to"]) for r in server.requests] == [3, 1]
    assert sorted(o.delivery_id for o in outcomes) == [100, 101, 102, 999]


# ---------------------------------------------------------------- Resend


def test_resend_request(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    batch = make_batch(settings, 4, batch_id="5f0c")
    server = Server(resend_ok)
    outcomes = run(_send(ResendProvider(settings, server.client(), policy=policy), batch))
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
    outcomes = run(_send(provider, make_batch(settings, 3, batch_id="b-77")))
    assert [r.headers["Idempotency-Key"] for r in server.requests] == ["b-77", "b-77"]
    assert server.requests[0].content == server.requests[1].content
    assert [o.status for o in outcomes] == ["sent"] * 3


def test_resend_waits_while_the_same_key_is_in_progress(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    busy = ok_json({"statusCode": 409, "name": "concurrent_idempotent_requests", "message": "in progress"}, 409)
    server = Server(httpx.ReadTimeout("timed out"), busy, resend_ok)
    outcomes = run(_send(ResendProvider(settings, server.client(), policy=policy), make_batch(settings, 2)))
    assert len(server.requests) == 3 and [o.status for o in outcomes] == ["sent", "sent"]


def test_resend_splits_over_100_with_distinct_keys(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    server = Server(resend_ok)
    outcomes = run(_send(ResendProvider(settings, server.client(), policy=policy),
                         make_batch(settings, 150, batch_id="big")))
    assert [(r.headers["Idempotency-Key"], len(json.loads(r.content))) for r in server.requests] == [
        ("big", 100), ("big.1", 50)]
    assert len(outcomes) == 150


def test_resend_422_and_401(policy: RetryPolicy) -> None:
    settings = make_settings("resend")
    invalid = Server(ok_json({"statusCode": 422, "name": "validation_error", "message": "Invalid `to` field."}, 422))
    exc = failure(_send(ResendProvider(settings, invalid.client(), policy=policy), make_batch(settings)),
                  ProviderRejected)
    assert "Invalid `to` field." in str(exc) and len(invalid.requests) == 1
    refused = Server(ok_json({"statusCode": 401, "name": "missing_api_key", "message": "Missing API key"}, 401))
    exc = failure(_send(ResendProvider(settings, refused.client(), policy=policy), make_batch(settings)),
                  ProviderAuthError)
    assert KEY_ENV in str(exc) and len(refused.requests) == 1


def test_an_empty_batch_makes_no_request(policy: RetryPolicy) -> None:
    for name, cls in (("postmark", PostmarkProvider), ("sendgrid", SendGridProvider), ("resend", ResendProvider),
                      ("mailgun", MailgunProvider)):
        settings = make_settings(name, domain="mg.example.org")
        server = Server(ok_json({}))
        batch = make_batch(settings, 0)
        assert run(_send(cls(settings, server.client(), policy=policy), batch)) == []
        assert server.requests == []
