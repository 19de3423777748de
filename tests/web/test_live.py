"""The real server as a mail provider's unsubscribe robot meets it: one POST over HTTP, no cookie, no page.

``newsletter serve`` runs on uvicorn in its own process (``live_server``); the requests are httpx's,
made as Gmail's or Yahoo's one-click request is (RFC 8058): the ``List-Unsubscribe`` address of
the reader's message, the form body ``List-Unsubscribe=One-Click``, nothing else.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from pipeline import messages, urls
from pipeline.store import Store
from pipeline.store.tables import subscribers
from pipeline.subscribers import import_subscribers
from tests.web.conftest import LiveServer


def _reader(server: LiveServer, store: Store, address: str) -> int:
    path = server.project / "one-click.csv"
    path.write_text(f"email,name,tags\n{address},Reader,policy\n", encoding="utf-8")
    assert not import_subscribers(store, path).rejected
    with store.read() as connection:
        return int(connection.execute(select(subscribers.c.id).where(subscribers.c.email_key == address)).scalar_one())


def _status(store: Store, subscriber_id: int) -> tuple[str, str | None]:
    with store.read() as connection:
        row = connection.execute(select(subscribers.c.status, subscribers.c.unsubscribe_channel)
                                 .where(subscribers.c.id == subscriber_id)).one()
    return row.status, row.unsubscribe_channel


def test_a_one_click_post_with_no_cookie_unsubscribes(live_server: LiveServer, live_store: Store) -> None:
    reader = _reader(live_server, live_store, "one.click@example.net")
    # The address a message's List-Unsubscribe carries (urls.py builds it for the mails too).
    url = live_server.local(urls.unsubscribe(live_server.settings,
                                             messages.unsubscribe_token(live_server.settings, reader, 0)))
    # A fresh client each time: no cookie jar, as a provider's robot has none.
    with httpx.Client(headers={"User-Agent": "Mail-Unsubscribe-Robot/1.0"}) as robot:
        answer = robot.post(url, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200, answer.text
    assert "set-cookie" not in answer.headers
    assert _status(live_store, reader) == ("unsubscribed", "one-click")
    with httpx.Client() as robot:
        assert robot.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # repeated: still fine
    assert _status(live_store, reader) == ("unsubscribed", "one-click")


def test_a_post_without_the_one_click_body_or_a_cookie_changes_nothing(live_server: LiveServer,
                                                                       live_store: Store) -> None:
    reader = _reader(live_server, live_store, "not.one.click@example.net")
    url = f"{live_server.url}/u/{messages.unsubscribe_token(live_server.settings, reader, 0)}"
    with httpx.Client() as robot:
        assert robot.get(url).status_code == 200
        assert robot.post(url, data={}).status_code == 403
        assert robot.post(url, data={"List-Unsubscribe": "Two-Clicks"}).status_code == 403
    assert _status(live_store, reader) == ("active", None)


def test_the_real_server_sends_its_guard_headers(live_server: LiveServer) -> None:
    answer = httpx.get(f"{live_server.url}/subscribe")
    assert answer.status_code == 200
    assert "script-src" not in answer.headers["content-security-policy"]
    assert answer.headers["content-security-policy"].startswith("default-src 'none'")
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "server" not in answer.headers  # uvicorn's own header is off
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # this project is served at http://127.0.0.1; at an https base_url it is Secure
