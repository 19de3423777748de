"""Routes: the public archive of sent editions, and its Atom feed.

    GET /archive/             the editions a finished send made public, newest first
    GET /archive/<edition>/   the edition's web page exactly as it was sent ("view in browser")
    GET /archive/<edition>    redirects to the address with the slash, the one the emails link to
    GET /archive/feed.xml     Atom (RFC 4287), the newest editions with their pages' content

What is public is the store's to say (``store/archive.py``): a page comes from the edition recorded with
its send, never from the draft or the build folder, which may have changed since. An edition's page is the
email made a page, so it gets ``EDITION_POLICY`` (inline styles, images from the asset host, still no
script). The feed and the pages answer a conditional GET with 304, so a feed reader polling every few
minutes costs one query and no rendering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from email.utils import format_datetime, parsedate_to_datetime

from feedgen.feed import FeedGenerator
from lxml import etree
from lxml import html as lxml_html
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import urls
from pipeline.config import Settings
from pipeline.store.archive import ArchivedEdition, archived_edition, archived_editions
from pipeline.web.guard import EDITION_POLICY
from pipeline.web.site import Site

FEED_ENTRIES = 20  # the newest editions in the feed; each carries its whole page, so the feed stays small
ATOM = "application/atom+xml; charset=utf-8"
# An edition's name is its draft folder's name: letters, digits and a little punctuation, never a path.
EDITION_NAME = re.compile(r"\w[\w.+~-]{0,199}")
# Validators are checked on every request; the answer may be kept, never used without asking (RFC 9111 §5.2.2.4).
CACHE_CONTROL = "public, no-cache"


def routes(site: Site) -> list[BaseRoute]:
    settings, store = site.settings, site.store

    async def listing(request: Request) -> Response:
        editions = [_listed(settings, edition) for edition in archived_editions(store)]
        return site.pages.page(request, "archive.html", editions=editions)

    async def feed(request: Request) -> Response:
        editions = archived_editions(store, with_pages=True, limit=FEED_ENTRIES)
        tag = _digest(f"{e.name}\0{e.content_hash}\0{e.sent_at.isoformat()}" for e in editions)
        validators = _validators(f'W/"{tag}"', editions[0].sent_at if editions else None)
        if _not_modified(request, validators):
            return Response(status_code=304, headers=validators)
        return Response(atom_feed(settings, editions), headers={**validators, "Content-Type": ATOM})

    async def edition_page(request: Request) -> Response:
        edition = archived_edition(store, _edition_name(request))
        if edition is None or edition.web_html is None:
            raise HTTPException(404)
        # The stored page's bytes are covered by its content hash: a strong validator.
        validators = {**_validators(f'"{edition.content_hash}"', edition.sent_at),
                      "Content-Security-Policy": EDITION_POLICY}
        if _not_modified(request, validators):
            return Response(status_code=304, headers=validators)
        return HTMLResponse(edition.web_html, headers=validators)

    async def without_slash(request: Request) -> Response:
        return RedirectResponse(urls.path_of(urls.edition(settings, _edition_name(request))), status_code=301)

    return [
        Route(urls.ARCHIVE, listing, methods=["GET"]),
        Route(urls.FEED, feed, methods=["GET"]),  # before the edition routes: feed.xml is not an edition's name
        Route(f"{urls.ARCHIVE}{{edition}}/", edition_page, methods=["GET"]),
        Route(f"{urls.ARCHIVE}{{edition}}", without_slash, methods=["GET"]),
    ]


def _edition_name(request: Request) -> str:
    """The edition named in the address; a name no draft folder could have is simply not found."""
    name = request.path_params["edition"]
    if not EDITION_NAME.fullmatch(name) or ".." in name:
        raise HTTPException(404)
    return name


def _listed(settings: Settings, edition: ArchivedEdition) -> dict[str, str]:
    day = edition.sent_at.astimezone(settings.publication.zone).date()
    return {"subject": edition.subject, "url": urls.path_of(urls.edition(settings, edition.name)),
            "date": day.isoformat(), "date_text": f"{day.day} {day:%B %Y}"}


# Conditional GET (RFC 9110 §13) ---------------------------------------------------------------------------


def _digest(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\n")
    return digest.hexdigest()[:32]


def _validators(etag: str, modified: dt.datetime | None) -> dict[str, str]:
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if modified is not None:
        headers["Last-Modified"] = format_datetime(modified.astimezone(dt.UTC), usegmt=True)
    return headers


def _not_modified(request: Request, validators: dict[str, str]) -> bool:
    """Whether the client's copy is current: If-None-Match (weak comparison) if sent, else If-Modified-Since."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        ours = validators["ETag"].removeprefix("W/")
        theirs = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in theirs or ours in theirs
    since, modified = request.headers.get("if-modified-since"), validators.get("Last-Modified")
    if since is None or modified is None:
        return False
    try:
        return parsedate_to_datetime(modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):  # not an HTTP date: answer in full
        return False


# The feed -------------------------------------------------------------------------------------------------


def atom_feed(settings: Settings, editions: list[ArchivedEdition]) -> bytes:
    """The archive's Atom feed: an entry per edition, identified by its page's address (which never changes)."""
    publication = settings.publication
    feed = FeedGenerator()
    feed.id(urls.feed(settings))
    feed.title(publication.name)
    feed.author(name=publication.name)
    feed.link(href=urls.feed(settings), rel="self", type="application/atom+xml")
    feed.link(href=urls.archive(settings), rel="alternate", type="text/html")
    feed.language(publication.language)
    if publication.footer:
        feed.subtitle(publication.footer)
    if editions:
        feed.updated(editions[0].sent_at)
    for edition in editions:
        address = urls.edition(settings, edition.name)
        entry = feed.add_entry(order="append")
        entry.id(address)
        entry.title(edition.subject)
        entry.updated(edition.sent_at)
        entry.published(edition.first_sent_at)
        entry.link(href=address, rel="alternate", type="text/html")
        page = lxml_html.document_fromstring((edition.web_html or "<p></p>").encode("utf-8"))
        preheader = page.xpath("string(//meta[@name='description']/@content)")
        if preheader:
            entry.summary(preheader)
        entry.content(feed_content(page), type="html")
    return bytes(feed.atom_str(pretty=True))


def feed_content(page: lxml_html.HtmlElement) -> str:
    """The page's edition (its ``<main>``, a ``<div>`` in a reader's page of many) as HTML for a feed reader:
    what is hidden dropped, then the email's inline styles, classes and data attributes, which a reader strips
    or would show out of their context."""
    main = page.find(".//main")
    content = main if main is not None else page.find("body")
    if content is None:
        return ""
    content.tag = "div"
    for comment in content.xpath(".//comment()"):  # Outlook's conditional comments among them
        comment.drop_tree()
    for hidden in content.xpath(".//*[contains(translate(@style, ' ', ''), 'display:none')]"):
        hidden.drop_tree()
    for element in content.iter():
        if isinstance(element.tag, str):
            for name in [name for name in element.attrib if name in ("style", "class") or name.startswith("data-")]:
                del element.attrib[name]
    return str(etree.tostring(content, method="html", encoding="unicode"))
