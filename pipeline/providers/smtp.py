"""The SMTP provider: any relay (Amazon SES, Postfix, a provider's SMTP endpoint) through aiosmtplib.

Security is ``starttls`` (port 587 by default), ``tls`` (implicit TLS, 465) or
``none`` (25, for a local relay only, and never with a password). Certificates
are verified against the system's trust store, or against the ``ssl_context``
given to the constructor (tests pass one trusting their own CA). With a
``username``, the connection logs in with the password named by
``password_env``.

Each recipient gets their own message (``MessageTemplate``) in their own SMTP
transaction — MAIL FROM (the address in ``mail.sender``), RCPT TO, DATA — over
connections that are kept open across messages and batches: at most
``concurrency`` of them, one per batch in flight, opened again when the server
has closed one.

How a send can fail, and what each recipient is told (the exactly-once rules;
the provider honours no idempotency key, so ``idempotent`` is False):

- RCPT refused: that recipient ``failed``, ``permanent`` for 5xx (suppressed as
  well when the enhanced code says the mailbox does not exist, RFC 3463 5.1.x
  and 5.2.1), ``transient`` for 4xx; MAIL FROM or DATA refused likewise. The
  rest of the batch goes on.
- DATA accepted (250): ``sent``, with the queue id from the server's reply when
  it names one ("queued as ...", "id=...", SES "Ok <id>"), else the Message-ID.
- The connection fails after the DATA command went out and before the
  server's final reply: the server may have queued the message, so that
  recipient is ``uncertain`` and is never retried here. The batch goes on over
  a new connection.
- The connection fails before DATA (the server closed an idle connection, a
  421): nothing was handed over, so the message is tried once more over a new
  connection.
- The server cannot be reached, TLS fails, or a new connection dies before
  DATA too: ``ProviderUnavailable`` when no recipient of the batch has a
  result yet; otherwise the recipients with a result keep it and the ones
  never started are returned ``failed``/``transient`` for the sender to retry.
- The server refuses the credentials (535 and other 5xx to AUTH, or 530 asking
  for them): ``ProviderAuthError`` at once, under the same rule (raised only
  when no recipient of the batch has a result yet). The refusal is remembered:
  every later ``send`` raises it without logging in again, so that a wrong
  password cannot lock the account. A 454 (temporary authentication failure)
  is ``ProviderUnavailable`` instead.

A provider belongs to one event loop (one ``run_send``); ``aclose`` says QUIT
on the idle connections. The password is never put in a message, an exception or a log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from email.utils import parseaddr
from typing import ClassVar, Literal

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponse,
    SMTPResponseException,
    SMTPSenderRefused,
)
from pydantic import SecretStr

from pipeline import providers
from pipeline.config import Settings
from pipeline.errors import ConfigError, ProviderAuthError, ProviderError, ProviderUnavailable
from pipeline.mail import Batch, Outcome, Recipient
from pipeline.mime import message_template

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
# Queue ids in the final DATA reply: Postfix and SendGrid "queued as X", Exim "id=X", Amazon SES "Ok X".
_QUEUE_ID = (re.compile(r"queued as\s+<?([\w.@-]+)>?", re.IGNORECASE), re.compile(r"\bid=([\w.@-]+)"),
             re.compile(r"^(?:2\.\d{1,3}\.\d{1,3}\s+)?ok\s+([\w.@-]{8,})$", re.IGNORECASE))
# RFC 3463: 5.1.x is a bad destination address, 5.2.1 a disabled mailbox; mailing it again is pointless.
_NO_SUCH_MAILBOX = re.compile(r"^5\.(?:1\.\d{1,3}|2\.1)\b")
# No definite answer from the server: the connection broke, timed out, or the exchange went wrong.
_NO_ANSWER = (SMTPException, OSError)


class _Lost(Exception):
    """The connection failed before the DATA command: the message was not handed over."""


class SmtpProvider:
    """Sends each recipient's message over a small pool of reused SMTP connections."""

    name: ClassVar[str] = "smtp"
    idempotent: ClassVar[bool] = False
    smtputf8: ClassVar[bool] = True  # when the relay offers it; each transaction checks (``_transaction``)
    max_batch: ClassVar[int] = 100

    def __init__(self, *, host: str, port: int | None = None, security: Security = "starttls",
                 username: str | None = None, password: SecretStr | str | None = None, timeout: float = 30.0,
                 concurrency: int = 4, ssl_context: ssl.SSLContext | None = None):
        if security not in DEFAULT_PORTS:
            raise ConfigError(f"unknown SMTP security {security!r}; choose one of: starttls, tls, none")
        if username and security == "none":
            raise ConfigError("an SMTP password must not be sent in clear: use security = \"starttls\" or \"tls\"")
        if username and not password:
            raise ConfigError(f"no password for SMTP user {username!r}")
        self.host, self.port, self.security = host, port or DEFAULT_PORTS[security], security
        self.username, self.timeout = username, timeout
        self._password = password if isinstance(password, SecretStr) or password is None else SecretStr(password)
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._slots = asyncio.Semaphore(concurrency)  # a connection per batch in flight, at most
        self._idle: list[SMTP] = []
        self._local_hostname: str | None = None
        self._refused: ProviderAuthError | None = None

    @classmethod
    def from_settings(cls, settings: Settings, client: object = None, *,
                      ssl_context: ssl.SSLContext | None = None) -> SmtpProvider:
        """The relay of ``[provider]``; ConfigError names the missing key or environment variable."""
        provider = settings.provider
        if not provider.host:
            raise ConfigError("the smtp provider needs [provider] host", path=settings.source)
        password = settings.provider_secret
        if provider.username and password is None:
            where = (f"set the environment variable {provider.password_env}" if provider.password_env
                     else "set [provider] password_env to the variable that holds it")
            raise ConfigError(f"no SMTP password for user {provider.username!r}: {where}", path=settings.source)
        try:
            return cls(host=provider.host, port=provider.port, security=provider.security,
                       username=provider.username, password=password, timeout=provider.timeout,
                       concurrency=providers.concurrency(settings), ssl_context=ssl_context)
        except ConfigError as exc:
            raise ConfigError(exc.reason, path=settings.source) from None

    def __repr__(self) -> str:
        return f"SmtpProvider({self.where}, security={self.security!r}, username={self.username!r})"

    @property
    def where(self) -> str:
        return f"SMTP relay {self.host}:{self.port}"

    async def send(self, batch: Batch) -> list[Outcome]:
        if self._refused is not None:
            raise self._refused
        sender = parseaddr(batch.mail.sender)[1]
        template = message_template(batch.mail)
        # Every message is built before the first goes out, so a failure to build one cannot cut a batch in two.
        messages = [template.render(person) for person in batch.recipients]
        outcomes: list[Outcome] = []
        async with self._slots:
            client: SMTP | None = None
            try:
                for person, message in zip(batch.recipients, messages, strict=True):
                    outcome, client = await self._deliver(client, sender, person, message)
                    outcomes.append(outcome)
            except ProviderError as exc:
                _closed(client)
                client = None
                if isinstance(exc, ProviderAuthError):
                    self._refused = exc
                if not outcomes:
                    raise
                log.warning("%s: %d of %d recipients not started: %s", self.where,
                            len(batch.recipients) - len(outcomes), len(batch.recipients), exc)
                outcomes += [_failed(person, "transient", f"not sent: {exc}")
                             for person in batch.recipients[len(outcomes):]]
            except BaseException:
                _closed(client)  # left in the middle of a command (cancelled): never handed to another batch
                raise
            self._check_in(client)
        return outcomes

    async def _deliver(self, client: SMTP | None, sender: str, person: Recipient,
                       message: bytes) -> tuple[Outcome, SMTP]:
        """One recipient's transaction, tried once more over a new connection if the first dies before DATA."""
        for attempt in (1, 2):
            if client is None or not client.is_connected:
                client = await self._check_out()
            try:
                return await self._transaction(client, sender, person, message), client
            except _Lost as lost:
                client.close()
                if attempt == 2:
                    raise ProviderUnavailable(f"{self.where} closed the connection again before accepting a "
                                              f"message: {lost}") from None
                log.info("%s closed the connection (%s); connecting again", self.where, lost)
        raise AssertionError("unreachable")

    async def _transaction(self, client: SMTP, sender: str, person: Recipient, message: bytes) -> Outcome:
        """MAIL, RCPT, DATA for one recipient; raises _Lost when the connection fails before DATA."""
        options, encoding = [], "ascii"
        if not (sender + person.email).isascii():
            if not client.supports_extension("smtputf8"):
                return _failed(person, "permanent", f"{self.where} does not accept non-ASCII addresses (SMTPUTF8)")
            options, encoding = ["SMTPUTF8"], "utf-8"
        try:
            await client.mail(sender, options=options, encoding=encoding)
            await client.rcpt(person.email, encoding=encoding)
        except (SMTPSenderRefused, SMTPRecipientRefused) as exc:
            what = "recipient" if isinstance(exc, SMTPRecipientRefused) else "sender"
            if exc.code == 421:  # the server is closing the connection (RFC 5321 4.2.3)
                raise _Lost(f"{exc.code} {exc.message}") from None
            if exc.code == 530 and what == "sender":  # RFC 4954: authentication required
                raise ProviderAuthError(f"{self.where} refused mail without a login (530 {exc.message}): check "
                                        "[provider] security, username and password_env", status=530,
                                        body=exc.message) from None
            await _reset(client)
            return _refused(person, exc, what)
        except ValueError as exc:  # a line break in an address: aiosmtplib refuses to send it
            await _reset(client)
            return _failed(person, "permanent", f"cannot send to {person.email!r}: {exc}")
        except _NO_ANSWER as exc:
            raise _Lost(_describe(exc)) from None
        if not client.is_connected:
            raise _Lost("connection lost before DATA")
        try:
            reply = await client.data(message)
        except SMTPDataError as exc:  # a definite answer: the DATA command or the message was refused
            await _reset(client)
            return _refused(person, exc, "message")
        except _NO_ANSWER as exc:
            client.close()
            log.warning("%s: no answer to the message for delivery %d: %s", self.where, person.delivery_id,
                        _describe(exc))
            return Outcome(delivery_id=person.delivery_id, status="uncertain", error_class="uncertain",
                           error_text=f"the connection to {self.where} failed after DATA, before its reply "
                                      f"({_describe(exc)}): the message may have been accepted")
        return Outcome(delivery_id=person.delivery_id, status="sent",
                       provider_message_id=_queue_id(reply) or person.headers.get("Message-ID"))

    async def _check_out(self) -> SMTP:
        """An idle open connection, or a new one."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        return await self._connect()

    def _check_in(self, client: SMTP | None) -> None:
        if client is None:
            return
        if client.is_connected:
            self._idle.append(client)
        else:
            client.close()

    async def _connect(self) -> SMTP:
        if self._refused is not None:
            raise self._refused
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = SMTP(hostname=self.host, port=self.port, use_tls=self.security == "tls",
                      start_tls=self.security == "starttls", tls_context=self._ssl_context, timeout=self.timeout,
                      local_hostname=self._local_hostname)
        try:
            await client.connect()
            if self.username and self._password is not None:
                await client.login(self.username, self._password.get_secret_value())
        except SMTPAuthenticationError as exc:
            client.close()
            if 400 <= exc.code < 500:  # 454: a temporary authentication failure (RFC 4954)
                raise ProviderUnavailable(f"{self.where} could not check the login now: {exc.code} {exc.message}",
                                          status=exc.code, body=exc.message) from None
            raise ProviderAuthError(f"{self.where} refused the login of {self.username!r}: {exc.code} {exc.message}",
                                    status=exc.code, body=exc.message) from None
        except SMTPResponseException as exc:
            client.close()
            raise ProviderUnavailable(f"cannot connect to {self.where}: {exc.code} {exc.message}",
                                      status=exc.code, body=exc.message) from None
        except (SMTPException, OSError) as exc:
            client.close()
            if self.username and "AUTH extension" in str(exc):
                raise ProviderAuthError(f"{self.where} offers no login (AUTH) to {self.username!r}") from None
            raise ProviderUnavailable(f"cannot connect to {self.where} ({self.security}): {_describe(exc)}") from None
        log.debug("connected to %s (%s)", self.where, self.security)
        return client

    async def aclose(self) -> None:
        """Say QUIT on every idle connection."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                if client.is_connected:
                    await client.quit(timeout=min(self.timeout, 5.0))
            except (SMTPException, OSError):
                pass
            finally:
                client.close()


