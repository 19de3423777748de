"""The schedule in the console: upcoming and past in the publication's zone and UTC, whether the draft changed,
an editor's move and cancel (only what the table of moves allows), and the JSON twin."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select, update

from pipeline.store import staff as audit_db
from pipeline.store import utcnow
from pipeline.store.states import SEND_MOVES
from pipeline.store.tables import SEND_STATUSES, sends
from tests.conftest import SAMPLE
from tests.web.conftest import csrf_of
from tests.web.staffing import add_staff, post_form, scheduled, sign_in


@pytest.fixture
def planned(store, settings, project):
    add_staff(store)
    return scheduled(store, settings, project)


def _send(store, send_id: int):
    with store.read() as connection:
        return connection.execute(select(sends).where(sends.c.id == send_id)).one()


def _ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'<td><a href="/staff/sends/(\d+)">', html)]


def test_every_page_sends_anonymous_visitors_to_sign_in(client, planned) -> None:
    for path in ("/staff/schedule", "/staff/schedule?format=json", f"/staff/schedule/{planned}/move",
                 f"/staff/schedule/{planned}/cancel"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/staff/login?next="), path


def test_the_schedule_shows_times_in_both_zones_and_whether_the_draft_changed(client, settings, project,
                                                                               planned) -> None:
    sign_in(client, "vera")
    page = client.get("/staff/schedule")
    assert page.status_code == 200 and _ids(page.text) == [planned]
    row = _send(client.app.state.site.store, planned)
    local = row.scheduled_at.astimezone(settings.publication.zone)
    assert f"{local:%Y-%m-%d %H:%M} {local.tzname()}" in page.text and f"{row.scheduled_at:%H:%M} UTC" in page.text
    assert "<td>no</td>" in page.text
    assert "/move" not in page.text  # a viewer sees no action
    draft = project / "drafts" / SAMPLE / "draft.md"
    draft.write_text(draft.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
    assert "<td>yes</td>" in client.get("/staff/schedule").text
    twin = client.get("/staff/schedule?format=json").json()
    assert [r["id"] for r in twin["rows"]] == [planned] and twin["rows"][0]["changed"] == "yes"
    assert twin["rows"][0]["at"] == row.scheduled_at.isoformat() and twin["upcoming"] == [planned]


def test_html_and_json_list_the_same_sends_upcoming_then_past(client, store, settings, project, planned) -> None:
    with store.begin() as connection:  # the first missed its time yesterday
        connection.execute(update(sends).where(sends.c.id == planned).values(
            status="missed", scheduled_at=utcnow() - dt.timedelta(days=1), status_reason="the runner was down"))
    later = scheduled(store, settings, project, hours=48)
    sign_in(client, "ed")
    page = client.get("/staff/schedule")
    assert _ids(page.text) == [later, planned]
    twin = client.get("/staff/schedule?format=json").json()
    assert [row["id"] for row in twin["rows"]] == [later, planned] and twin["upcoming"] == [later]
    assert f"/staff/schedule/{planned}/move" in page.text and "the runner was down" in page.text


def test_viewers_get_403_and_a_post_needs_the_csrf_token(client, planned) -> None:
    sign_in(client, "vera")
    token = csrf_of(client.get("/staff/schedule").text)
    for verb in ("move", "cancel"):
        assert client.get(f"/staff/schedule/{planned}/{verb}").status_code == 403
        assert client.post(f"/staff/schedule/{planned}/{verb}", data={"csrf_token": token}).status_code == 403
    client.cookies.clear()
    sign_in(client, "ed")
    assert client.post(f"/staff/schedule/{planned}/cancel", data={}).status_code == 403
    assert _send(client.app.state.site.store, planned).status == "scheduled"


def test_move_reads_the_publication_zone_and_refuses_the_past(client, store, settings, planned) -> None:
    sign_in(client, "ed")
    path = f"/staff/schedule/{planned}/move"
    form = client.get(path)
    assert 'type="datetime-local"' in form.text and settings.publication.timezone in form.text
    past = post_form(client, path, path, {"at": "2001-01-01T09:00"})
    assert past.status_code == 400 and "is in the past" in past.text
    assert post_form(client, path, path, {"at": "tomorrow"}).status_code == 400
    assert post_form(client, path, path, {"at": ""}).status_code == 400
    assert post_form(client, path, path, {"at": "2030-01-01T09:00", "fold": "7"}).status_code == 400
    wall = (utcnow() + dt.timedelta(days=3)).astimezone(settings.publication.zone).replace(hour=12, minute=0)
    answer = post_form(client, path, path, {"at": f"{wall:%Y-%m-%dT%H:%M}"})
    assert answer.status_code == 303 and answer.headers["location"] == f"/staff/schedule?done=moved&send={planned}"
    row = _send(store, planned)
    assert row.status == "scheduled"
    assert row.scheduled_at == wall.replace(second=0, microsecond=0).astimezone(dt.UTC)
    entry = audit_db.audit_log(store, target=f"send:{planned}")[0]
    assert (entry.user_name, entry.action) == ("ed", "schedule move")
    assert f"Send {planned} moved." in client.get(answer.headers["location"]).text


def test_cancel_is_confirmed_then_made_and_audited(client, store, planned) -> None:
    sign_in(client, "ed")
    path = f"/staff/schedule/{planned}/cancel"
    assert "never goes out" in client.get(path).text
    answer = post_form(client, path, path, {})
    assert answer.status_code == 303
    assert _send(store, planned).status == "cancelled"
    assert audit_db.audit_log(store, target=f"send:{planned}")[0].action == "schedule cancel"
    assert client.get(path).status_code == 409  # cancelled is final
    twin = client.get("/staff/schedule?format=json").json()  # never going out: past, though its time is ahead
    assert twin["upcoming"] == [] and [row["id"] for row in twin["rows"]] == [planned]
    assert client.get(f"/staff/schedule/{planned}/move").status_code == 409
    assert client.get("/staff/schedule/9999/move").status_code == 404


@pytest.mark.parametrize("status", SEND_STATUSES)
def test_only_the_moves_of_the_table_are_offered_and_made(client, store, planned, status) -> None:
    with store.begin() as connection:
        connection.execute(update(sends).where(sends.c.id == planned).values(status=status))
    sign_in(client, "ed")
    page = client.get("/staff/schedule").text
    movable = status in SEND_MOVES["reschedule"].sources
    cancellable = movable and status in SEND_MOVES["cancel"].sources
    assert (f"/staff/schedule/{planned}/move" in page) == movable
    assert (f"/staff/schedule/{planned}/cancel" in page) == cancellable
    if not cancellable:
        token = csrf_of(page)
        assert client.post(f"/staff/schedule/{planned}/cancel", data={"csrf_token": token}).status_code == 409
        assert client.post(f"/staff/schedule/{planned}/move",
                           data={"csrf_token": token, "at": "2031-01-01T09:00"}).status_code == 409
        assert _send(store, planned).status == status
