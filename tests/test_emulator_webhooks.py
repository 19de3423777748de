"""The emulator's webhooks against a small receiver on a loopback port: signed as each provider signs,
retried when refused, batched for SendGrid, and every outcome recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from pipeline.cli import main
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.webhooks import WebhookPlan
from pipeline.webhooks import events, signatures

KEY = "emulator-key"


class Receiver(ThreadingHTTPServer):
    """Keeps every request; refuses the first ``refuse`` with 503."""

    def __init__(self, refuse: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.refuse = refuse
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        server: Receiver = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with server.lock:
            refused = server.refuse > 0
            server.refuse -= 1
            if not refused:
                server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(503 if refused else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    server = Receiver(getattr(request, "param", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _sendgrid_mail(count: int) -> dict[str, Any]:
    return {"personalizations": [{"to": [{"email": f"r{n}@example.net"}], "custom_args": {"delivery": str(n + 1)}}
                                 for n in range(count)],
            "from": {"email": "report@example.org"}, "subject": "Hi", "custom_args": {"send": "7"},
            "content": [{"type": "text/plain", "value": "Hi"}]}


def test_sendgrid_events_come_signed_in_batches_with_our_ids(receiver: Receiver) -> None:
    plan = WebhookPlan(url=receiver.url, bounce_rate=0.2, complaint_rate=0.1, seed=3)
    with run_emulator_in_thread(webhooks=plan) as emulator:
        response = httpx.post(f"{emulator.url}/v3/mail/send", json=_sendgrid_mail(1000),
                              headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 202
        assert emulator.wait_for_webhooks(timeout=30)["posted"] == len(receiver.requests)
        keys, outcomes = emulator.webhooks.keys, emulator.webhook_outcomes()
    public = signatures.sendgrid_public_key(keys.sendgrid_public_key)
    posted = []
    for path, headers, body in receiver.requests:
        assert path == "/webhooks/sendgrid"
        signatures.check_sendgrid(body, httpx.Headers(headers), public_key=public, tolerance=300)
        batch = events.sendgrid(json.loads(body))
        assert len(batch) <= 1000
        posted += batch
    complaints = {outcome.email for outcome in outcomes if outcome.kind == "complained"}
    assert len(posted) == 1000 + len(complaints)  # a complaint follows its delivery
    assert {event.email for event in posted if event.kind == "bounced"} == \
        {outcome.email for outcome in outcomes if outcome.kind == "bounced"}
    assert {event.email for event in posted if event.kind == "complained"} == complaints
    assert all(event.send_label == "7" and event.delivery_id for event in posted)
    assert {event.provider_message_id for event in posted} == {response.headers["X-Message-Id"]}


@pytest.mark.parametrize("receiver", [2], indirect=True)
def test_a_refused_post_is_tried_again(receiver: Receiver) -> None:
    plan = WebhookPlan(url=receiver.url, seed=1, retry_delay_s=0.01)
    with run_emulator_in_thread(webhooks=plan) as emulator:
        message = {"From": "report@example.org", "To": "a@example.net", "Subject": "Hi", "TextBody": "Hi",
                   "Metadata": {"send": "1", "delivery": "9"}}
        assert httpx.post(f"{emulator.url}/email/batch", json=[message],
                          headers={"X-Postmark-Server-Token": KEY}).status_code == 200
        summary = emulator.wait_for_webhooks(timeout=30)
        keys = emulator.webhooks.keys
        listed = httpx.get(f"{emulator.url}/_emulator/webhooks").json()
    assert (summary["posted"], summary["retried"], summary["given_up"]) == (1, 2, 0)
    ((path, headers, body),) = receiver.requests
    signatures.check_postmark(headers["authorization"], user=keys.postmark_user, password=keys.postmark_password)
    (event,) = events.postmark(json.loads(body))
    assert (event.kind, event.email, event.delivery_id, event.send_label) == ("delivered", "a@example.net", 9, "1")
    assert listed["events"] == [{"provider": "postmark", "email": "a@example.net", "kind": "delivered",
                                 "message_id": event.provider_message_id, "delivery": "9"}]
    assert listed["environment"]["POSTMARK_WEBHOOK_PASSWORD"] == keys.postmark_password


def test_the_command_refuses_rates_over_one(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["emulator", "--webhook-url", "http://127.0.0.1:1/webhooks", "--bounce-rate", "0.7",
                 "--complaint-rate", "0.5"])
    assert code == 2
    assert "add up to at most 1" in capsys.readouterr().err
