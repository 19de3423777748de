"""What each message carries, through every provider: its headers, and internationalised addresses."""

from __future__ import annotations

import asyncio
import email.policy
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from pipeline import send
from pipeline.config import Settings
from pipeline.emulator import run_emulator_in_thread
from pipeline.emulator.server import EmulatorHandle
from pipeline.mail import Batch, Mail, sendable
from pipeline.providers.outbox import OutboxProvider
from pipeline.store import Store
from pipeline.store.tables import deliveries

from .test_providers_emulator import KEY, KEY_VARIABLES, _for
from .test_send import _audience, _edition, _many, _start

HTTP = ("postmark", "sendgrid", "mailgun", "resend")
LIST = ("List-Id", "List-Archive", "Feedback-ID", "List-Unsubscribe", "List-Unsubscribe-Post")
EVE, EVE_SENT = "eve@bücher.de", "eve@xn--bcher-kva.de"
WEI = "用户@例子.广告"  # a local part that is not ASCII: only SMTPUTF8 carries it


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with run_emulator_in_thread(keys=dict.fromkeys(KEY_VARIABLES, KEY)) as handle:
        yield handle


def _people() -> list[tuple[str, str, str]]:
    return [*_many(3), (EVE, "Eve", "policy"), (WEI, "李伟", "policy")]


def _rows(store: Store, send_id: int) -> dict[str, tuple[str, str | None, str | None]]:
    with store.read() as connection:
        return {row.email: (row.status, row.error_class, row.error_text) for row in connection.execute(
            select(deliveries.c.email, deliveries.c.status, deliveries.c.error_class, deliveries.c.error_text)
            .where(deliveries.c.send_id == send_id))}


def test_an_idn_domain_is_sent_in_idna_and_other_addresses_are_left_alone() -> None:
    assert sendable(EVE) == EVE_SENT
    assert sendable("Ada@Example.ORG") == "Ada@Example.ORG"
    assert sendable(WEI) == WEI
    assert sendable("not an address ü") == "not an address ü"


@pytest.mark.parametrize("name", HTTP)
def test_through_an_http_provider_one_address_it_cannot_take_fails_alone(
        project: Path, settings: Settings, store: Store, emulator: EmulatorHandle, name: str) -> None:
    settings = _for(settings, name, emulator.url)
    _audience(store, project, _people())
    send_id = _start(store, settings, _edition(project, settings))
    summary = asyncio.run(send.run_send(store, settings, send_id))
    assert summary.counts == {"sent": 4, "failed": 1} and not summary.uncertain
    status, error_class, text = _rows(store, send_id)[WEI]
    assert (status, error_class) == ("failed", "permanent") and "local part is not ASCII" in (text or "")
    received = sorted(message["to"].lower() for message in emulator.messages(provider=name))
    assert EVE_SENT in received and len(received) == 4
    assert _rows(store, send_id)[EVE][0] == "sent"
    # A permanent failure: retrying queues nothing, so it can never fail again for ever.
    assert send.retry_failed(store, send_id) == 0


def test_the_outbox_writes_an_idn_domain_in_idna_and_a_utf8_local_part_as_utf8(project: Path, settings: Settings,
                                                                               store: Store) -> None:
    _audience(store, project, _people())
    send_id = _start(store, settings, _edition(project, settings))
    assert asyncio.run(send.run_send(store, settings, send_id)).counts == {"sent": 5}
    found = {}
    for path in (project / "outbox" / str(send_id)).glob("*.eml"):
        message = email.message_from_string(path.read_bytes().decode("utf-8"), policy=email.policy.SMTPUTF8)
        found[message["To"].addresses[0].addr_spec] = message
    assert set(found) == {f"reader0000{n}@example.net" for n in range(3)} | {EVE_SENT, WEI}
    assert found[WEI]["To"].addresses[0].display_name == "李伟"


