"""The reader's pages in-process: unsubscribe, signup with double opt-in, preferences, their data."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pipeline import messages, readers, send
from pipeline.prepare import prepare_and_write
from pipeline.store import readers as db
from pipeline.store import utcnow
from pipeline.store.tables import deliveries, events, signups, subscribers, suppressions
from pipeline.subscribers import import_subscribers
from tests.conftest import parsed, part, write_draft
from tests.web.conftest import csrf_of

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _people(store, project: Path, rows: list[tuple[str, str, str]]) -> None:
    path = project / "people.csv"
    path.write_text("email,name,tags\n" + "".join(f"{e},{n},{t}\n" for e, n, t in rows), encoding="utf-8")
    assert not import_subscribers(store, path).rejected


def _subscriber(store, email: str):
    with store.read() as connection:
        return connection.execute(select(subscribers).where(subscribers.c.email_key == email.lower())).one()


def _suppressed(store) -> dict[str, str]:
    with store.read() as connection:
        return dict(connection.execute(select(suppressions.c.email_key, suppressions.c.reason)).all())


@pytest.fixture
def ada(store, project):
    _people(store, project, [("ada@example.net", "Ada Lovelace", "policy"), ("bob@example.net", "Bob", "policy")])
    return _subscriber(store, "ada@example.net")


def _unsubscribe_path(settings, subscriber_id: int, send_id: int = 0) -> str:
    return "/u/" + messages.unsubscribe_token(settings, subscriber_id, send_id)


# Unsubscribe -------------------------------------------------------------------------------------------------


def test_a_get_never_unsubscribes(client, settings, store, ada) -> None:
    path = _unsubscribe_path(settings, ada.id)
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200
        assert "Unsubscribe from The China-Russia Report?" in page.text
        assert "a…@example.net" in page.text
        assert "ada@example.net" not in page.text
    assert _subscriber(store, "ada@example.net").status == "active"
    assert _suppressed(store) == {}
    assert page.headers["cache-control"] == "no-store"


def test_one_click_post_unsubscribes_without_cookie_or_csrf(client, settings, store, ada) -> None:
    path = _unsubscribe_path(settings, ada.id)
    client.cookies.clear()
    answer = client.post(path, data=ONE_CLICK)
    assert answer.status_code == 200
    row = _subscriber(store, "ada@example.net")
    assert (row.status, row.unsubscribe_channel) == ("unsubscribed", "one-click")
    assert row.unsubscribed_at is not None
    assert _suppressed(store) == {"ada@example.net": "unsubscribed"}
    assert client.post(path, data=ONE_CLICK).status_code == 200  # idempotent
    with store.read() as connection:
        kinds = connection.execute(select(events.c.kind, events.c.channel, events.c.provider)
                                   .where(events.c.subscriber_id == ada.id)).all()
    assert kinds == [("unsubscribed", "one-click", "web")]
    assert _subscriber(store, "bob@example.net").status == "active"


def test_the_page_button_needs_the_page_csrf_token(client, settings, store, ada) -> None:
    path = _unsubscribe_path(settings, ada.id)
    assert client.post(path, data={}).status_code == 403
    assert client.post(path, data={"csrf_token": "forged"}).status_code == 403
    assert _subscriber(store, "ada@example.net").status == "active"
    token = csrf_of(client.get(path).text)
    done = client.post(path, data={"csrf_token": token})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    row = _subscriber(store, "ada@example.net")
    assert (row.status, row.unsubscribe_channel) == ("unsubscribed", "page")


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-1], lambda t: t[:10], lambda t: t + "A", lambda t: ("B" if t[5] != "B" else "C").join((t[:5], t[6:])),
    lambda t: "not-a-token", lambda t: "%00" + t, lambda t: "é" * 43, lambda t: "A" * 500,
])
def test_forged_tampered_and_truncated_tokens_get_one_plain_page(client, settings, store, ada, mangle) -> None:
    genuine = messages.unsubscribe_token(settings, ada.id, 0)
    path = "/u/" + mangle(genuine)
    for answer in (client.get(path), client.post(path, data=ONE_CLICK)):
        assert answer.status_code == 400
        assert "This link is not valid" in answer.text
        assert "Traceback" not in answer.text and "ada" not in answer.text
    assert _subscriber(store, "ada@example.net").status == "active"


def test_a_token_of_another_purpose_does_not_open(client, settings, ada) -> None:
    preferences = readers.preferences_token(settings, ada.id)
    assert client.post(f"/u/{preferences}", data=ONE_CLICK).status_code == 400
    assert client.get(f"/p/{messages.unsubscribe_token(settings, ada.id, 0)}").status_code == 400


def test_an_unsubscribe_during_a_send_suppresses_the_rest_of_it(client, settings, store, project) -> None:
    _people(store, project, [(f"r{n}@example.net", f"R{n}", "policy") for n in range(5)])
    folder = write_draft(project, "2024-03-01-hello", 'subject: "Hello"\ndate: 2024-03-01\n',
                         "Hello {{ name }}.\n\nThe China-Russia Report is an independent, nonpartisan newsletter.\n")
    built = prepare_and_write(folder, settings)
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder))
    target = _subscriber(store, "r3@example.net")
    assert client.post(_unsubscribe_path(settings, target.id, send_id), data=ONE_CLICK).status_code == 200
    with store.read() as connection:
        statuses = dict(connection.execute(select(deliveries.c.email, deliveries.c.status)
                                           .where(deliveries.c.send_id == send_id)).all())
        event = connection.execute(select(events.c.send_id).where(events.c.subscriber_id == target.id)).scalar()
    assert statuses.pop("r3@example.net") == "suppressed"
    assert set(statuses.values()) == {"queued"}
    assert event == send_id


# Signup ------------------------------------------------------------------------------------------------------


def _confirmations(settings) -> list:
    return [parsed(path.read_bytes()) for path in sorted(settings.paths.outbox.glob("signup-*/*.eml"))]


def _confirm_path(message) -> str:
    found = re.search(r"https://report\.example\.org(/confirm/[A-Za-z0-9_-]+)", part(message, "plain"))
    assert found, "no confirmation link"
    return found[1]


def _sign_up(client, **fields: str | list[str]):
    token = csrf_of(client.get("/subscribe").text)
    return client.post("/subscribe", data={"csrf_token": token, **fields})


def test_signup_confirmation_and_activation(client, settings, store) -> None:
    answer = _sign_up(client, email="New.Reader@Example.net", name="New Reader")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(subscribers)) == 0  # pending is not subscribed
    [message] = _confirmations(settings)
    assert message["To"] == "New.Reader@example.net"
    assert message["List-Unsubscribe"] is None and message["List-Id"] is None
    assert message["Subject"] == "Confirm your subscription to The China-Russia Report"
    path = _confirm_path(message)
    assert path in part(message, "html")
    page = client.get(path)
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(subscribers)) == 0  # a GET confirms nothing
    done = client.post(path, data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    row = _subscriber(store, "new.reader@example.net")
    assert (row.status, row.name, row.email) == ("active", "New Reader", "New.Reader@example.net")
    assert row.confirmed_at is not None
    again = client.post(path, data={"csrf_token": csrf_of(page.text)})
    assert again.status_code == 200  # confirming twice changes nothing


def test_an_expired_confirmation_is_refused(client, settings, store) -> None:
    ticket = db.open_signup(store, email="late@example.net", email_key="late@example.net", name="", tags=(),
                            now=utcnow() - dt.timedelta(hours=49), valid_for=dt.timedelta(hours=48),
                            resend_after=dt.timedelta(hours=1))
    path = "/confirm/" + readers.confirm_token(settings, ticket.id, ticket.created_at)
    page = client.get(path)
    assert page.status_code == 410 and "This link has expired" in page.text
    assert client.post(path, data={"csrf_token": csrf_of(client.get("/subscribe").text)}).status_code == 410
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(subscribers)) == 0


def test_the_answer_is_the_same_for_known_and_unknown_addresses(client, settings, store, ada) -> None:
    known, unknown = _sign_up(client, email="ada@example.net"), _sign_up(client, email="nobody@example.net")
    assert known.status_code == unknown.status_code == 200
    assert _body(known.text) == _body(unknown.text)


def _body(html: str) -> str:
    return re.sub(r'value="[^"]*"', "", html)


def test_a_second_signup_while_pending_mails_at_most_once_an_hour(client, settings, store) -> None:
    for _ in range(3):
        assert _sign_up(client, email="twice@example.net").status_code == 200
    assert len(_confirmations(settings)) == 1
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(signups)) == 1


def test_the_honeypot_is_answered_and_ignored(client, settings, store) -> None:
    answer = _sign_up(client, email="bot@example.net", website="http://spam.example")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert _confirmations(settings) == []
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(signups)) == 0


def test_signups_are_rate_limited_per_address(client, settings) -> None:
    codes = [_sign_up(client, email="flood@example.net").status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]


def test_signups_are_rate_limited_per_client(client, settings) -> None:
    codes = [_sign_up(client, email=f"p{n}@example.net").status_code for n in range(12)]
    assert codes[:10] == [200] * 10 and codes[10:] == [429, 429]


def test_a_signup_without_the_csrf_token_is_refused(client, settings, store) -> None:
    assert client.post("/subscribe", data={"email": "x@example.net"}).status_code == 403
    assert _confirmations(settings) == []


@pytest.mark.parametrize(("fields", "message"), [
    ({"email": ""}, "enter your email address"),
    ({"email": "not an address"}, "this is not an email address"),
    ({"email": "a@example.net", "name": "x" * 201}, "the most is 200"),
    ({"email": "a@example.net", "name": "Eve\nBcc: x@example.net"}, "the name must be one line"),
])
def test_a_bad_signup_says_what_is_wrong_and_keeps_what_was_typed(client, settings, fields, message) -> None:
    answer = _sign_up(client, **fields)
    assert answer.status_code == 400
    assert message in answer.text
    assert _confirmations(settings) == []


def test_who_left_comes_back_only_through_the_confirmation(client, settings, store, ada) -> None:
    client.post(_unsubscribe_path(settings, ada.id), data=ONE_CLICK)
    assert _sign_up(client, email="ada@example.net", name="Ada L.").status_code == 200
    assert _subscriber(store, "ada@example.net").status == "unsubscribed"  # not before confirming
    assert "ada@example.net" in _suppressed(store)
    [message] = _confirmations(settings)
    path = _confirm_path(message)
    client.post(path, data={"csrf_token": csrf_of(client.get(path).text)})
    row = _subscriber(store, "ada@example.net")
    assert (row.status, row.name, row.unsubscribe_channel) == ("active", "Ada L.", None)
    assert _suppressed(store) == {}


def test_resubscribe_from_the_unsubscribe_page_mails_a_confirmation(client, settings, store, ada) -> None:
    path = _unsubscribe_path(settings, ada.id)
    done = client.post(path, data={"csrf_token": csrf_of(client.get(path).text)})
    answer = client.post(f"{path}/resubscribe", data={"csrf_token": csrf_of(done.text)})
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    [message] = _confirmations(settings)
    assert message["To"] == "ada@example.net"
    assert _subscriber(store, "ada@example.net").status == "unsubscribed"


# Preferences and data ----------------------------------------------------------------------------------------


@pytest.fixture
def topics_settings(settings):
    web = settings.web.model_copy(update={"topics": {"policy": "Policy", "energy": "Energy"}})
    return settings.model_copy(update={"web": web})


@pytest.fixture
def topics_client(topics_settings, store):
    from starlette.testclient import TestClient

    from pipeline.web.app import create_app

    with TestClient(create_app(topics_settings, store), base_url="https://report.example.org",
                    raise_server_exceptions=False) as client:
        yield client


def test_preferences_change_name_and_topics_only(topics_client, topics_settings, store, project) -> None:
    _people(store, project, [("cy@example.net", "Cy", "policy;vip")])
    cy = _subscriber(store, "cy@example.net")
    path = "/p/" + readers.preferences_token(topics_settings, cy.id)
    page = topics_client.get(path)
    assert page.status_code == 200 and 'value="policy" checked' in page.text and 'value="energy">' in page.text
    saved = topics_client.post(path, data={"csrf_token": csrf_of(page.text), "name": "Cy Young", "topics": "energy"})
    assert saved.status_code == 200 and "Saved." in saved.text
    row = _subscriber(store, "cy@example.net")
    assert (row.name, row.tags) == ("Cy Young", ";energy;vip;")  # vip is not a topic readers choose: kept
    bad = topics_client.post(path, data={"csrf_token": csrf_of(page.text), "name": "Cy", "topics": "secret"})
    assert bad.status_code == 400 and "unknown topic" in bad.text


def test_unsubscribe_from_all_in_preferences(client, settings, store, ada) -> None:
    path = "/p/" + readers.preferences_token(settings, ada.id)
    answer = client.post(f"{path}/unsubscribe", data={"csrf_token": csrf_of(client.get(path).text)})
    assert answer.status_code == 200 and "you do not receive" in answer.text
    assert _subscriber(store, "ada@example.net").unsubscribe_channel == "preferences"


def test_download_everything_stored(client, settings, store, ada) -> None:
    path = "/p/" + readers.preferences_token(settings, ada.id)
    assert client.post(f"{path}/data", data={}).status_code == 403
    answer = client.post(f"{path}/data", data={"csrf_token": csrf_of(client.get(path).text)})
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith("attachment")
    data = json.loads(answer.text)
    assert data["subscriber"]["email"] == "ada@example.net"
    assert data["subscriber"]["name"] == "Ada Lovelace"
    assert set(data) >= {"subscriber", "suppression", "deliveries", "events", "signups"}


def test_erase_keeps_only_a_hashed_suppression(client, settings, store, project, ada) -> None:
    path = "/p/" + readers.preferences_token(settings, ada.id)
    token = csrf_of(client.get(path).text)
    assert client.post(f"{path}/erase", data={"csrf_token": token}).status_code == 400  # box not ticked
    answer = client.post(f"{path}/erase", data={"csrf_token": token, "confirm": "erase"})
    assert answer.status_code == 200 and "Your data is erased" in answer.text
    with store.read() as connection:
        row = connection.execute(select(subscribers).where(subscribers.c.id == ada.id)).one()
        everything = " ".join(str(value) for table in (subscribers, suppressions, events, deliveries, signups)
                              for row_ in connection.execute(select(table)) for value in row_)
    assert (row.status, row.email, row.name) == ("erased", "", "")
    assert "ada@example.net" not in everything and "Ada Lovelace" not in everything
    assert _suppressed(store) == {db.erased_key("ada@example.net"): "erased"}
    assert client.get(path).status_code == 400  # nothing left to show
    # No import brings them back, not even one that resubscribes.
    imported = project / "again.csv"
    imported.write_text("email,name,tags,status\nAda@Example.net,Ada Lovelace,policy,active\n", encoding="utf-8")
    report = import_subscribers(store, imported, resubscribe=True)
    assert [rejection.reason for rejection in report.rejected] == [
        "erased at their request: only a signup they confirm brings them back"]
    with store.read() as connection:
        assert connection.scalar(select(func.count()).select_from(subscribers)
                                 .where(subscribers.c.email_key == "ada@example.net")) == 0
