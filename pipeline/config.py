"""One typed settings object, loaded and validated in one place.

Settings come from ``newsletter.toml`` in the current folder, or the file named
by ``--config PATH`` or ``NEWSLETTER_CONFIG``. Relative paths resolve against the
folder of that file. Unknown keys and wrong types are errors naming the key and
its line; numbers are strict (``batch_size = true`` is not 1), and the names and
addresses that reach mail headers must be one line. Each stage is handed only
the slice it needs (``settings.publication``, ``settings.checks`` ...).
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from email_validator import EmailNotValidError, validate_email
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from pipeline.errors import ConfigError
from pipeline.oneline import one_line
from pipeline.providers import check_name

CONFIG_ENV = "NEWSLETTER_CONFIG"
SECRET_ENV = "NEWSLETTER_SECRET"
SECRET_FILE_ENV = "NEWSLETTER_SECRET_FILE"
DEFAULT_CONFIG = "newsletter.toml"
# Gmail clips a message whose HTML is larger than about 102 KB.
GMAIL_CLIP_BYTES = 102_000
MIN_SECRET_BYTES = 32  # the signing secret is an HMAC key: a short one can be guessed
MAKE_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true for 1 in an int or float field; a TOML boolean is never a number.
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if {annotation, *get_args(annotation)} & {int, float}:
                raise ValueError(f"must be a number, not {str(value).lower()}")
        return value


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an absolute http(s) address, got {value!r}")
    return value.rstrip("/")


def _check_address(value: str) -> str:
    """Accept ``addr@host`` or ``Display Name <addr@host>``, on one line: it becomes a mail header."""
    one_line(value)
    match = re.fullmatch(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<addr>[^<>]+)>|(?P<bare>[^<>\s]+))\s*", value)
    if not match:
        raise ValueError(f"is not an email address: {value!r}")
    try:
        validate_email(match["addr"] or match["bare"], check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"is not an email address: {value!r} ({exc})") from None
    return value.strip()


def _check_rate(value: str) -> str:
    """A rate in ``limits`` notation: "10/hour", "5 per 15 minutes"."""
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"is not a rate such as '10/hour' or '5 per day': {value!r}") from None
    return value


class Publication(_Section):
    """Who publishes, and the standing text of every edition."""

    name: str
    from_: str = Field(alias="from")
    reply_to: str | None = None
    postal_address: str
    base_url: str
    asset_base_url: str
    timezone: str = "UTC"
    language: str = "en"
    footer: str = ""

    _urls = field_validator("base_url", "asset_base_url")(_check_url)
    _name = field_validator("name")(one_line)  # the display name of every message's From

    @field_validator("from_", "reply_to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else _check_address(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Paths(_Section):
    """Where drafts, templates, subscribers and outputs live (absolute after loading)."""

    templates: Path = Path("templates")
    drafts: Path = Path("drafts")
    subscribers: Path = Path("subscribers")
    build: Path = Path("build")
    outbox: Path = Path("outbox")
    cache: Path = Path(".newsletter-cache")


class Checks(_Section):
    """What every edition must satisfy before it may be sent."""

    required_disclaimers: tuple[str, ...] = ()
    max_html_bytes: int = Field(default=GMAIL_CLIP_BYTES, gt=0)
    # Link reachability.
    allow_hosts: tuple[str, ...] = ()  # local or private hosts links may point to (staging, tests)
    unreachable: Literal["error", "warning"] = "error"  # DNS or connection failure
    link_timeout: float = Field(default=10.0, gt=0)  # seconds per request
    link_concurrency: int = Field(default=128, ge=1)
    link_per_host: int = Field(default=4, ge=1)
    link_cache_hours: float = Field(default=24.0, ge=0)
    retry_after_cap: float = Field(default=30.0, ge=0)  # longest Retry-After honoured, seconds
    max_redirects: int = Field(default=10, ge=0)
    # Images and client support.
    max_image_kb: int = Field(default=200, gt=0)
    clients: tuple[str, ...] = ("gmail", "apple-mail", "outlook", "yahoo")
    compat_ignore: tuple[str, ...] = ()  # caniemail feature ids the template uses on purpose


class Send(_Section):
    """How a sender owns the send it sends.

    A send is owned by one sender's lease, renewed every third of
    ``lease_seconds`` while that sender lives; another may take the send over
    only once the lease has expired, so after a crash a send can be resumed
    that long after its sender died.
    """

    lease_seconds: float = Field(default=30.0, gt=0, le=3600)


class Workers(_Section):
    """How ``newsletter worker`` processes share sends on PostgreSQL (procrastinate).

    With ``enabled`` (the default), ``send --now``, ``send --resume`` and ``newsletter run`` on PostgreSQL cut a
    send into jobs of ``part_size`` rows and hand them to the workers; on SQLite, or with ``enabled = false``,
    they send in-process. A worker writes a heartbeat every ``heartbeat_seconds``; one silent for
    ``stall_seconds`` is taken for dead, and its jobs are run again by another.
    """

    enabled: bool = True
    concurrency: int = Field(default=1, ge=1, le=64)  # jobs (parts of sends) one worker runs at once
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=600)
    stall_seconds: float = Field(default=60.0, gt=0, le=3600)
    part_size: int = Field(default=1000, ge=1, le=1_000_000)  # delivery rows per job

    @model_validator(mode="after")
    def _stall_after_heartbeats(self) -> Workers:
        if self.stall_seconds <= self.heartbeat_seconds:
            raise ValueError(f"stall_seconds ({self.stall_seconds:g}) must be longer than heartbeat_seconds "
                             f"({self.heartbeat_seconds:g}): a live worker would be taken for dead")
        return self


class Schedule(_Section):
    """How ``newsletter run`` fires scheduled sends."""

    max_lateness: float = Field(default=3600.0, ge=0)  # seconds late a send may still go out after downtime
    poll_seconds: float = Field(default=1.0, gt=0, le=60)  # how often the drafts and the store are looked at
    offline_checks: bool = False  # re-check at fire time without requesting links


class Notify(_Section):
    """Who hears about held, missed and failed sends, and every send's summary."""

    staff: tuple[str, ...] = ()

    @field_validator("staff")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_address(address) for address in value)


