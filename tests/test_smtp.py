"""The SMTP provider against a real aiosmtpd relay on 127.0.0.1: STARTTLS or implicit TLS with a trustme CA,
AUTH required, every message recorded as it arrived."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import logging
import socket
import ssl
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from aiosmtplib import SMTPResponse

from pipeline import messages
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError, ProviderAuthError, ProviderUnavailable
from pipeline.mail import Batch, Mail, Outcome
from pipeline.prepare import prepare_and_write
from pipeline.providers.smtp import SmtpProvider, _queue_id

from .conftest import SAMPLE, part

USER = "newsletter@example.org"
PASSWORD = "s3cret-Passw0rd-for-the-relay"
SECRET = "a-test-signing-secret-of-32-bytes-at-least"
SEND_ID = 7


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes


class Relay:
    """An aiosmtpd handler that records every message and refuses what it is told to."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.sessions = 0  # TCP connections accepted
        self.refuse: dict[str, str] = {}  # recipient -> reply to RCPT
        self.hang_up_on: set[str] = set()  # recipients whose message is queued but whose reply never leaves
        self.closing_after: int | None = None  # once this many messages arrived, every MAIL gets a 421
        self.closing_once = False  # the next MAIL gets a 421
        self.queue_ids = True

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if self.closing_once or (self.closing_after is not None and len(self.received) >= self.closing_after):
            self.closing_once = False
            return "421 4.3.2 Service shutting down"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content))
        if self.hang_up_on & set(envelope.rcpt_tos):
            server.transport.close()
        return f"250 2.0.0 Ok: queued as Q{len(self.received):05d}" if self.queue_ids else "250 OK"


class RelayController(Controller):
    def factory(self):
        self.handler.sessions += 1  # one protocol object per TCP connection
        return super().factory()


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    good = (isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode())
    return AuthResult(success=good, handled=False)  # not handled: aiosmtpd answers 535 itself


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@dataclass
class Server:
    relay: Relay
    port: int
    security: str