def test_a_message_that_cannot_be_made_fails_alone_and_leaves_no_part_file(project: Path, settings: Settings,
                                                                           tmp_path: Path) -> None:
    from pipeline import messages

    mail = Mail(label="7", subject="S", html="<p>{{ name }}</p>", text="{{ name }}", sender="a@example.org",
                reply_to=None)
    people = tuple(messages.recipient(settings, label="7", delivery_id=n, email=f"r{n}@example.net", name="R",
                                      unsubscribe_url="https://x.example/u/t", view_url="https://x.example/a/",
                                      nonce="00") for n in (1, 2))
    broken = people[1].__class__(**{**people[1].__dict__, "headers": {**people[1].headers, "X-Bad": "é\udcff"}})
    outcomes = asyncio.run(OutboxProvider(tmp_path).send(Batch(id="b", mail=mail, recipients=(people[0], broken))))
    assert [(outcome.delivery_id, outcome.status) for outcome in outcomes] == [(1, "sent"), (2, "failed")]
    assert outcomes[1].error_class == "permanent"
    assert sorted(path.name for path in (tmp_path / "7").iterdir()) == ["1.eml"]


def test_an_outbox_write_that_fails_leaves_no_part_file(project: Path, settings: Settings, tmp_path: Path) -> None:
    """The disk refuses the write half-way (a file size limit stands in for a full disk, for root too)."""
    from pipeline import messages

    mail = Mail(label="8", subject="S", html="<p>" + "x" * 5000 + "</p>", text="x", sender="a@example.org",
                reply_to=None)
    person = messages.recipient(settings, label="8", delivery_id=1, email="r@example.net", name="R",
                                unsubscribe_url="https://x.example/u/t", view_url="https://x.example/a/", nonce="0")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, limit[1]))
    try:
        [outcome] = asyncio.run(OutboxProvider(tmp_path).send(Batch(id="b", mail=mail, recipients=(person,))))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    assert outcome.status == "failed" and outcome.error_class == "transient", outcome
    assert list((tmp_path / "8").iterdir()) == []


# ---------------------------------------------------------------- headers: the newsletter's, and a notice's


def _notice(settings: Settings) -> None:
    from pipeline.notices import notify

    assert asyncio.run(notify(settings, "Send 1 held", "why"))


def _headers_of(message: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in (message.get("headers") or {}).items()}


@pytest.mark.parametrize("name", HTTP)
def test_the_newsletter_carries_the_list_headers_and_a_notice_none_of_them(
        project: Path, settings: Settings, store: Store, emulator: EmulatorHandle, name: str) -> None:
    settings = _for(settings, name, emulator.url)
    _audience(store, project, _many(2))
    send_id = _start(store, settings, _edition(project, settings))
    asyncio.run(send.run_send(store, settings, send_id))
    _notice(settings)
    newsletter = [message for message in emulator.messages(provider=name) if "example.net" in message["to"]]
    notices = [message for message in emulator.messages(provider=name) if message["to"] == "desk@example.org"]
    assert len(newsletter) == 2 and len(notices) == 1
    for message in newsletter:
        headers = _headers_of(message)
        assert {header.lower() for header in LIST} <= set(headers), headers
        assert headers["list-archive"] == "<https://report.example.org/archive/>"
        assert headers["feedback-id"] == f"{send_id}:2024-03-01-hello:newsletter:the-china-russia-report"
        assert "auto-submitted" not in headers
    headers = _headers_of(notices[0])
    assert headers.get("auto-submitted") == "auto-generated"
    assert not {header.lower() for header in LIST} & set(headers), headers


def test_the_outbox_newsletter_and_notice_headers(project: Path, settings: Settings, store: Store) -> None:
    _audience(store, project, _many(1))
    send_id = _start(store, settings, _edition(project, settings))
    asyncio.run(send.run_send(store, settings, send_id))
    _notice(settings)
    [sent] = (project / "outbox" / str(send_id)).glob("*.eml")
    [notice] = (project / "outbox").glob("notice-*/*.eml")
    newsletter = email.message_from_bytes(sent.read_bytes(), policy=email.policy.strict)
    assert all(newsletter[header] for header in LIST)
    staff = email.message_from_bytes(notice.read_bytes(), policy=email.policy.strict)
    assert staff["Auto-Submitted"] == "auto-generated" and staff["Message-ID"]
    assert not [header for header in LIST if staff[header] is not None]


def test_a_test_send_carries_no_list_headers(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings).edition
    outcomes = asyncio.run(send.send_test(settings, edition_name=edition.name, subject=edition.subject,
                                          html=edition.email_html, text=edition.email_txt,
                                          addresses=["editor@example.org"]))
    assert [outcome.status for outcome in outcomes] == ["sent"]
    [path] = (project / "outbox").glob("test-*/*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.strict)
    assert message["Subject"].startswith("[TEST] ")
    assert not [header for header in LIST if message[header] is not None]
    assert message["Auto-Submitted"] is None