class Web(_Section):
    """What ``newsletter serve`` offers readers: where it listens, the topics of the signup form, its limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    # The tags a reader may choose at signup and in their preferences, each with the label they see.
    topics: dict[str, str] = Field(default_factory=dict)
    confirm_hours: float = Field(default=48.0, gt=0)  # how long a signup's confirmation link works
    signup_rate_ip: str = "10/hour"  # signups one address on the internet may make (``limits`` notation)
    signup_rate_address: str = "5/day"  # signups for one email address
    resend_minutes: float = Field(default=60.0, ge=0)  # a pending signup is mailed again at most this often
    max_body_bytes: int = Field(default=1_000_000, ge=1024)  # a larger request is refused (413)
    # The addresses of reverse proxies whose X-Forwarded-For is believed (uvicorn's forwarded_allow_ips).
    forwarded_allow_ips: str = "127.0.0.1"

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: dict[str, str]) -> dict[str, str]:
        for tag, label in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", tag):
                raise ValueError(f"topic {tag!r} is not a tag (lower-case letters, digits, - and _)")
            one_line(label)
        return value

    _rates = field_validator("signup_rate_ip", "signup_rate_address")(_check_rate)


class Webhooks(_Section):
    """Provider webhooks: the *names* of the environment variables holding each provider's keys."""

    postmark_user_env: str = "POSTMARK_WEBHOOK_USER"  # HTTP Basic credentials set on the webhook's URL
    postmark_password_env: str = "POSTMARK_WEBHOOK_PASSWORD"
    sendgrid_public_key_env: str = "SENDGRID_WEBHOOK_PUBLIC_KEY"  # the Signed Event Webhook's ECDSA key
    mailgun_signing_key_env: str = "MAILGUN_WEBHOOK_SIGNING_KEY"  # HMAC-SHA256 of timestamp + token
    resend_secret_env: str = "RESEND_WEBHOOK_SECRET"  # Svix: whsec_...
    tolerance_seconds: float = Field(default=300.0, gt=0)  # an older signed timestamp is a replay
    soft_bounce_limit: int = Field(default=3, ge=1)  # soft bounces in a row that suppress an address


class Staff(_Section):
    """The staff console: how long a sign-in lasts, and how many wrong passwords it takes."""

    session_hours: float = Field(default=8.0, gt=0, le=24 * 30)  # a session ends this long after sign-in
    idle_minutes: float = Field(default=60.0, gt=0)  # ... or after this long without a request
    login_rate_account: str = "5/15 minutes"  # failed sign-ins one account may take (``limits`` notation)
    login_rate_ip: str = "20/hour"  # failed sign-ins from one address on the internet

    _rates = field_validator("login_rate_account", "login_rate_ip")(_check_rate)


