"""The provider emulator: a real server on a loopback port, spoken to with a real httpx client."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.cli.emulator import add_commands as add_emulator_command
from pipeline.cli.emulator import instructions
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.server import EmulatorHandle

KEY = "emulator-key"
POSTMARK = {"X-Postmark-Server-Token": KEY}
BEARER = {"Authorization": f"Bearer {KEY}"}
UNSUBSCRIBE = {"List-Unsubscribe": "<https://news.example.org/u/abc>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorHandle]:
    with run_emulator_in_thread() as handle:
        yield handle


@pytest.fixture
def client(server: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/_emulator/reset").status_code == 200
        yield http


def messages(client: httpx.Client, **filters: Any) -> list[dict[str, Any]]:
    response = client.get("/_emulator/messages", params=filters)
    assert response.status_code == 200
    return response.json()["messages"]


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def mailgun_post(client: httpx.Client, fields: list[tuple[str, str]], headers: dict[str, str] | None = None,
                 domain: str = "mg.example.org") -> httpx.Response:
    """A multipart/form-data post, as Mailgun requires (httpx sends multipart when files are given)."""
    files = [(name, (None, value)) for name, value in fields]
    return client.post(f"/v3/{domain}/messages", files=files, headers=basic("api", KEY) if headers is None else headers)


# -- what a benchmark reads ---------------------------------------------------------------------------------------

def bodies_after(client: httpx.Client, *batches: list[dict[str, Any]]) -> dict[str, Any]:
    assert client.post("/_emulator/reset").status_code == 200
    for batch in batches:
        assert client.post("/email/batch", json=batch, headers=POSTMARK).status_code == 200
    return client.get("/_emulator/stats").json()


def test_stats_keep_the_sending_phase_and_a_digest_of_the_bodies_in_any_order(client: httpx.Client) -> None:
    first, second = [postmark_message("a@example.net")], [postmark_message("b@example.net")]
    stats = bodies_after(client, first, second)
    phase = stats["sending"]
    assert phase["first_request"] <= phase["last_answer"] and phase["seconds"] >= 0
    assert stats["bodies"]["count"] == 2
    assert bodies_after(client, second, first)["bodies"] == stats["bodies"]  # concurrent requests arrive in any order
    assert bodies_after(client, first, first)["bodies"] != stats["bodies"]
    assert client.post("/_emulator/reset").status_code == 200
    assert client.get("/_emulator/stats").json()["sending"] == {"first_request": None, "last_answer": None,
                                                                "seconds": None}


def test_a_multipart_boundary_does_not_change_the_digest(client: httpx.Client) -> None:
    fields = [("from", "Report <report@example.org>"), ("to", "a@example.net"), ("subject", "Issue 7"),
              ("text", "Hi")]
    digests = []
    for _ in range(2):  # httpx draws a new boundary for each request
        assert client.post("/_emulator/reset").status_code == 200
        assert mailgun_post(client, fields).status_code == 200
        digests.append(client.get("/_emulator/stats").json()["bodies"])
    assert digests[0] == digests[1] and digests[0]["count"] == 1


# -- Postmark ----------------------------------------------------------------------------------------------------

def postmark_message(to: str, **extra: Any) -> dict[str, Any]:
    return {"From": "Report <report@example.org>", "To": to, "Subject": "Issue 7", "HtmlBody": f"<p>Hi {to}</p>",
            "TextBody": f"Hi {to}", "MessageStream": "broadcast", "Metadata": {"delivery": "1"},
            "Headers": [{"Name": name, "Value": value} for name, value in UNSUBSCRIBE.items()], **extra}


def test_postmark_batch_is_accepted_and_recorded_per_recipient(client: httpx.Client) -> None:
    batch = [postmark_message("a@example.net"), postmark_message("b@example.net, Cee <c@example.net>")]
    response = client.post("/email/batch", json=batch, headers=POSTMARK)
    assert response.status_code == 200
    results = response.json()
    assert [result["To"] for result in results] == ["a@example.net", "b@example.net, Cee <c@example.net>"]
    assert all(result["ErrorCode"] == 0 and result["Message"] == "OK" and result["MessageID"] and
               result["SubmittedAt"] for result in results)
    recorded = messages(client, provider="postmark")
    assert [record["to"] for record in recorded] == ["a@example.net", "b@example.net", "c@example.net"]
    first = recorded[0]
    assert first["id"] == results[0]["MessageID"]
    assert first["from"] == "Report <report@example.org>"
    assert first["html"] == "<p>Hi a@example.net</p>" and first["text"] == "Hi a@example.net"
    assert first["headers"] == UNSUBSCRIBE
    assert first["metadata"] == {"delivery": "1"}
    assert first["options"]["MessageStream"] == "broadcast"
    assert recorded[1]["visible_to"] == ["b@example.net", "c@example.net"]


@pytest.mark.parametrize(("headers", "fragment"), [({}, "No Account or Server API tokens"),
                                                   ({"X-Postmark-Server-Token": "wrong"}, "was invalid")])
def test_postmark_refuses_a_missing_or_wrong_token(client: httpx.Client, headers: dict[str, str],
                                                   fragment: str) -> None:
    response = client.post("/email/batch", json=[postmark_message("a@example.net")], headers=headers)
    assert response.status_code == 401
    assert response.json()["ErrorCode"] == 10 and fragment in response.json()["Message"]
    assert messages(client) == []


def test_postmark_refuses_more_than_500_messages(client: httpx.Client) -> None:
    batch = [postmark_message(f"r{n}@example.net") for n in range(501)]
    response = client.post("/email/batch", json=batch, headers=POSTMARK)
    assert response.status_code == 422
    assert response.json()["ErrorCode"] == 410
    assert messages(client) == []


def test_postmark_reports_invalid_and_inactive_messages_one_by_one(client: httpx.Client) -> None:
    assert client.post("/_emulator/faults", json={"inactive": ["Gone@example.net"]}).status_code == 200
    no_sender = postmark_message("b@example.net")
    del no_sender["From"]
    batch = [postmark_message("a@example.net"), no_sender, postmark_message("gone@example.net"),
             postmark_message("d@example.net", HtmlBody=None, TextBody="")]
    response = client.post("/email/batch", json=batch, headers=POSTMARK)
    assert response.status_code == 200
    codes = [result["ErrorCode"] for result in response.json()]
    assert codes == [0, 300, 406, 300]
    assert "From" in response.json()[1]["Message"]
    assert "marked as inactive" in response.json()[2]["Message"]
    assert "TextBody or HtmlBody" in response.json()[3]["Message"]
    assert [record["to"] for record in messages(client)] == ["a@example.net"]


def test_postmark_rejects_a_body_that_is_not_a_message_array(client: httpx.Client) -> None:
    response = client.post("/email/batch", content=b"{not json", headers=POSTMARK)
    assert response.status_code == 422 and response.json()["ErrorCode"] == 402


# -- SendGrid ----------------------------------------------------------------------------------------------------

def sendgrid_mail(count: int = 2) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": f"r{n}@example.net", "name": f"Reader {n}"}],
                              "substitutions": {"-name-": f"Reader {n}", "-url-": f"https://x.example/u/{n}"},
                              "headers": {"List-Unsubscribe": f"<https://x.example/u/{n}>"},
                              "custom_args": {"delivery": str(n)}} for n in range(count)],
        "from": {"email": "report@example.org", "name": "Report"},
        "subject": "Hello -name-",
        "content": [{"type": "text/plain", "value": "Dear -name-, leave: -url-"},
                    {"type": "text/html", "value": "<p>Dear -name-</p><a href=\"-url-\">leave</a>"}],
        "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "custom_args": {"send": "7"},
    }


def test_sendgrid_mail_is_accepted_and_substituted_per_personalization(client: httpx.Client) -> None:
    response = client.post("/v3/mail/send", json=sendgrid_mail(3), headers=BEARER)
    assert response.status_code == 202
    assert response.content == b""
    message_id = response.headers["X-Message-Id"]
    recorded = messages(client, provider="sendgrid")
    assert [record["to"] for record in recorded] == ["r0@example.net", "r1@example.net", "r2@example.net"]
    second = recorded[1]
    assert second["id"] == message_id
    assert second["from"] == "Report <report@example.org>"
    assert second["subject"] == "Hello Reader 1"
    assert second["text"] == "Dear Reader 1, leave: https://x.example/u/1"
    assert second["html"] == '<p>Dear Reader 1</p><a href="https://x.example/u/1">leave</a>'
    assert second["headers"] == {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                                 "List-Unsubscribe": "<https://x.example/u/1>"}
    assert second["metadata"] == {"send": "7", "delivery": "1"}
    assert second["visible_to"] == ["r1@example.net"]


@pytest.mark.parametrize(("headers", "fragment"), [({}, "authorization required"),
                                                   ({"Authorization": "Bearer wrong"}, "invalid")])
def test_sendgrid_refuses_a_missing_or_wrong_key(client: httpx.Client, headers: dict[str, str],
                                                 fragment: str) -> None:
    response = client.post("/v3/mail/send", json=sendgrid_mail(), headers=headers)
    assert response.status_code == 401
    assert fragment in response.json()["errors"][0]["message"]


def test_sendgrid_refuses_more_than_1000_personalizations(client: httpx.Client) -> None:
    response = client.post("/v3/mail/send", json=sendgrid_mail(1001), headers=BEARER)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "personalizations"
    assert messages(client) == []


@pytest.mark.parametrize(("change", "field"), [
    (lambda mail: mail.pop("from"), "from"),
    (lambda mail: mail["personalizations"][0]["to"][0].update(email="no-at-sign"), "personalizations.0.to.0.email"),
    (lambda mail: mail["personalizations"][1].update(to=[]), "personalizations.1.to"),
    (lambda mail: mail.pop("content"), "content"),
    (lambda mail: mail["content"].reverse(), "content"),
    (lambda mail: mail["headers"].update({"Subject": "x"}), "headers"),
])
def test_sendgrid_names_the_invalid_field(client: httpx.Client, change: Any, field: str) -> None:
    mail = sendgrid_mail()
    change(mail)
    response = client.post("/v3/mail/send", json=mail, headers=BEARER)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["field"] == field and error["message"] and "help" in error


def test_sendgrid_sandbox_mode_validates_and_records_nothing(client: httpx.Client) -> None:
    mail = sendgrid_mail() | {"mail_settings": {"sandbox_mode": {"enable": True}}}
    assert client.post("/v3/mail/send", json=mail, headers=BEARER).status_code == 200
    assert messages(client) == []


# -- Mailgun -----------------------------------------------------------------------------------------------------

def mailgun_fields(count: int = 3, variables: bool = True) -> list[tuple[str, str]]:
    people = [f"r{n}@example.net" for n in range(count)]
    fields = [("from", "Report <report@example.org>"), ("subject", "Hello %recipient.name%")]
    fields += [("to", f"Reader {n} <{address}>") for n, address in enumerate(people)]
    fields += [("text", "Dear %recipient.name%"), ("html", "<p>Dear %recipient.name%</p>"),
               ("h:List-Unsubscribe", "<%recipient.url%>"), ("h:List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
               ("v:send", "7"), ("v:delivery", "%recipient.delivery%"), ("o:tracking", "no")]
    if variables:
        values = {address: {"name": f"Reader {n}", "url": f"https://x.example/u/{n}", "delivery": n}
                  for n, address in enumerate(people)}
        fields.append(("recipient-variables", json.dumps(values)))
    return fields


def test_mailgun_batch_is_accepted_and_each_recipient_gets_their_own_message(client: httpx.Client) -> None:
    response = mailgun_post(client, mailgun_fields(3))
    assert response.status_code == 200
    answer = response.json()
    assert answer["message"] == "Queued. Thank you."
    assert answer["id"].startswith("<") and answer["id"].endswith("@mg.example.org>")
    recorded = messages(client, provider="mailgun")
    assert [record["to"] for record in recorded] == ["r0@example.net", "r1@example.net", "r2@example.net"]
    third = recorded[2]
    assert third["id"] == answer["id"]
    assert third["subject"] == "Hello Reader 2"
    assert third["text"] == "Dear Reader 2" and third["html"] == "<p>Dear Reader 2</p>"
    assert third["headers"] == {"List-Unsubscribe": "<https://x.example/u/2>",
                                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert third["metadata"] == {"send": "7", "delivery": "2"}
    assert third["options"] == {"o:tracking": "no"}
    assert third["visible_to"] == ["r2@example.net"]  # recipients never see each other


def test_mailgun_without_recipient_variables_sends_one_message_to_all(client: httpx.Client) -> None:
    assert mailgun_post(client, mailgun_fields(2, variables=False)).status_code == 200
    recorded = messages(client)
    assert [record["visible_to"] for record in recorded] == [["r0@example.net", "r1@example.net"]] * 2
    assert recorded[0]["subject"] == "Hello %recipient.name%"


@pytest.mark.parametrize("headers", [{}, basic("api", "wrong"), basic("user", KEY)])
def test_mailgun_refuses_a_missing_or_wrong_key(client: httpx.Client, headers: dict[str, str]) -> None:
    response = mailgun_post(client, mailgun_fields(1), headers=headers)
    assert response.status_code == 401
    assert response.text == "Forbidden"


def test_mailgun_refuses_more_than_1000_recipients(client: httpx.Client) -> None:
    response = mailgun_post(client, mailgun_fields(1001))
    assert response.status_code == 400
    assert response.json() == {"message": "Too many recipients, max is 1000"}
    assert messages(client) == []


@pytest.mark.parametrize(("drop", "fragment"), [("from", "from parameter is missing"),
                                                ("to", "to parameter is missing"),
                                                ("html text", "Need at least one of")])
def test_mailgun_names_the_missing_parameter(client: httpx.Client, drop: str, fragment: str) -> None:
    fields = [(name, value) for name, value in mailgun_fields(1) if name not in drop.split()]
    response = mailgun_post(client, fields)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


# -- Resend ------------------------------------------------------------------------------------------------------

def resend_email(to: str, **extra: Any) -> dict[str, Any]:
    return {"from": "Report <report@example.org>", "to": [to], "subject": "Issue 7", "html": "<p>Hi</p>",
            "text": "Hi", "headers": UNSUBSCRIBE, "tags": [{"name": "delivery", "value": "1"}], **extra}


def test_resend_batch_is_accepted_and_recorded(client: httpx.Client) -> None:
    response = client.post("/emails/batch", json=[resend_email("a@example.net"), resend_email("b@example.net")],
                           headers=BEARER)
    assert response.status_code == 200
    ids = [item["id"] for item in response.json()["data"]]
    recorded = messages(client, provider="resend")
    assert [(record["to"], record["id"]) for record in recorded] == list(zip(["a@example.net", "b@example.net"], ids,
                                                                              strict=True))
    assert recorded[0]["headers"] == UNSUBSCRIBE and recorded[0]["metadata"] == {"delivery": "1"}


@pytest.mark.parametrize(("headers", "status", "name"), [({}, 401, "missing_api_key"),
                                                         ({"Authorization": "Bearer wrong"}, 403, "invalid_api_key")])
def test_resend_refuses_a_missing_or_wrong_key(client: httpx.Client, headers: dict[str, str], status: int,
                                               name: str) -> None:
    response = client.post("/emails/batch", json=[resend_email("a@example.net")], headers=headers)
    assert response.status_code == status
    assert response.json()["statusCode"] == status and response.json()["name"] == name


def test_resend_refuses_more_than_100_emails(client: httpx.Client) -> None:
    batch = [resend_email(f"r{n}@example.net") for n in range(101)]
    response = client.post("/emails/batch", json=batch, headers=BEARER)
    assert response.status_code == 422 and response.json()["name"] == "validation_error"
    assert messages(client) == []


def test_resend_names_the_missing_field(client: httpx.Client) -> None:
    missing_to = resend_email("b@example.net")
    del missing_to["to"]
    response = client.post("/emails/batch", json=[resend_email("a@example.net"), missing_to], headers=BEARER)
    assert response.status_code == 422
    assert response.json()["name"] == "missing_required_field"
    assert "`to`" in response.json()["message"] and "email 1" in response.json()["message"]
    assert messages(client) == []


def test_resend_idempotency_key_replays_the_first_answer(client: httpx.Client) -> None:
    batch = [resend_email("a@example.net")]
    headers = BEARER | {"Idempotency-Key": "send-7/batch-1"}
    first = client.post("/emails/batch", json=batch, headers=headers)
    again = client.post("/emails/batch", json=batch, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert len(messages(client)) == 1
    other = client.post("/emails/batch", json=[resend_email("z@example.net")], headers=headers)
    assert other.status_code == 409 and other.json()["name"] == "invalid_idempotent_request"
    assert client.get("/_emulator/stats").json()["idempotent_replays"] == 1


# -- faults ------------------------------------------------------------------------------------------------------

def statuses(client: httpx.Client, count: int) -> list[tuple[int, str | None]]:
    answers = [client.post("/email/batch", json=[postmark_message("a@example.net")], headers=POSTMARK)
               for _ in range(count)]
    return [(answer.status_code, answer.headers.get("Retry-After")) for answer in answers]


def test_seeded_faults_repeat_after_a_reset(client: httpx.Client) -> None:
    plan = {"seed": 42, "error_rates": {"500": 0.3, "503": 0.2}, "rate_limit": {"rate": 0.2, "retry_after": 0}}
    runs = []
    for _ in range(2):
        client.post("/_emulator/reset")
        assert client.post("/_emulator/faults", json=plan).status_code == 200
        runs.append(statuses(client, 30))
    assert runs[0] == runs[1]
    assert {status for status, _ in runs[0]} == {200, 429, 500, 503}
    assert all(retry == "0" for status, retry in runs[0] if status == 429)
    stats = client.get("/_emulator/stats").json()
    assert stats["total_messages"] == sum(status == 200 for status, _ in runs[1])
    assert sum(stats["faults_injected"].values()) == sum(status != 200 for status, _ in runs[1])


def test_a_late_answer_is_recorded_although_the_client_gave_up(client: httpx.Client) -> None:
    client.post("/_emulator/faults", json={"late": {"rate": 1, "delay_s": 1}})
    with pytest.raises(httpx.ReadTimeout):
        client.post("/emails/batch", json=[resend_email("a@example.net")], headers=BEARER, timeout=0.2)
    assert [record["to"] for record in messages(client)] == ["a@example.net"]
    assert client.get("/_emulator/stats").json()["faults_injected"] == {"late": 1}


def test_a_dropped_connection_records_nothing(client: httpx.Client) -> None:
    client.post("/_emulator/faults", json={"drop_rate": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/v3/mail/send", json=sendgrid_mail(), headers=BEARER)
    assert messages(client) == []  # the control API is never faulted
    assert client.get("/_emulator/stats").json()["faults_injected"] == {"drop": 1}


def test_fault_plans_are_checked_and_shown(client: httpx.Client) -> None:
    assert client.post("/_emulator/faults", json={"error_rates": {"500": 0.7}, "drop_rate": 0.5}).status_code == 400
    assert client.post("/_emulator/faults", json={"error_rates": {"200": 0.1}}).status_code == 400
    assert client.post("/_emulator/faults", json={"surprise": 1}).status_code == 400
    plan = {"seed": 3, "error_rates": {"503": 0.25}, "latency_ms": 1, "inactive": ["x@example.net"]}
    assert client.post("/_emulator/faults", json=plan).status_code == 200
    shown = client.get("/_emulator/faults").json()
    assert shown["seed"] == 3 and shown["error_rates"] == {"503": 0.25} and shown["inactive"] == ["x@example.net"]
    client.post("/_emulator/reset")
    assert client.get("/_emulator/faults").json()["error_rates"] == {}


# -- control API and helpers -------------------------------------------------------------------------------------

def test_messages_filter_by_provider_recipient_and_batch(client: httpx.Client, server: EmulatorHandle) -> None:
    client.post("/email/batch", json=[postmark_message("a@example.net"), postmark_message("b@example.net")],
                headers=POSTMARK)
    client.post("/emails/batch", json=[resend_email("A@example.net")], headers=BEARER)
    assert len(messages(client)) == 3
    assert [record["provider"] for record in messages(client, to="a@example.net")] == ["postmark", "resend"]
    assert [record["to"] for record in messages(client, batch=1)] == ["a@example.net", "b@example.net"]
    assert [record["to"] for record in messages(client, provider="postmark", offset=1, limit=1)] == ["b@example.net"]
    assert client.get("/_emulator/messages", params={"provider": "smtp"}).status_code == 400
    assert client.get("/_emulator/messages", params={"limit": "many"}).status_code == 400
    assert [record["to"] for record in server.messages(provider="resend")] == ["A@example.net"]
    assert server.stats()["messages"] == {"postmark": 2, "sendgrid": 0, "mailgun": 0, "resend": 1}


def test_keys_can_be_chosen_per_provider() -> None:
    with run_emulator_in_thread(keys={"postmark": "server-token"}) as other, httpx.Client(base_url=other.url) as http:
        assert other.url.startswith("http://127.0.0.1:") and not other.url.endswith(":0")
        batch = [postmark_message("a@example.net")]
        assert http.post("/email/batch", json=batch, headers=POSTMARK).status_code == 401
        assert http.post("/email/batch", json=batch, headers={"X-Postmark-Server-Token": "server-token"}).is_success
        assert http.post("/emails/batch", json=[resend_email("a@example.net")], headers=BEARER).is_success


def test_the_command_is_registered_with_help() -> None:
    parser = argparse.ArgumentParser()
    add_emulator_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["emulator", "--port", "0", "--seed", "5", "--key", "postmark=abc"])
    assert (args.port, args.seed, args.key) == (0, 5, [("postmark", "abc")])
    with pytest.raises(SystemExit):
        parser.parse_args(["emulator", "--key", "smtp=abc"])
    text = instructions("http://127.0.0.1:8750", {"postmark": "abc"}, "postmark")
    assert 'base_url = "http://127.0.0.1:8750"' in text and "abc" not in text


def test_a_client_gone_mid_request_is_one_log_line_and_nothing_recorded(
        server: EmulatorHandle, client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    """A sender killed while its request is on the wire: the emulator records nothing and logs no traceback."""
    caplog.set_level(logging.INFO)
    where = urlsplit(server.url)
    with socket.create_connection((where.hostname or "127.0.0.1", where.port or 80)) as raw:
        raw.sendall(b"POST /email/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"X-Postmark-Server-Token: " + KEY.encode() + b"\r\nContent-Length: 100000\r\n\r\n[{\"From\"")
    for _ in range(200):  # the server hears of the closed connection a moment later
        if any("went away" in record.getMessage() for record in caplog.records):
            break
        time.sleep(0.01)
    assert [record.getMessage() for record in caplog.records if record.name == "newsletter.emulator"] == [
        "postmark: the client went away before its request had arrived; nothing recorded"]
    assert not [record for record in caplog.records if record.exc_info]
    assert client.get("/_emulator/stats").json()["messages"].get("postmark", 0) == 0
