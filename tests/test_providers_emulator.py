"""The HTTP providers against the real emulator on a loopback port: a whole send, exactly once.

The contract every provider keeps (README, "Sending, exactly once"): each audience member reaches
the provider once, with their own unsubscribe link and the RFC 8058 headers, in requests within
the provider's limits; the delivery log says what happened to each of them, and equals what the
emulator recorded row for row; the API key travels only in its header and is never logged.
Faults are injected by the emulator from a seeded plan, so every run sees the same faults.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from pipeline import send
from pipeline.config import Settings
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.server import EmulatorHandle
from pipeline.messages import read_unsubscribe_token
from pipeline.store import Store
from pipeline.store.tables import deliveries, suppressions

from .conftest import SAMPLE
from .test_send import _audience, _edition, _many, _start

KEY = "emu-Kq7v-2f9c-secret"  # distinctive: finding it anywhere but in its header is a leak
KEY_VARIABLES = {"postmark": "POSTMARK_SERVER_TOKEN", "sendgrid": "SENDGRID_API_KEY",
                 "mailgun": "MAILGUN_API_KEY", "resend": "RESEND_API_KEY"}
REQUEST_LIMITS = {"postmark": 500, "sendgrid": 1000, "mailgun": 1000, "resend": 100}
AUDIENCE = 2500
# 25 batches of 100. With seed 21 the emulator's draws make the 1st and the 30th request late
# (seeds 1, 6 and 8 would inject no late answer at all, and the fault tests would prove nothing).
SEED = 21
FAULTS = {"seed": SEED, "error_rates": {"500": 0.1}, "rate_limit": {"rate": 0.05, "retry_after": 1},
          "late": {"rate": 0.02, "delay_s": 2.5}}


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    """The emulator, accepting only KEY and only in each provider's own auth header: an accepted send proves
    the key travelled there (``test_a_refused_key...`` shows that another key is refused)."""
    with run_emulator_in_thread(keys=dict.fromkeys(KEY_VARIABLES, KEY)) as handle:
        yield handle


def _for(settings: Settings, name: str, url: str, *, key: str = KEY, **provider: Any) -> Settings:
    """Settings that send through ``name`` at ``url`` with ``key``; create and run a send with the same ones."""
    changes = {"name": name, "base_url": url, "api_key_env": KEY_VARIABLES[name],
               "domain": "mg.example.org" if name == "mailgun" else None, **provider}
    return settings.model_copy(update={"provider": settings.provider.model_copy(update=changes),
                                       "provider_secret": SecretStr(key)})


def _send(store: Store, settings: Settings, project: Path, audience: int) -> send.SendSummary:
    _audience(store, project, _many(audience))
    return asyncio.run(send.run_send(store, settings, _start(store, settings, _edition(project, settings))))


def _rows(store: Store, send_id: int) -> list[Any]:
    """The delivery log of a send, as stored."""
    with store.read() as connection:
        return list(connection.execute(
            select(deliveries.c.email, deliveries.c.subscriber_id, deliveries.c.status, deliveries.c.error_class,
                   deliveries.c.error_text, deliveries.c.provider_message_id)
            .where(deliveries.c.send_id == send_id).order_by(deliveries.c.id)))


def _by_recipient(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        found[record["to"].lower()].append(record)
    return found


def _assert_log_equals_emulator(rows: list[Any], records: list[dict[str, Any]]) -> None:
    """Every ``sent`` row has exactly one record, with its message id; every ``uncertain`` row at most one;
    every ``failed`` row none (``--retry-failed`` sends it again); no other status; no record lacks a row.

    The id is the record's own (Postmark and Resend: per message) or its request's (SendGrid's
    X-Message-Id, Mailgun's id, which the log keeps without its angle brackets)."""
    received = _by_recipient(records)
    assert len({row.email.lower() for row in rows}) == len(rows)
    assert set(received) <= {row.email.lower() for row in rows}
    for row in rows:
        got = received.get(row.email.lower(), [])
        if row.status == "sent":
            assert len(got) == 1, (row.email, len(got))
            assert row.provider_message_id and got[0]["id"].strip("<>") == row.provider_message_id
        else:
            assert len(got) <= {"uncertain": 1, "failed": 0}.get(row.status, -1), (row.email, row.status, len(got))


def _assert_no_key(*texts: str, key: str = KEY) -> None:
    encoded = base64.b64encode(f"api:{key}".encode()).decode()  # Mailgun's Basic credentials
    for text in texts:
        assert key not in text and encoded not in text


def _assert_own_unsubscribe_links(settings: Settings, send_id: int, rows: list[Any],
                                  records: list[dict[str, Any]]) -> None:
    """Each message carries its recipient's own signed link in List-Unsubscribe, the HTML and the text,
    with a mailto alternative and the one-click header (RFC 8058)."""
    subscriber = {row.email.lower(): row.subscriber_id for row in rows}
    links = set()
    for record in records:
        headers = record["headers"]
        link, mailto = re.findall(r"<([^>]+)>", headers["List-Unsubscribe"])
        assert link.startswith("https://report.example.org/u/") and mailto.startswith("mailto:")
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert link in record["html"] and link in record["text"]
        assert record["visible_to"] == [record["to"]]  # nobody sees another recipient
        token = link.rsplit("/", 1)[1]
        assert read_unsubscribe_token(settings, token) == (subscriber[record["to"].lower()], send_id)
        links.add(link)
    assert len(links) == len(records)


# ---------------------------------------------------------------- a whole send


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun", "resend"])
def test_a_whole_send_arrives_once_each_with_their_own_links(name: str, project: Path, settings: Settings,
                                                             store: Store, emulator: EmulatorHandle,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = _for(settings, name, emulator.url, batch_size=1000)  # capped by each provider's own limit
    summary = _send(store, settings, project, AUDIENCE)
    assert summary.status == "sent" and summary.counts == {"sent": AUDIENCE}
    records = emulator.messages(provider=name)
    rows = _rows(store, summary.send_id)
    assert len(records) == AUDIENCE and all(len(got) == 1 for got in _by_recipient(records).values())
    _assert_log_equals_emulator(rows, records)
    _assert_own_unsubscribe_links(settings, summary.send_id, rows, records)
    per_request = Counter(record["batch"] for record in records)
    assert max(per_request.values()) == REQUEST_LIMITS[name]  # full requests, and none larger
    assert emulator.stats()["requests"][name] == len(per_request) == -(-AUDIENCE // REQUEST_LIMITS[name])
    _assert_no_key(caplog.text, repr(summary), *(row.error_text or "" for row in rows))


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("name", ["postmark", "sendgrid", "mailgun"])
def test_under_faults_the_log_equals_the_emulator_and_late_batches_are_uncertain(
        name: str, project: Path, settings: Settings, store: Store, emulator: EmulatorHandle,
        caplog: pytest.LogCaptureFixture) -> None:
    emulator.set_faults(FAULTS)
    settings = _for(settings, name, emulator.url, batch_size=100, timeout=1.0)
    summary = _send(store, settings, project, AUDIENCE)
    stats = emulator.stats()
    late = stats["faults_injected"].get("late", 0)
    assert late >= 1 and stats["faults_injected"].get("500") and stats["faults_injected"].get("429")
    records, rows = emulator.messages(provider=name), _rows(store, summary.send_id)
    assert summary.status == "sent" and set(summary.counts) == {"sent", "uncertain"} and summary.total == AUDIENCE
    assert summary.counts["uncertain"] == 100 * late  # the rows of the late batches, and no others
    _assert_log_equals_emulator(rows, records)
    received = _by_recipient(records)
    uncertain = [row for row in rows if row.status == "uncertain"]
    assert all(row.error_class == "uncertain" and "no answer" in row.error_text for row in uncertain)
    # The emulator recorded each late batch before answering late: they arrived too, once.
    assert len({received[row.email.lower()][0]["batch"] for row in uncertain}) == late
    assert len(records) == AUDIENCE
    _assert_no_key(caplog.text, *(row.error_text or "" for row in rows))


def test_resend_retries_a_late_batch_under_its_idempotency_key_so_nobody_is_uncertain(
        project: Path, settings: Settings, store: Store, emulator: EmulatorHandle) -> None:
    emulator.set_faults(FAULTS)
    settings = _for(settings, "resend", emulator.url, batch_size=100, timeout=1.0)
    summary = _send(store, settings, project, AUDIENCE)
    stats = emulator.stats()
    assert stats["faults_injected"].get("late", 0) >= 1 and stats["idempotent_replays"] >= 1
    assert summary.status == "sent" and summary.counts == {"sent": AUDIENCE} and not summary.uncertain
    records = emulator.messages(provider="resend")
    assert len(records) == AUDIENCE
    _assert_log_equals_emulator(_rows(store, summary.send_id), records)


def test_a_batch_that_went_unanswered_stays_uncertain_whatever_its_retries_meet(
        project: Path, settings: Settings, store: Store, emulator: EmulatorHandle) -> None:
    # Seed 15 draws "late" for the first request and 500 for its retry, the last one allowed: the
    # first was accepted, so the batch must not end as a transient failure that --retry-failed would
    # send again under a new idempotency key.
    emulator.set_faults({"seed": 15, "error_rates": {"500": 0.5}, "late": {"rate": 0.5, "delay_s": 1.0}})
    settings = _for(settings, "resend", emulator.url, timeout=0.5, max_retries=1)
    summary = _send(store, settings, project, 100)
    assert emulator.stats()["faults_injected"] == {"late": 1, "500": 1}
    assert summary.counts == {"uncertain": 100}
    records = emulator.messages(provider="resend")
    assert len(records) == 100
    _assert_log_equals_emulator(_rows(store, summary.send_id), records)


# ---------------------------------------------------------------- refusals


def test_postmark_inactive_recipients_fail_permanently_and_are_suppressed(
        project: Path, settings: Settings, store: Store, emulator: EmulatorHandle) -> None:
    inactive = ["reader00003@example.net", "reader00150@example.net", "reader00249@example.net"]
    emulator.set_faults({"inactive": inactive})
    summary = _send(store, _for(settings, "postmark", emulator.url), project, 250)
    assert summary.status == "sent" and summary.counts == {"sent": 247, "failed": 3}
    rows = _rows(store, summary.send_id)
    failed = [row for row in rows if row.status == "failed"]
    assert [row.email for row in failed] == inactive
    assert all(row.error_class == "permanent" and "Postmark error 406" in row.error_text for row in failed)
    with store.read() as connection:
        assert sorted(connection.scalars(select(suppressions.c.email_key))) == inactive
    records = emulator.messages(provider="postmark")
    assert len(records) == 247 and not set(inactive) & set(_by_recipient(records))
    _assert_log_equals_emulator(rows, records)


def test_a_refused_key_stops_the_send_and_a_resume_with_the_right_one_completes(
        project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(250))
    with run_emulator_in_thread(keys={"postmark": "right"}) as emulator:
        wrong = _for(settings, "postmark", emulator.url, key="wrong-key-3b7e")
        send_id = _start(store, wrong, _edition(project, wrong))
        summary = asyncio.run(send.run_send(store, wrong, send_id))
        assert summary.status == "failed" and "refused the credentials" in summary.reason
        assert "POSTMARK_SERVER_TOKEN" in summary.reason
        _assert_no_key(summary.reason, *(row.error_text or "" for row in _rows(store, send_id)), key="wrong-key-3b7e")
        assert summary.counts == {"queued": 250}
        assert emulator.messages() == []
        assert set(emulator.stats()["responses"]["postmark"]) == {"401"}  # only refusals, never retried

        summary = asyncio.run(send.run_send(store, _for(settings, "postmark", emulator.url, key="right"), send_id))
        assert summary.status == "sent" and summary.counts == {"sent": 250}
        records = emulator.messages(provider="postmark")
        assert len(records) == 250
        _assert_log_equals_emulator(_rows(store, send_id), records)


# ---------------------------------------------------------------- the command line


def test_the_send_command_sends_through_a_provider(project: Path, settings: Settings, store: Store,
                                                   emulator: EmulatorHandle, run_cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    assert text.count('name = "outbox"') == 1
    path.write_text(text.replace('name = "outbox"', f'name = "resend"\nbase_url = "{emulator.url}"\n'
                                                    'api_key_env = "RESEND_API_KEY"'), encoding="utf-8")
    monkeypatch.setenv("RESEND_API_KEY", KEY)
    _audience(store, project, _many(250))
    code, out, err = run_cli("send", SAMPLE, "--now", "--offline", "--no-progress")
    assert code == 0, err
    assert "send 1: sent: 250 sent" in out
    _assert_no_key(out, err)
    code, out, err = run_cli("logs", "1", "--format", "json")
    assert code == 0, err
    lines = json.loads(out)
    records = _by_recipient(emulator.messages(provider="resend"))
    assert len(lines) == 250 == len(records)
    for line in lines:
        assert line["status"] == "sent" and [r["id"] for r in records[line["email"]]] == [line["provider_message_id"]]
