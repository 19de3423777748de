"""Fixtures that build real things: a project folder, drafts, settings files."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"
SECRET_VARIABLES = ("NEWSLETTER_SECRET", "NEWSLETTER_CONFIG", "POSTMARK_SERVER_TOKEN", "SENDGRID_API_KEY",
                    "MAILGUN_API_KEY", "RESEND_API_KEY", "SMTP_PASSWORD", "POSTMARK_WEBHOOK_USER",
                    "POSTMARK_WEBHOOK_PASSWORD", "SENDGRID_WEBHOOK_PUBLIC_KEY", "MAILGUN_WEBHOOK_SIGNING_KEY",
                    "RESEND_WEBHOOK_SECRET")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key, secret or settings path leaks in from the developer's shell."""
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)


DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the store, or is marked ``databases``, runs once on SQLite and once on PostgreSQL
    (ids ``[sqlite]`` and ``[postgresql]``); one marked ``postgresql`` (it needs a server: an outage, say) on
    PostgreSQL alone; the rest run on SQLite alone, where the database does not matter."""
    if "database" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("postgresql"):
        metafunc.parametrize("database", ["postgresql"], indirect=True, scope="function")
    elif "store" in metafunc.fixturenames or metafunc.definition.get_closest_marker("databases"):
        metafunc.parametrize("database", DATABASES, indirect=True, scope="function")


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    """Which database this test runs on: ``sqlite`` unless parametrised (see ``pytest_generate_tests``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database_url(database: str, request: pytest.FixtureRequest) -> str | None:
    """The URL the project's ``[database] url`` is set to: None for the sample's own SQLite file, or a fresh
    PostgreSQL database copied from the migrated template (``pg_template``)."""
    if database == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_migrated_url")
    return url


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None) -> Path:
    """A copy of the sample project (settings, templates, drafts) in a temporary folder, as cwd; its
    newsletter.toml names the test's database, so commands run in it or in a subprocess use that one."""
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(ROOT / "newsletter.toml", folder / "newsletter.toml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "drafts", folder / "drafts")
    if database_url is not None:
        point_at(folder / "newsletter.toml", database_url)
    monkeypatch.chdir(folder)
    return folder


def point_at(toml: Path, url: str) -> None:
    """Set the ``[database] url`` of a newsletter.toml."""
    text, replaced = re.subn(r'(?m)^url = "sqlite:///newsletter.db"$', f'url = "{url}"',
                             toml.read_text(encoding="utf-8"))
    assert replaced == 1, f"{toml} has no [database] url line"
    toml.write_text(text, encoding="utf-8")


SECRET = "a-test-signing-secret-of-32-bytes-at-least"


@pytest.fixture
def settings(project: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The sample project's settings, with a signing secret in the environment as sending needs."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    return load_settings(project / "newsletter.toml")


@pytest.fixture
def store(settings: Settings):
    """The project's real store, migrated: its SQLite file, or its PostgreSQL database."""
    from pipeline.store import Store

    store = Store.from_settings(settings)
    yield store
    store.dispose()


def write_draft(project: Path, name: str, front: str, body: str) -> Path:
    """Write drafts/<name>/draft.md with the given front matter and body; return the folder."""
    folder = project / "drafts" / name
    folder.mkdir(parents=True, exist_ok=True)
    text = f"---\n{textwrap.dedent(front).strip()}\n---\n{textwrap.dedent(body).lstrip()}"
    (folder / "draft.md").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run the newsletter command in-process; return (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def chromium_available() -> bool:
    return Path(os.environ.get("NEWSLETTER_CHROMIUM", "/usr/bin/chromium")).exists()


def sender_died(store, send_id: int, *, runner: str = "elsewhere:1:dead") -> None:
    """Make ``send_id`` look owned by a sender on another machine whose lease ran out a minute ago."""
    import datetime as dt

    from pipeline.store import utcnow
    from pipeline.store.tables import sends

    with store.begin() as connection:
        connection.execute(sends.update().where(sends.c.id == send_id).values(
            runner=runner, lease_until=utcnow() - dt.timedelta(minutes=1)))


def part(message: email.message.EmailMessage, kind: str) -> str:
    """The text of a message's ``plain`` or ``html`` part (the test fails if it has none)."""
    body = message.get_body((kind,))
    assert body is not None, f"no {kind} part"
    return str(body.get_content())


def parsed(data: bytes) -> email.message.EmailMessage:
    """A message parsed strictly, as a standards-minded client would."""
    message = email.message_from_bytes(data, policy=email.policy.strict)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A throwaway PostgreSQL cluster for the whole run (``tests/pgcluster.py``), stopped and removed at the end."""
    from tests.pgcluster import Cluster

    cluster = Cluster.start()
    yield cluster
    cluster.stop()


def _database_name(request: pytest.FixtureRequest) -> str:
    return "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + os.urandom(3).hex()


@pytest.fixture
def pg_url(pg_cluster, request: pytest.FixtureRequest):
    """The URL of a new, empty database in the throwaway cluster, for this test alone."""
    name = _database_name(request)
    url = pg_cluster.create_database(name)
    yield url
    pg_cluster.drop_database(name)


TEMPLATE = "newsletter_template"


@pytest.fixture(scope="session")
def pg_template(pg_cluster) -> str:
    """A database migrated once per run, to copy: ``CREATE DATABASE ... TEMPLATE`` costs a file copy, where
    running every migration again costs a second per test."""
    from pipeline.store import Store

    pg_cluster.create_database(TEMPLATE)
    store = Store(pg_cluster.url(TEMPLATE))
    store.migrate()
    store.dispose()  # a template must have no connections when it is copied
    return TEMPLATE


@pytest.fixture
def pg_migrated_url(pg_cluster, pg_template: str, request: pytest.FixtureRequest):
    """The URL of a new database with every migration applied (a copy of the template), for this test alone."""
    name = _database_name(request)
    url = pg_cluster.create_database(name, template=pg_template)
    yield url
    pg_cluster.drop_database(name)
