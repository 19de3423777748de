"""What the console's page tests build: staff accounts, subscribers, a send with deliveries, a scheduled send."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from pipeline import accounts, schedule, send
from pipeline.prepare import prepare_and_write
from pipeline.store import Store, utcnow
from pipeline.store.tables import subscribers
from pipeline.subscribers import import_subscribers
from tests.conftest import SAMPLE, write_draft
from tests.web.conftest import csrf_of
from tests.web.test_staff_auth import PASSWORD, sign_in

__all__ = ["PASSWORD", "add_staff", "people", "post_form", "scheduled", "sent_to_all", "sign_in", "subscriber_id"]


def add_staff(store: Store) -> None:
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("ada", "admin")):
        accounts.add(store, name, role, PASSWORD, by="test")


def people(store: Store, project: Path, rows: list[tuple[str, str, str]]) -> None:
    path = project / "people.csv"
    path.write_text("email,name,tags\n" + "".join(f"{e},{n},{t}\n" for e, n, t in rows), encoding="utf-8")
    assert not import_subscribers(store, path).rejected


def subscriber_id(store: Store, email: str) -> int:
    with store.read() as connection:
        found = connection.scalar(select(subscribers.c.id).where(subscribers.c.email_key == email.lower()))
    assert found is not None, email
    return int(found)


def sent_to_all(store: Store, settings, project: Path) -> int:
    """A send of a short edition to everyone active, its rows queued (not yet sent)."""
    folder = write_draft(project, "2024-03-01-hello", 'subject: "Hello"\ndate: 2024-03-01\n',
                         "Hello {{ name }}.\n\nThe China-Russia Report is an independent, nonpartisan newsletter.\n")
    built = prepare_and_write(folder, settings)
    return send.create_send(store, settings, built.edition, built_path=str(built.folder))


def scheduled(store: Store, settings, project: Path, *, hours: float = 24) -> int:
    """The sample draft scheduled ``hours`` ahead."""
    build = prepare_and_write(project / "drafts" / SAMPLE, settings)
    at = utcnow() + dt.timedelta(hours=hours)
    return schedule.schedule_build(store, settings, build, at, timezone=settings.publication.timezone)


def post_form(client, page_path: str, action: str, data: dict[str, str]):
    """Open ``page_path`` (the confirmation step), then post its form with its CSRF token to ``action``."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(action, data={"csrf_token": csrf_of(page.text), **data}, follow_redirects=False)