def _closed(client: SMTP | None) -> None:
    if client is not None:
        client.close()


def _failed(person: Recipient, error_class: Literal["permanent", "transient"], text: str,
            suppress: bool = False) -> Outcome:
    return Outcome(delivery_id=person.delivery_id, status="failed", error_class=error_class, error_text=text,
                   suppress=suppress)


def _refused(person: Recipient, exc: SMTPResponseException, what: str) -> Outcome:
    """A 5xx reply is a permanent failure, anything else transient (RFC 5321 4.2.1)."""
    permanent = 500 <= exc.code < 600
    suppress = permanent and what == "recipient" and bool(_NO_SUCH_MAILBOX.match(exc.message))
    return _failed(person, "permanent" if permanent else "transient", f"{what} refused: {exc.code} {exc.message}",
                   suppress=suppress)


def _queue_id(reply: SMTPResponse) -> str | None:
    text = " ".join(reply.message.split())
    for pattern in _QUEUE_ID:
        if match := pattern.search(text):
            return match[1]
    return None


async def _reset(client: SMTP) -> None:
    """RSET after a refusal, so the next transaction starts clean; a connection that fails it is closed."""
    if not client.is_connected:
        return
    try:
        await client.rset()
    except (SMTPException, OSError):
        client.close()


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(cause, OSError) and str(cause) and str(cause) not in text:  # ssl.SSLError is an OSError
        text = f"{text}: {cause}"
    return text