class WebhookSecrets(BaseModel):
    """The webhook keys themselves, read from the variables ``[webhooks]`` names; None where a variable is unset
    (that provider's endpoint then refuses every request)."""

    model_config = ConfigDict(frozen=True)

    postmark_user: SecretStr | None = None
    postmark_password: SecretStr | None = None
    sendgrid_public_key: SecretStr | None = None
    mailgun_signing_key: SecretStr | None = None
    resend_secret: SecretStr | None = None

    @classmethod
    def from_environment(cls, names: Webhooks) -> WebhookSecrets:
        def read(variable: str) -> SecretStr | None:
            value = os.environ.get(variable, "").strip()
            return SecretStr(value) if value else None

        return cls(postmark_user=read(names.postmark_user_env), postmark_password=read(names.postmark_password_env),
                   sendgrid_public_key=read(names.sendgrid_public_key_env),
                   mailgun_signing_key=read(names.mailgun_signing_key_env), resend_secret=read(names.resend_secret_env))


class Database(_Section):
    url: str = "sqlite:///newsletter.db"


class Provider(_Section):
    """The mail provider, how much it is handed at once, and how fast.

    Keys hold the *name* of an environment variable (``api_key_env``,
    ``password_env``), never the secret itself.
    """

    name: str = "outbox"  # a name in pipeline.providers.PROVIDERS
    base_url: str | None = None  # default: the provider's real API host
    api_key_env: str | None = None  # e.g. "POSTMARK_SERVER_TOKEN"
    # recipients per batch; unset: the provider's most (Postmark 500, SendGrid and Mailgun 1,000, Resend 100,
    # SMTP 100, outbox 1,000); a larger number is capped by it
    batch_size: int | None = Field(default=None, ge=1, le=1000)
    # batches in flight; unset: what suits the provider (Postmark 8, the others 4; see providers.concurrency)
    concurrency: int | None = Field(default=None, ge=1, le=64)
    rate_per_second: float = Field(default=0, ge=0)  # messages per second; 0: no limit
    timeout: float = Field(default=30.0, gt=0)  # seconds to wait for an answer
    max_retries: int = Field(default=5, ge=0)
    pause_after_failures: int = Field(default=5, ge=1)  # consecutive failed batches before the send pauses
    message_stream: str = "broadcast"  # Postmark
    domain: str | None = None  # Mailgun sending domain
    region: Literal["us", "eu"] = "us"  # Mailgun
    host: str | None = None  # SMTP relay
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"  # SMTP
    username: str | None = None  # SMTP
    password_env: str | None = None  # SMTP: the variable holding the password

    _base = field_validator("base_url")(lambda value: None if value is None else _check_url(value))
    _name = field_validator("name")(check_name)


class Settings(_Section):
    """Every setting of the pipeline, validated."""

    publication: Publication
    paths: Paths = Paths()
    checks: Checks = Checks()
    database: Database = Database()
    provider: Provider = Provider()
    send: Send = Send()
    workers: Workers = Workers()
    schedule: Schedule = Schedule()
    notify: Notify = Notify()
    web: Web = Web()
    webhooks: Webhooks = Webhooks()
    staff: Staff = Staff()
    source: Path = Field(default=Path(DEFAULT_CONFIG), exclude=True)
    # The signing secret of unsubscribe links: from NEWSLETTER_SECRET or the file named by
    # NEWSLETTER_SECRET_FILE, never from the settings file, and never printed.
    secret: SecretStr | None = Field(default=None, exclude=True)
    # The provider's API key or SMTP password, read from the variable the settings name.
    provider_secret: SecretStr | None = Field(default=None, exclude=True)
    # The providers' webhook keys, read from the variables [webhooks] names.
    webhook_secrets: WebhookSecrets = Field(default=WebhookSecrets(), exclude=True)

    @property
    def root(self) -> Path:
        """The folder that relative paths in the settings are read against."""
        return self.source.parent


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The settings file to use: ``--config``, then ``NEWSLETTER_CONFIG``, then ./newsletter.toml."""
    chosen = explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    return Path(chosen)


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the settings file; raise ConfigError naming the file and key."""
    path = config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("settings file not found (use --config PATH or NEWSLETTER_CONFIG)", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=path) from None
    if "secret" in raw:
        raise ConfigError("the signing secret must not be in the settings file: set NEWSLETTER_SECRET "
                          "or NEWSLETTER_SECRET_FILE", path=path, line=_line_of(text, ("secret",)))
    try:
        settings = Settings.model_validate({**raw, "source": path.resolve(), "secret": _secret(),
                                            "provider_secret": _provider_secret(raw)})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(_describe(error, key), path=path, line=_line_of(text, error["loc"])) from None
    root = settings.root
    paths = {name: root / value for name, value in settings.paths.model_dump().items()}
    return settings.model_copy(update={"paths": Paths(**paths),
                                       "webhook_secrets": WebhookSecrets.from_environment(settings.webhooks)})


