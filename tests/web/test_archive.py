"""The public archive and its feed, over real finished sends through the outbox provider."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from pipeline import send
from pipeline.config import Settings
from pipeline.prepare import prepare_and_write
from pipeline.store import Store
from pipeline.subscribers import import_subscribers
from pipeline.web.guard import EDITION_POLICY, PAGE_POLICY

from ..conftest import write_draft

ATOM = "{http://www.w3.org/2005/Atom}"
BODY = ("Dear {{ name }},\n\nA [link](https://www.ft.com/).\n\n[SIGNOFF]\n\nJoe\n\n"
        "Joe is an editor. This article represents his own personal opinion: he alone is responsible for the "
        "entirety of its contents.\n")


@pytest.fixture
def audience(project: Path, store: Store) -> None:
    path = project / "audience.csv"
    path.write_text("email,name,tags,status\nada@example.net,Ada,policy,active\nli@example.net,Li,policy,active\n",
                    encoding="utf-8")
    assert not import_subscribers(store, path).rejected


def _built(project: Path, settings: Settings, name: str, subject: str, extra: str = "", body: str = BODY):
    front = f"subject: {subject}\npreheader: Preheader of {subject}\ndate: {name[:10]}\n{extra}"
    return prepare_and_write(write_draft(project, name, front, body), settings)


def _sent(project: Path, settings: Settings, store: Store, name: str, subject: str, extra: str = "",
          body: str = BODY):
    """A send of a fresh draft, run to its end through the outbox; the build it sent."""
    built = _built(project, settings, name, subject, extra, body)
    send_id = send.create_send(store, settings, built.edition, built_path=str(built.folder))
    assert asyncio.run(send.run_send(store, settings, send_id)).status == "sent"
    return built


def _feed(client) -> ElementTree.Element:
    response = client.get("/archive/feed.xml")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    return ElementTree.fromstring(response.content)


def _links_of_list(client) -> list[str]:
    response = client.get("/archive/")
    assert response.status_code == 200
    return [line.split('"')[1] for line in response.text.splitlines() if '<a href="/archive/20' in line]


def test_finished_sends_are_listed_newest_first(project: Path, settings: Settings, store: Store, audience,
                                                client) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    _sent(project, settings, store, "2024-03-08-second", "The second <one>")
    response = client.get("/archive/")
    assert response.headers["content-security-policy"] == PAGE_POLICY
    assert _links_of_list(client) == ["/archive/2024-03-08-second/", "/archive/2024-03-01-first/"]
    assert "The second &lt;one&gt;" in response.text and "<one>" not in response.text
    today = dt.datetime.now(dt.UTC).astimezone(settings.publication.zone).date()
    assert f'<time datetime="{today.isoformat()}">' in response.text
    assert client.get("/archive").url.path == "/archive/"


def test_an_edition_not_finished_is_nowhere(project: Path, settings: Settings, store: Store, audience,
                                            client) -> None:
    sending = _built(project, settings, "2024-03-01-sending", "Still sending")
    send.create_send(store, settings, sending.edition, built_path=str(sending.folder))
    cancelled = _built(project, settings, "2024-03-02-cancelled", "Cancelled")
    send.cancel_send(store, send.create_send(store, settings, cancelled.edition, built_path=str(cancelled.folder)))
    scheduled = _built(project, settings, "2024-03-03-scheduled", "Scheduled")
    send.schedule_send(store, settings, scheduled.edition, built_path=str(scheduled.folder),
                       at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1), timezone="UTC")
    assert _links_of_list(client) == []
    assert "No editions have been published yet." in client.get("/archive/").text
    for name in ("2024-03-01-sending", "2024-03-02-cancelled", "2024-03-03-scheduled"):
        assert client.get(f"/archive/{name}/").status_code == 404
    assert _feed(client).findall(f"{ATOM}entry") == []


def test_archive_false_keeps_it_out_of_list_page_and_feed(project: Path, settings: Settings, store: Store, audience,
                                                          client) -> None:
    _sent(project, settings, store, "2024-03-01-public", "Public")
    _sent(project, settings, store, "2024-03-02-private", "Private", extra="archive: false")
    assert _links_of_list(client) == ["/archive/2024-03-01-public/"]
    assert client.get("/archive/2024-03-02-private/").status_code == 404
    assert [entry.findtext(f"{ATOM}title") for entry in _feed(client).findall(f"{ATOM}entry")] == ["Public"]


def test_the_same_content_sent_again_with_archive_false_is_withdrawn(project: Path, settings: Settings,
                                                                      store: Store, audience, client) -> None:
    _sent(project, settings, store, "2024-03-01-public", "Public")
    assert client.get("/archive/2024-03-01-public/").status_code == 200
    _sent(project, settings, store, "2024-03-01-public", "Public", extra="archive: false")
    assert client.get("/archive/2024-03-01-public/").status_code == 404


def test_the_page_is_the_stored_web_page_with_the_edition_policy(project: Path, settings: Settings, store: Store,
                                                                 audience, client) -> None:
    built = _sent(project, settings, store, "2024-03-01-first", "The first one")
    sent_page = built.edition.web_html
    # The draft is edited and rebuilt, then the build folder removed: the archive still serves what was sent.
    _built(project, settings, "2024-03-01-first", "Changed afterwards")
    shutil.rmtree(built.folder)
    response = client.get("/archive/2024-03-01-first/")
    assert response.status_code == 200
    assert response.text == sent_page
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == EDITION_POLICY
    assert "script-src" not in EDITION_POLICY and response.headers["x-frame-options"] == "DENY"


def test_the_page_and_the_feed_answer_a_conditional_get(project: Path, settings: Settings, store: Store, audience,
                                                        client) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    for path in ("/archive/2024-03-01-first/", "/archive/feed.xml"):
        first = client.get(path)
        etag, modified = first.headers["etag"], first.headers["last-modified"]
        again = client.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert client.get(path, headers={"If-Modified-Since": modified}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"', "If-Modified-Since": modified}).status_code == 200
        assert client.get(path, headers={"If-Modified-Since": "yesterday"}).status_code == 200
    assert client.get("/archive/2024-03-01-first/", headers={"If-None-Match": etag}).status_code == 200
    # A new edition changes the feed's validator.
    _sent(project, settings, store, "2024-03-08-second", "The second one")
    assert client.get("/archive/feed.xml", headers={"If-None-Match": etag}).status_code == 200


def test_the_feed_has_an_entry_per_edition_linking_to_its_page(project: Path, settings: Settings, store: Store,
                                                               audience, client) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    _sent(project, settings, store, "2024-03-08-second", "The second <one> & more")
    feed = _feed(client)
    assert feed.findtext(f"{ATOM}id") == "https://report.example.org/archive/feed.xml"
    assert feed.findtext(f"{ATOM}title") == "The China-Russia Report"
    links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert links == {"self": "https://report.example.org/archive/feed.xml",
                     "alternate": "https://report.example.org/archive/"}
    entries = feed.findall(f"{ATOM}entry")
    assert [entry.findtext(f"{ATOM}title") for entry in entries] == ["The second <one> & more", "The first one"]
    second = entries[0]
    address = "https://report.example.org/archive/2024-03-08-second/"
    assert second.findtext(f"{ATOM}id") == address
    assert second.find(f"{ATOM}link").get("href") == address  # type: ignore[union-attr]
    assert second.findtext(f"{ATOM}summary") == "Preheader of The second <one> & more"
    updated = dt.datetime.fromisoformat(second.findtext(f"{ATOM}updated") or "")
    assert abs(dt.datetime.now(dt.UTC) - updated) < dt.timedelta(minutes=5)
    assert second.findtext(f"{ATOM}published") == second.findtext(f"{ATOM}updated")
    assert feed.findtext(f"{ATOM}updated") == second.findtext(f"{ATOM}updated")
    content = second.find(f"{ATOM}content")
    assert content is not None and content.get("type") == "html"
    assert 'href="https://www.ft.com/"' in (content.text or "") and "style=" not in (content.text or "")
    assert "<main" not in (content.text or "") and "<!--" not in (content.text or "")
    assert "This article represents his own personal opinion" in (content.text or "")


def test_an_edition_sent_twice_is_one_entry_with_its_latest_content(project: Path, settings: Settings,
                                                                   store: Store, audience, client) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    first_published = _feed(client).findtext(f"{ATOM}entry/{ATOM}published")
    latest = _sent(project, settings, store, "2024-03-01-first", "The first one, corrected")
    assert _links_of_list(client) == ["/archive/2024-03-01-first/"]
    assert client.get("/archive/2024-03-01-first/").text == latest.edition.web_html
    entries = _feed(client).findall(f"{ATOM}entry")
    assert [entry.findtext(f"{ATOM}title") for entry in entries] == ["The first one, corrected"]
    assert entries[0].findtext(f"{ATOM}published") == first_published
    assert entries[0].findtext(f"{ATOM}updated") != first_published


@pytest.mark.parametrize("path", ["/archive/2024-01-01-nothing/", "/archive/..%2F..%2Fnewsletter.toml/",
                                  "/archive/%2e%2e/", "/archive/a%5Cb/", "/archive/.hidden/", "/archive/a%00b/",
                                  "/archive/%2e%2e", "/archive/a/b/"])
def test_an_unknown_or_malformed_edition_is_a_plain_404(client, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 404
    assert "There is nothing at this address." in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"] == PAGE_POLICY


def test_an_edition_without_its_slash_is_redirected(client) -> None:
    response = client.get("/archive/2024-03-01-first", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == "/archive/2024-03-01-first/"
