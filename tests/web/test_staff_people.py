"""Subscribers in the console: search, keyset pages, the JSON twin, a subscriber's history, staff unsubscribe and
resubscribe (double opt-in), and who may do what."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from pipeline.store import staff as audit_db
from pipeline.store.tables import deliveries, events, signups, subscribers, suppressions
from tests.conftest import parsed, part
from tests.web.conftest import csrf_of
from tests.web.staffing import add_staff, people, post_form, sent_to_all, sign_in, subscriber_id

ROWS = [("ada@example.net", "Ada Lovelace", "policy"), ("bob@example.net", "Bob Brown", "energy"),
        ("carol@example.org", "Carol", "policy;energy")]


@pytest.fixture
def crowd(store, project):
    add_staff(store)
    people(store, project, ROWS)
    return store


def _ids(html: str) -> list[int]:
    return [int(found) for found in re.findall(r'href="/staff/subscribers/(\d+)"', html)]


def _json_ids(answer) -> list[int]:
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    return [row["id"] for row in answer.json()["rows"]]


def test_every_page_sends_anonymous_visitors_to_sign_in(client, crowd) -> None:
    target = subscriber_id(crowd, "ada@example.net")
    for path in ("/staff/subscribers", "/staff/subscribers?search=ada", f"/staff/subscribers/{target}",
                 f"/staff/subscribers/{target}/unsubscribe", f"/staff/subscribers/{target}/resubscribe"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/staff/login?next="), path
    assert client.post(f"/staff/subscribers/{target}/unsubscribe", data={"reason": "x"}).status_code == 401


def test_search_status_and_tag_filter_and_the_json_twin_has_the_same_rows(client, crowd) -> None:
    sign_in(client, "vera")
    for query, expected in (("", ["ada", "bob", "carol"]), ("search=ADA", ["ada"]), ("search=brown", ["bob"]),
                            ("search=example.org", ["carol"]), ("tag=energy", ["bob", "carol"]),
                            ("tag=energy&search=car", ["carol"]), ("status=unsubscribed", []),
                            ("search=%25", []), ("search=_", [])):
        ids = [subscriber_id(crowd, f"{name}@example.{'org' if name == 'carol' else 'net'}") for name in expected]
        page = client.get(f"/staff/subscribers?{query}")
        assert page.status_code == 200 and _ids(page.text) == ids, query
        assert _json_ids(client.get(f"/staff/subscribers?{query}&format=json")) == ids, query


def test_pages_follow_the_keyset_and_keep_the_filters(client, store, project) -> None:
    add_staff(store)
    people(store, project, [(f"r{n:03d}@example.net", f"R{n}", "policy" if n % 2 else "energy") for n in range(130)])
    sign_in(client, "vera")
    seen: list[int] = []
    path: str | None = "/staff/subscribers?tag=policy"
    while path:
        page = client.get(path)
        seen += _ids(page.text)
        found = re.search(r'href="([^"]+)" rel="next"', page.text)
        path = found[1].replace("&amp;", "&") if found else None
        if path:
            assert "tag=policy" in path and "after=" in path
    assert len(seen) == 65 and seen == sorted(set(seen))
    twin = client.get(f"/staff/subscribers?tag=policy&format=json&after={seen[49]}").json()
    assert twin["rows"][0]["id"] == seen[50] and twin["next_after"] is None


@pytest.mark.parametrize("query, field", [("status=gone", "status"), ("after=abc", "after"), ("tag=a%20b", "tag"),
                                          ("format=xml", "format"), ("search=" + "x" * 400, "search")])
def test_bad_filters_get_a_plain_400_naming_the_field(client, crowd, query, field) -> None:
    sign_in(client, "vera")
    answer = client.get(f"/staff/subscribers?{query}")
    assert answer.status_code == 400 and f"{field}:" in answer.text and "Traceback" not in answer.text


def test_a_subscriber_page_shows_deliveries_and_events(client, settings, crowd, project) -> None:
    send_id = sent_to_all(crowd, settings, project)
    target = subscriber_id(crowd, "ada@example.net")
    sign_in(client, "vera")
    page = client.get(f"/staff/subscribers/{target}")
    assert page.status_code == 200
    assert "ada@example.net" in page.text and "Ada Lovelace" in page.text and "policy" in page.text
    assert f'href="/staff/sends/{send_id}"' in page.text and "2024-03-01-hello" in page.text
    assert "queued" in page.text
    assert "Unsubscribe…" not in page.text  # a viewer sees no action
    twin = client.get(f"/staff/subscribers/{target}?format=json").json()
    assert twin["rows"][0]["email"] == "ada@example.net"
    assert [d["send_id"] for d in twin["deliveries"]] == [send_id]
    assert client.get("/staff/subscribers/99999").status_code == 404
    assert client.get("/staff/subscribers/abc").status_code == 404


def test_viewers_get_403_on_every_action(client, crowd) -> None:
    target = subscriber_id(crowd, "ada@example.net")
    sign_in(client, "vera")
    token = csrf_of(client.get("/staff/subscribers").text)
    for verb in ("unsubscribe", "resubscribe"):
        assert client.get(f"/staff/subscribers/{target}/{verb}").status_code == 403
        answer = client.post(f"/staff/subscribers/{target}/{verb}", data={"csrf_token": token, "reason": "x"})
        assert answer.status_code == 403
    with crowd.read() as connection:
        assert connection.scalar(select(subscribers.c.status).where(subscribers.c.id == target)) == "active"


def test_an_action_without_the_csrf_token_is_refused(client, crowd) -> None:
    target = subscriber_id(crowd, "ada@example.net")
    sign_in(client, "ed")
    for data in ({"reason": "asked by phone"}, {"reason": "asked by phone", "csrf_token": "forged"}):
        assert client.post(f"/staff/subscribers/{target}/unsubscribe", data=data).status_code == 403
    with crowd.read() as connection:
        assert connection.scalar(select(subscribers.c.status).where(subscribers.c.id == target)) == "active"


def test_staff_unsubscribe_suppresses_with_channel_staff_and_the_reason(client, settings, crowd, project) -> None:
    send_id = sent_to_all(crowd, settings, project)
    target = subscriber_id(crowd, "ada@example.net")
    sign_in(client, "ed")
    page = client.get(f"/staff/subscribers/{target}")
    assert f'href="/staff/subscribers/{target}/unsubscribe"' in page.text
    path = f"/staff/subscribers/{target}/unsubscribe"
    assert post_form(client, path, path, {"reason": ""}).status_code == 400  # the reason is asked for
    answer = post_form(client, path, path, {"reason": "asked by phone"})
    assert answer.status_code == 303 and answer.headers["location"] == f"/staff/subscribers/{target}?done=unsubscribed"
    with crowd.read() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == target)).one()
        event = connection.execute(select(events).where(events.c.subscriber_id == target)).one()
        suppressed = dict(connection.execute(select(suppressions.c.email_key, suppressions.c.reason)).all())
        rows = dict(connection.execute(select(deliveries.c.email, deliveries.c.status)
                                       .where(deliveries.c.send_id == send_id)).all())
    assert (row.status, row.unsubscribe_channel) == ("unsubscribed", "staff")
    assert (event.kind, event.channel, event.provider) == ("unsubscribed", "staff", "staff")
    assert "asked by phone" in event.detail and "ed" in event.detail
    assert suppressed == {"ada@example.net": "unsubscribed"}
    # the rest of the send in progress skips them; nobody else is dropped
    assert rows == {"ada@example.net": "suppressed", "bob@example.net": "queued", "carol@example.org": "queued"}
    entry = audit_db.audit_log(crowd, target=f"subscriber:{target}")[0]
    assert (entry.user_name, entry.action, entry.detail) == ("ed", "subscriber unsubscribe", "asked by phone")
    page = client.get(answer.headers["location"])
    assert "asked by phone" in page.text and "Unsubscribe…" not in page.text and "Resubscribe" in page.text
    assert client.get(path).status_code == 409  # not twice


def test_resubscribe_mails_a_confirmation_and_changes_no_status(client, settings, crowd) -> None:
    target = subscriber_id(crowd, "bob@example.net")
    sign_in(client, "ed")
    path = f"/staff/subscribers/{target}/unsubscribe"
    post_form(client, path, path, {"reason": "asked by letter"})
    assert client.get(f"/staff/subscribers/{target}/resubscribe").status_code == 200
    path = f"/staff/subscribers/{target}/resubscribe"
    answer = post_form(client, path, path, {"reason": "wrote back to say it was a mistake"})
    assert answer.status_code == 303 and answer.headers["location"].endswith("?done=mailed")
    mails = sorted(settings.paths.outbox.glob("signup-*/1.eml"))
    assert len(mails) == 1
    message = parsed(mails[0].read_bytes())
    assert message["To"].addresses[0].addr_spec == "bob@example.net"
    assert "/confirm/" in part(message, "plain")
    with crowd.read() as connection:
        status = connection.scalar(select(subscribers.c.status).where(subscribers.c.id == target))
        waiting = connection.execute(select(signups.c.email_key, signups.c.confirmed_at)).all()
        suppressed = connection.scalar(select(suppressions.c.reason)
                                       .where(suppressions.c.email_key == "bob@example.net"))
    assert status == "unsubscribed" and suppressed == "unsubscribed"
    assert waiting == [("bob@example.net", None)]
    entry = audit_db.audit_log(crowd, target=f"subscriber:{target}")[0]
    assert entry.action == "subscriber resubscribe" and "mistake" in entry.detail
    # asking again at once mails nothing more, and says so
    again = post_form(client, path, path, {"reason": "again"})
    assert again.headers["location"].endswith("?done=not-mailed")
    assert len(list(settings.paths.outbox.glob("signup-*/*.eml"))) == 1


def test_an_active_subscriber_cannot_be_resubscribed(client, crowd) -> None:
    target = subscriber_id(crowd, "ada@example.net")
    sign_in(client, "ed")
    assert client.get(f"/staff/subscribers/{target}/resubscribe").status_code == 409
    assert "Resubscribe" not in client.get(f"/staff/subscribers/{target}").text