def _secret() -> str | None:
    """The signing secret from the environment, or from the file it names; at least MIN_SECRET_BYTES long."""
    if os.environ.get(SECRET_ENV):
        return _long_enough(os.environ[SECRET_ENV], SECRET_ENV)
    secret_file = os.environ.get(SECRET_FILE_ENV)
    if not secret_file:
        return None
    try:
        secret = Path(secret_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file named by {SECRET_FILE_ENV}: {exc.strerror}",
                          path=secret_file) from None
    if not secret:
        raise ConfigError(f"the secret file named by {SECRET_FILE_ENV} is empty", path=secret_file)
    return _long_enough(secret, f"the file named by {SECRET_FILE_ENV}", path=secret_file)


def _long_enough(secret: str, where: str, *, path: str | None = None) -> str:
    """``secret`` itself, or a ConfigError that says how long it is (never what it is) and how to make one."""
    size = len(secret.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(f"the signing secret in {where} is {size} bytes long, it needs at least "
                          f"{MIN_SECRET_BYTES}: make one with {MAKE_SECRET}", path=path)
    return secret


def _provider_secret(raw: dict[str, Any]) -> str | None:
    provider = raw.get("provider")
    if not isinstance(provider, dict):
        return None
    variable = provider.get("api_key_env") or provider.get("password_env")
    return os.environ.get(variable) or None if isinstance(variable, str) else None


def _describe(error: ErrorDetails, key: str) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if error["type"] == "missing":
        return f"missing required key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error":
        message = f"{message} (got {error.get('input')!r})"
    return f"{key}: {message}"


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line of the offending key: the key's line inside its [table], or the [table] itself."""
    names = [str(part) for part in loc if not isinstance(part, int)]
    if not names:
        return None
    *table, key = names
    current: list[str] = []  # the table the line is in; [] before the first [table]
    for number, line in enumerate(text.splitlines(), start=1):
        header = _TABLE.match(line)
        if header:
            current = [part.strip() for part in header[1].split(".")]
            if current[: len(names)] == names:  # a whole table, such as an unknown [publicaton]
                return number
        elif current == table and re.match(r"^\s*" + re.escape(key) + r"\s*=", line):
            return number
    return None


SECRET_WORDS = ("password", "secret", "token", "key")


def masked(value: str) -> str:
    """Hide the password of a URL such as postgresql://user:pw@host/db."""
    parts = urlsplit(value)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return value


def describe_settings(settings: Settings) -> str:
    """The effective settings as TOML, with secrets masked, for ``config show``."""
    data = settings.model_dump(by_alias=True, mode="json")
    for values in data.values():
        for key, value in list(values.items()):
            if value is None:
                del values[key]
            elif isinstance(value, str):
                hidden = any(word in key for word in SECRET_WORDS) and not key.endswith("_env")
                values[key] = "***" if hidden else masked(value)
    secret = "set" if settings.secret is not None else "not set"
    key_env = settings.provider.api_key_env or settings.provider.password_env
    key = f"# provider key (${key_env}): {'set' if settings.provider_secret else 'not set'}\n" if key_env else ""
    hooks = settings.webhook_secrets
    webhooks = ", ".join(f"{name} {'set' if getattr(hooks, name) else 'not set'}"
                         for name in WebhookSecrets.model_fields)
    return (f"# effective settings from {settings.source}\n"
            f"# signing secret ({SECRET_ENV} or {SECRET_FILE_ENV}): {secret}\n{key}"
            f"# webhook keys: {webhooks}\n" + tomli_w.dumps(data))
