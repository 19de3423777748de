"""Routes: what a reader does for themselves (``pipeline/readers.py`` does it).

    GET  /u/<token>              a page with one button: a GET never unsubscribes (mail scanners follow links)
    POST /u/<token>              unsubscribe: RFC 8058 one-click (``List-Unsubscribe=One-Click``, no cookie,
                                 no CSRF token: mail providers send neither), or the page's button
    POST /u/<token>/resubscribe  back on the list, through a confirmation mailed to them
    GET  /subscribe, POST        the signup form (honeypot, rate limits per address on the internet and per
                                 email address); the same answer whether or not the address is known
    GET  /confirm/<token>, POST  a button, then active
    GET  /p/<token>, POST        name and topics; POST /p/<token>/unsubscribe, /data (their data, JSON), /erase

Every form but the one-click POST carries the CSRF token of its page (``guard.py``).
A token that does not open (forged, damaged, truncated, of another purpose) gets
the same plain 400 page whatever is wrong with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import readers, urls
from pipeline.errors import NewsletterError, SubscriberError
from pipeline.messages import read_unsubscribe_token
from pipeline.readers import ConfirmationMail
from pipeline.store import readers as db
from pipeline.store import utcnow
from pipeline.store.states import SubscriberStatus
from pipeline.web.guard import CSRF_FIELD, csrf_valid, error_page, issue_csrf, with_csrf
from pipeline.web.site import Site

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058's body
HONEYPOT = "website"  # a field people never see: a bot that fills it in is answered and ignored


def routes(site: Site) -> list[BaseRoute]:
    pages = _Pages(site)
    return [
        Route("/u/{token}", pages.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", pages.unsubscribe, methods=["POST"]),
        Route("/u/{token}/resubscribe", pages.resubscribe, methods=["POST"]),
        Route("/subscribe", pages.subscribe_form, methods=["GET"]),
        Route("/subscribe", pages.subscribe, methods=["POST"]),
        Route("/confirm/{token}", pages.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", pages.confirm, methods=["POST"]),
        Route("/p/{token}", pages.preferences_page, methods=["GET"]),
        Route("/p/{token}", pages.save_preferences, methods=["POST"]),
        Route("/p/{token}/unsubscribe", pages.unsubscribe_all, methods=["POST"]),
        Route("/p/{token}/data", pages.download, methods=["POST"]),
        Route("/p/{token}/erase", pages.erase, methods=["POST"]),
    ]


def _masked(email: str) -> str:
    """j…@example.org: enough for a reader to recognise their address, little for anyone they forward it to."""
    local, _, domain = email.rpartition("@")
    return f"{local[:1]}…@{domain}" if local else email


class _Pages:
    def __init__(self, site: Site):
        self.site, self.settings = site, site.settings
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.per_ip: list[RateLimitItem] = parse_many(self.settings.web.signup_rate_ip)
        self.per_address: list[RateLimitItem] = parse_many(self.settings.web.signup_rate_address)
        self.topics = tuple(self.settings.web.topics)
        self.prefix = urls.path_of(urls.home(self.settings)).rstrip("/")

    # Helpers -----------------------------------------------------------------------------------------------

    def page(self, request: Request, template: str, /, *, status: int = 200, **context: Any) -> Response:
        issue_csrf(self.site, request)
        return with_csrf(self.site, request, self.site.pages.page(request, template, status=status, **context))

    def _here(self, request: Request) -> str:
        """The path of the page a token names (/u/T, /p/T, /confirm/T), which its forms post to."""
        build = {"u": urls.unsubscribe, "p": urls.preferences, "confirm": urls.confirm}
        kind = request.url.path.removeprefix(self.prefix).split("/")[1]
        return urls.path_of(build[kind](self.settings, request.path_params["token"]))

    def bad_link(self, request: Request) -> Response:
        return error_page(self.site, request, 400)

    async def form(self, request: Request) -> FormData | None:
        """The posted form when its CSRF token is this browser's; None otherwise."""
        form = await request.form()
        return form if csrf_valid(self.site, request, form.get(CSRF_FIELD)) else None

    def expired_form(self, request: Request) -> Response:
        return error_page(self.site, request, 403)

    def _unsubscribe_target(self, token: str) -> tuple[db.Reader, int] | None:
        found = read_unsubscribe_token(self.settings, token)
        if found is None:
            return None
        person = db.reader(self.site.store, found[0])
        return None if person is None else (person, found[1])

    def _links(self, person: db.Reader) -> dict[str, Any]:
        return {"preferences_url": urls.path_of(urls.preferences(
            self.settings, readers.preferences_token(self.settings, person.id)))}

    def _compose(self, request: Request) -> Callable[[str], ConfirmationMail]:
        return confirmation_mail(self.site)

    async def _mail_signup(self, request: Request, *, email: str, key: str, name: str,
                           topics: tuple[str, ...]) -> Response | None:
        """Send (or re-send, when due) the confirmation; an error page when it cannot be sent, else None."""
        try:
            await readers.request_signup(self.settings, self.site.store, email=email, key=key, name=name,
                                         topics=topics, now=utcnow(), compose=self._compose(request),
                                         provider=self.site.provider)
        except NewsletterError:
            return error_page(self.site, request, 503, "We could not send the confirmation email just now. "
                                                       "Please try again in a few minutes.")
        return None

    # Unsubscribe -------------------------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        target = self._unsubscribe_target(request.path_params["token"])
        if target is None:
            return self.bad_link(request)
        person, _ = target
        if person.status == SubscriberStatus.ERASED:
            return self.page(request, "unsubscribed.html", erased=True, here=self._here(request))
        return self.page(request, "unsubscribe.html", address=_masked(person.email), here=self._here(request),
                         subscribed=person.status == SubscriberStatus.ACTIVE, **self._links(person))

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        target = self._unsubscribe_target(token)
        form = await request.form()
        one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        if target is None:
            return self.bad_link(request)
        if not one_click and not csrf_valid(self.site, request, form.get(CSRF_FIELD)):
            return self.expired_form(request)
        person, send_id = target
        db.unsubscribe(self.site.store, person.id, send_id=send_id, channel="one-click" if one_click else "page",
                       now=utcnow())
        if one_click:
            return Response("Unsubscribed.\n", media_type="text/plain")
        return self.page(request, "unsubscribed.html", erased=person.status == SubscriberStatus.ERASED,
                         here=self._here(request), address=_masked(person.email), **self._links(person))

    async def resubscribe(self, request: Request) -> Response:
        target = self._unsubscribe_target(request.path_params["token"])
        if target is None:
            return self.bad_link(request)
        if await self.form(request) is None:
            return self.expired_form(request)
        person, _ = target
        if person.status == SubscriberStatus.ERASED:
            return self.bad_link(request)
        failed = await self._mail_signup(request, email=person.email, key=person.email_key, name=person.name,
                                         topics=tuple(tag for tag in person.tags if tag in self.topics))
        return failed or self.page(request, "check_inbox.html")

    # Signup ------------------------------------------------------------------------------------------------

    def _signup_form(self, request: Request, *, status: int = 200, error: str | None = None,
                     values: dict[str, Any] | None = None) -> Response:
        return self.page(request, "subscribe.html", status=status, error=error, values=values or {},
                         topics=self.settings.web.topics, honeypot=HONEYPOT)

    async def subscribe_form(self, request: Request) -> Response:
        return self._signup_form(request)

    async def subscribe(self, request: Request) -> Response:
        form = await self.form(request)
        if form is None:
            return self.expired_form(request)
        given_email, given_name = str(form.get("email", "")), str(form.get("name", ""))
        given_topics = [str(value) for value in form.getlist("topics")]
        values = {"email": given_email, "name": given_name, "topics": given_topics}
        if form.get(HONEYPOT):
            return self.page(request, "check_inbox.html")
        try:
            email, key = readers.checked_email(given_email)
            name = readers.checked_name(given_name)
            topics = readers.checked_topics(self.settings, given_topics)
        except SubscriberError as exc:
            return self._signup_form(request, status=400, error=str(exc), values=values)
        client = request.client.host if request.client else "unknown"
        allowed = all([self.limiter.hit(item, "signup-ip", client) for item in self.per_ip]
                      + [self.limiter.hit(item, "signup-address", key) for item in self.per_address])
        if not allowed:
            return error_page(self.site, request, 429)
        failed = await self._mail_signup(request, email=email, key=key, name=name, topics=topics)
        return failed or self.page(request, "check_inbox.html")

    async def confirm_page(self, request: Request) -> Response:
        found = readers.read_confirm_token(self.settings, request.path_params["token"], utcnow())
        if found is None or db.signup_created(self.site.store, found.signup_id) is None:
            return self.bad_link(request)
        if found.expired:
            return self.page(request, "confirm.html", status=410, expired=True, here=self._here(request))
        return self.page(request, "confirm.html", expired=False, here=self._here(request))

    async def confirm(self, request: Request) -> Response:
        found = readers.read_confirm_token(self.settings, request.path_params["token"], utcnow())
        if found is None:
            return self.bad_link(request)
        if await self.form(request) is None:
            return self.expired_form(request)
        if found.expired:
            return self.page(request, "confirm.html", status=410, expired=True, here=self._here(request))
        done = db.confirm(self.site.store, found.signup_id, topics=self.topics, now=utcnow())
        if done.subscriber_id is None:
            return self.bad_link(request)
        person = db.reader(self.site.store, done.subscriber_id)
        assert person is not None
        return self.page(request, "confirmed.html", **self._links(person))

    # Preferences -------------------------------------------------------------------------------------------

    def _preferences_target(self, request: Request) -> db.Reader | None:
        subscriber_id = readers.read_preferences_token(self.settings, request.path_params["token"])
        person = None if subscriber_id is None else db.reader(self.site.store, subscriber_id)
        return None if person is None or person.status == SubscriberStatus.ERASED else person

    def _preferences(self, request: Request, person: db.Reader, *, status: int = 200, error: str | None = None,
                     saved: bool = False, name: str | None = None) -> Response:
        return self.page(request, "preferences.html", status=status, error=error, saved=saved,
                         address=person.email, name=person.name if name is None else name,
                         chosen=set(person.tags), topics=self.settings.web.topics,
                         subscribed=person.status == SubscriberStatus.ACTIVE, status_text=person.status.value,
                         here=self._here(request))

    async def _preferences_post(self, request: Request) -> tuple[db.Reader, FormData] | Response:
        """The reader a preferences form is for and the form, or the page that refuses it."""
        person = self._preferences_target(request)
        if person is None:
            return self.bad_link(request)
        form = await self.form(request)
        return self.expired_form(request) if form is None else (person, form)

    async def preferences_page(self, request: Request) -> Response:
        person = self._preferences_target(request)
        return self.bad_link(request) if person is None else self._preferences(request, person)

    async def save_preferences(self, request: Request) -> Response:
        posted = await self._preferences_post(request)
        if isinstance(posted, Response):
            return posted
        person, form = posted
        try:
            name = readers.checked_name(str(form.get("name", "")))
            chosen = readers.checked_topics(self.settings, [str(value) for value in form.getlist("topics")])
        except SubscriberError as exc:
            return self._preferences(request, person, status=400, error=str(exc), name=str(form.get("name", "")))
        db.update_preferences(self.site.store, person.id, name=name, chosen=chosen, topics=self.topics, now=utcnow())
        updated = db.reader(self.site.store, person.id)
        assert updated is not None
        return self._preferences(request, updated, saved=True)

    async def unsubscribe_all(self, request: Request) -> Response:
        posted = await self._preferences_post(request)
        if isinstance(posted, Response):
            return posted
        person, form = posted
        db.unsubscribe(self.site.store, person.id, send_id=None, channel="preferences", now=utcnow())
        return RedirectResponse(request.url.path.removesuffix("/unsubscribe"), status_code=303)

    async def download(self, request: Request) -> Response:
        posted = await self._preferences_post(request)
        if isinstance(posted, Response):
            return posted
        person, form = posted
        data = db.personal_data(self.site.store, person.id)
        body = json.dumps({"publication": self.settings.publication.name, "exported_at": utcnow().isoformat(),
                           **data}, ensure_ascii=False, indent=2)
        return Response(body + "\n", media_type="application/json", headers={
            "Content-Disposition": 'attachment; filename="my-subscription-data.json"', "Cache-Control": "no-store"})

    async def erase(self, request: Request) -> Response:
        posted = await self._preferences_post(request)
        if isinstance(posted, Response):
            return posted
        person, form = posted
        if form.get("confirm") != "erase":
            return self._preferences(request, person, status=400,
                                     error="Tick the box to confirm that everything about you should be erased.")
        db.erase(self.site.store, person.id, now=utcnow())
        return self.page(request, "erased.html")


def confirmation_mail(site: Site) -> Callable[[str], ConfirmationMail]:
    """How a signup's confirmation is composed from its link: the same mail whether a reader signed up or
    staff asked a former subscriber to confirm again."""

    def compose(url: str) -> ConfirmationMail:
        hours = site.settings.web.confirm_hours
        context = {"confirm_url": url, "hours": f"{hours:g}"}
        return ConfirmationMail(subject=f"Confirm your subscription to {site.settings.publication.name}",
                                html=site.pages.text("mail/confirm.html", **context),
                                text=site.pages.text("mail/confirm.txt", **context))

    return compose