@pytest.fixture
def start_server(server_context: ssl.SSLContext) -> Iterator[Callable[..., Server]]:
    """Start a relay: STARTTLS on a plain port (the default) or TLS from the first byte; AUTH required."""
    controllers: list[Controller] = []

    def start(security: str = "starttls") -> Server:
        relay, port = Relay(), free_port()
        if security == "starttls":
            options: dict[str, Any] = dict(tls_context=server_context, require_starttls=True,
                                           auth_require_tls=True)
        else:  # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this connection is TLS from the start
            options = dict(ssl_context=server_context, auth_require_tls=False,
                           auth_exclude_mechanism=["PLAIN"])  # so that AUTH LOGIN is used here
        controller = RelayController(relay, hostname="127.0.0.1", port=port, authenticator=authenticator,
                                     auth_required=True, **options)
        controller.start()
        controllers.append(controller)
        relay.sessions = 0  # the controller's own probe connection
        return Server(relay, port, security)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def settings(project: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    return smtp_settings(project, port=free_port())


def smtp_settings(project: Path, *, port: int | None, security: str = "starttls", concurrency: int = 2,
                  username: str | None = USER) -> Settings:
    """The sample settings with their [provider] table swapped for an SMTP relay on 127.0.0.1."""
    path = project / "newsletter.toml"
    text = path.read_text(encoding="utf-8")
    start = text.index("[provider]")
    login = f'username = "{username}"\npassword_env = "SMTP_PASSWORD"\n' if username else ""
    port_line = "" if port is None else f"port = {port}\n"
    path.write_text(text[:start] + f'[provider]\nname = "smtp"\nhost = "127.0.0.1"\n{port_line}'
                    f'security = "{security}"\nconcurrency = {concurrency}\ntimeout = 10\n{login}',
                    encoding="utf-8")
    return load_settings(path)


@pytest.fixture
def mail(project: Path, settings: Settings) -> Mail:
    """What the sender hands every batch of the sample edition."""
    edition = prepare_and_write(project / "drafts" / SAMPLE, settings).edition
    publication = settings.publication
    return Mail(label=str(SEND_ID), subject=edition.subject, html=edition.email_html, text=edition.email_txt,
                sender=publication.from_, reply_to=publication.reply_to,
                list_headers=messages.list_headers(settings, label="42", edition=SAMPLE))


def unsubscribe_url(settings: Settings, number: int) -> str:
    return f"{settings.publication.base_url}/u/{messages.unsubscribe_token(settings, number, SEND_ID)}"


def batches(settings: Settings, mail: Mail, count: int, size: int = 100, start: int = 1) -> list[Batch]:
    people = [messages.recipient(settings, label=mail.label, nonce="0f1e2d3c", delivery_id=number,
                                 name=f"Reader {number}",
                                 email=f"reader{number:04d}@example.net",
                                 unsubscribe_url=unsubscribe_url(settings, number),
                                 view_url=f"{settings.publication.base_url}/archive/{SAMPLE}/")
              for number in range(start, start + count)]
    return [Batch(id=f"batch-{index}", mail=mail, recipients=tuple(people[index:index + size]))
            for index in range(0, count, size)]


def provider_for(server: Server, project: Path, client_context: ssl.SSLContext | None, **options: Any) -> SmtpProvider:
    return SmtpProvider.from_settings(smtp_settings(project, port=server.port, security=server.security, **options),
                                      ssl_context=client_context)


async def send_all(provider: SmtpProvider, *work: Batch) -> list[Outcome]:
    try:
        results = await asyncio.gather(*(provider.send(batch) for batch in work))
    finally:
        await provider.aclose()
    return [outcome for outcomes in results for outcome in outcomes]


def by_id(outcomes: list[Outcome]) -> dict[int, Outcome]:
    return {outcome.delivery_id: outcome for outcome in outcomes}


def parsed(received: Received) -> EmailMessage:
    return email.message_from_bytes(received.data, policy=email.policy.strict)


def test_500_recipients_over_starttls_arrive_once_each_over_few_connections(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext) -> None:
    server = start_server()
    work = batches(settings, mail, 500)
    provider = provider_for(server, project, client_context, concurrency=2)

    outcomes = asyncio.run(send_all(provider, *work))

    assert len(work) == 5 and {len(batch.recipients) for batch in work} == {100}
    assert len(outcomes) == 500 and {outcome.status for outcome in outcomes} == {"sent"}
    received = server.relay.received
    assert Counter(address for message in received for address in message.rcpt_tos) == Counter(
        f"reader{number:04d}@example.net" for number in range(1, 501))
    assert {message.mail_from for message in received} == {"report@example.org"}
    assert {outcome.provider_message_id for outcome in outcomes} == {f"Q{n:05d}" for n in range(1, 501)}
    # Two batches in flight at a time, each over its own connection, reused for the next batches.
    assert 1 <= server.relay.sessions <= 2
    for message in received:
        [address] = message.rcpt_tos
        number = int(address[len("reader"):len("reader") + 4])
        url = unsubscribe_url(settings, number)
        parts = parsed(message)
        assert (parts["To"].addresses[0].addr_spec, parts["To"].addresses[0].display_name) == (address,
                                                                                               f"Reader {number}")
        assert parts["From"].addresses[0].addr_spec == "report@example.org"
        assert f"<{url}>" in parts["List-Unsubscribe"]
        assert parts["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # RFC 8058
        assert parts["Message-ID"] == messages.message_id(settings, mail.label, number, "0f1e2d3c")
        assert url in part(parts, "html") and url in part(parts, "plain")


def test_refused_recipients_fail_and_the_rest_of_the_batch_is_sent(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext) -> None:
    server = start_server()
    server.relay.refuse = {"reader0002@example.net": "550 5.1.1 No such user here",
                           "reader0004@example.net": "450 4.2.1 Mailbox busy, try later",
                           "reader0005@example.net": "550 5.7.1 Relaying denied by policy"}
    [batch] = batches(settings, mail, 6)

    outcomes = by_id(asyncio.run(send_all(provider_for(server, project, client_context), batch)))

    assert outcomes[2].status == "failed" and outcomes[2].error_class == "permanent" and outcomes[2].suppress
    assert "550 5.1.1 No such user here" in (outcomes[2].error_text or "")
    assert outcomes[4].status == "failed" and outcomes[4].error_class == "transient" and not outcomes[4].suppress
    # A policy refusal is permanent for this message, but says nothing about the mailbox.
    assert outcomes[5].error_class == "permanent" and not outcomes[5].suppress
    assert [outcomes[n].status for n in (1, 3, 6)] == ["sent"] * 3
    assert sorted(address for message in server.relay.received for address in message.rcpt_tos) == [
        "reader0001@example.net", "reader0003@example.net", "reader0006@example.net"]
    assert server.relay.sessions == 1


def test_wrong_password_stops_at_once_and_delivers_nothing(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_server()
    monkeypatch.setenv("SMTP_PASSWORD", "not-the-password")
    provider = provider_for(server, project, client_context)
    first, second = batches(settings, mail, 20, size=10)

    async def scenario() -> tuple[ProviderAuthError, ProviderAuthError]:
        with pytest.raises(ProviderAuthError) as refused:
            await provider.send(first)
        with pytest.raises(ProviderAuthError) as again:  # remembered: no second login with a bad password
            await provider.send(second)
        await provider.aclose()
        return refused.value, again.value

    refused, again = asyncio.run(scenario())
    assert refused.status == 535 and "535" in str(refused) and again is refused
    assert server.relay.received == [] and server.relay.sessions == 1


def test_a_relay_that_wants_a_login_stops_the_send(start_server: Callable[..., Server], project: Path,
                                                   settings: Settings, mail: Mail,
                                                   client_context: ssl.SSLContext) -> None:
    server = start_server()
    [batch] = batches(settings, mail, 2)
    with pytest.raises(ProviderAuthError, match="530"):
        asyncio.run(send_all(provider_for(server, project, client_context, username=None), batch))
    assert server.relay.received == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")  # TLS from the start
def test_implicit_tls_with_auth_login(start_server: Callable[..., Server], project: Path, settings: Settings,
                                      mail: Mail, client_context: ssl.SSLContext) -> None:
    server = start_server("tls")
    server.relay.queue_ids = False  # a plain "250 OK": the Message-ID stands in for the queue id
    [batch] = batches(settings, mail, 3)

    outcomes = asyncio.run(send_all(provider_for(server, project, client_context), batch))

    assert [outcome.status for outcome in outcomes] == ["sent"] * 3
    assert [outcome.provider_message_id for outcome in outcomes] == [
        person.headers["Message-ID"] for person in batch.recipients]
    assert [message.rcpt_tos for message in server.relay.received] == [(person.email,) for person in batch.recipients]
    assert server.relay.sessions == 1


def test_no_answer_after_data_is_uncertain_and_not_sent_again(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext) -> None:
    server = start_server()
    server.relay.hang_up_on = {"reader0003@example.net"}
    [batch] = batches(settings, mail, 5)

    outcomes = by_id(asyncio.run(send_all(provider_for(server, project, client_context), batch)))

    assert outcomes[3].status == "uncertain" and outcomes[3].error_class == "uncertain"
    assert [outcomes[n].status for n in (1, 2, 4, 5)] == ["sent"] * 4
    arrived = Counter(address for message in server.relay.received for address in message.rcpt_tos)
    assert arrived == Counter(person.email for person in batch.recipients)  # the uncertain one once, not twice
    assert server.relay.sessions == 2  # the rest of the batch went on over a new connection


def test_a_connection_closed_before_data_is_reopened_and_the_message_sent(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext) -> None:
    server = start_server()
    first, second = batches(settings, mail, 6, size=3)
    provider = provider_for(server, project, client_context, concurrency=1)

    async def scenario() -> list[Outcome]:
        outcomes = await provider.send(first)
        server.relay.closing_once = True  # the idle connection's next MAIL gets a 421, and aiosmtplib closes it
        outcomes += await provider.send(second)
        await provider.aclose()
        return outcomes

    outcomes = asyncio.run(scenario())
    assert [outcome.status for outcome in outcomes] == ["sent"] * 6
    assert len(server.relay.received) == 6 and server.relay.sessions == 2


def test_a_relay_that_keeps_closing_fails_the_rest_transiently(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext) -> None:
    server = start_server()
    server.relay.closing_after = 2
    first, second = batches(settings, mail, 10, size=5)
    provider = provider_for(server, project, client_context, concurrency=1)

    async def scenario() -> list[Outcome]:
        outcomes = await provider.send(first)
        with pytest.raises(ProviderUnavailable, match="421"):  # nothing of this batch was handed over
            await provider.send(second)
        await provider.aclose()
        return outcomes

    outcomes = by_id(asyncio.run(scenario()))
    assert [outcomes[n].status for n in (1, 2)] == ["sent", "sent"]
    assert {(outcomes[n].status, outcomes[n].error_class) for n in (3, 4, 5)} == {("failed", "transient")}
    assert len(server.relay.received) == 2


def test_unreachable_relay_and_untrusted_certificate_are_unavailable(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail) -> None:
    [batch] = batches(settings, mail, 2)
    closed = SmtpProvider.from_settings(settings)  # nothing listens on its port
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        asyncio.run(send_all(closed, batch))

    server = start_server()
    untrusting = provider_for(server, project, None)  # the system's trust store does not know the test CA
    with pytest.raises(ProviderUnavailable, match="certificate verify failed"):
        asyncio.run(send_all(untrusting, batch))
    assert server.relay.received == []


def test_the_password_never_appears_in_errors_or_logs(
        start_server: Callable[..., Server], project: Path, settings: Settings, mail: Mail,
        client_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    server = start_server()
    server.relay.hang_up_on = {"reader0002@example.net"}  # a warning is logged for it
    [batch] = batches(settings, mail, 3)
    provider = provider_for(server, project, client_context)
    asyncio.run(send_all(provider, batch))

    wrong = "wrong-" + PASSWORD
    monkeypatch.setenv("SMTP_PASSWORD", wrong)
    with pytest.raises(ProviderAuthError) as refused:
        asyncio.run(send_all(provider_for(server, project, client_context), batch))

    texts = ["".join(traceback.format_exception(refused.value)), repr(provider), repr(refused.value)]
    # aiosmtpd's own log ("mail.log") is the test server's, which does see the credentials.
    texts += [record.getMessage() for record in caplog.records if record.name != "mail.log"]
    assert any("smtp" in record.name for record in caplog.records)  # the provider did log
    for secret in (PASSWORD, wrong):
        forms = (secret, base64.b64encode(secret.encode()).decode(),
                 base64.b64encode(f"\0{USER}\0{secret}".encode()).decode())
        assert not [text for text in texts for form in forms if form in text]


def test_settings_without_the_password_name_its_variable(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="SMTP_PASSWORD"):
        SmtpProvider.from_settings(smtp_settings(project, port=2525))


def test_a_password_is_never_sent_in_clear(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
    with pytest.raises(ConfigError, match="starttls"):
        SmtpProvider.from_settings(smtp_settings(project, port=2525, security="none"))
    local = SmtpProvider.from_settings(smtp_settings(project, port=None, security="none", username=None))
    assert (local.port, local.idempotent, local.max_batch, local.name) == (25, False, 100, "smtp")


@pytest.mark.parametrize(("reply", "queue_id"), [
    ("2.0.0 Ok: queued as 4Xyz1L2Mn3", "4Xyz1L2Mn3"),  # Postfix
    ("OK id=1rAbCd-000Efg-Hi", "1rAbCd-000Efg-Hi"),  # Exim
    ("Ok 0100018d2b1c3e4f-5a6b7c8d-9e0f-1a2b-3c4d-5e6f7a8b9c0d-000000", "0100018d2b1c3e4f-5a6b7c8d-9e0f-1a2b-3c4d-"
                                                                      "5e6f7a8b9c0d-000000"),  # Amazon SES
    ("2.0.0 OK  1700000000 a1-20020a05600c.123 - gsmtp", None),
    ("OK", None),
])
def test_queue_id_from_the_final_reply(reply: str, queue_id: str | None) -> None:
    assert _queue_id(SMTPResponse(250, reply)) == queue_id

