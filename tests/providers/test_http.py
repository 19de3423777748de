"""The shared HTTP half: one POST with retries and errors, the client, the registry."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from pipeline.errors import (
    ConfigError,
    ProviderAmbiguous,
    ProviderAuthError,
    ProviderRejected,
    ProviderUnavailable,
)
from pipeline.providers import PROVIDERS, make_provider
from pipeline.providers.http import USER_AGENT, ApiKey, RetryPolicy, make_client, post, wait_from_headers
from pipeline.providers.mailgun import MailgunProvider
from pipeline.providers.postmark import PostmarkProvider
from pipeline.providers.resend import ResendProvider
from pipeline.providers.sendgrid import SendGridProvider

from .conftest import (
    KEY,
    KEY_ENV,
    Server,
    Sleeps,
    failure,
    make_batch,
    make_settings,
    ok_json,
    run,
    send_batch,
)

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




def test_an_empty_batch_makes_no_request(policy: RetryPolicy) -> None:
    for name, cls in (("postmark", PostmarkProvider), ("sendgrid", SendGridProvider), ("resend", ResendProvider),
                      ("mailgun", MailgunProvider)):
        settings = make_settings(name, domain="mg.example.org")
        server = Server(ok_json({}))
        batch = make_batch(settings, 0)
        assert run(send_batch(cls(settings, server.client(), policy=policy), batch)) == []
        assert server.requests == []
