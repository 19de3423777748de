"""Shared by the tests of the HTTP providers at the unit's edge: settings, batches, a scripted server.

Every request goes to an ``httpx.MockTransport``; no provider host is contacted.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from pipeline import messages
from pipeline.config import Settings
from pipeline.errors import ProviderError
from pipeline.mail import Batch, Mail
from pipeline.providers.http import RetryPolicy

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
                reply_to=settings.publication.reply_to,
                list_headers=messages.list_headers(settings, label="42", edition="march"))
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
    fields = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        fields.append((str(part.get_param("name", header="content-disposition")), payload.decode()))
    return fields


async def send_batch(provider: Any, batch: Batch) -> list[Any]:
    try:
        return await provider.send(batch)
    finally:
        await provider.aclose()
