"""Subscribers in the console: a searchable list, one subscriber's history, and an editor's unsubscribe and
resubscribe.

A staff unsubscribe is the reader's own unsubscribe with channel ``staff`` and the editor's reason in its
event: the address is suppressed and its rows still queued in sends in progress are suppressed too. A
resubscribe never makes anyone active: it mails the address a double opt-in confirmation
(``readers.request_signup``), and only following that link brings them back (subscriber move ``confirm``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import readers
from pipeline.errors import NewsletterError, SubscriberError
from pipeline.store import people as db
from pipeline.store import readers as reader_db
from pipeline.store import staff as audit_db
from pipeline.store import utcnow
from pipeline.store.audience import normal_tag
from pipeline.store.readers import Reader
from pipeline.store.states import SUBSCRIBER_MOVES, SubscriberStatus
from pipeline.store.tables import SUBSCRIBER_STATUSES
from pipeline.web.reader import confirmation_mail
from pipeline.web.site import Site
from pipeline.web.staff.auth import PREFIX, Auth, Staffer, context
from pipeline.web.staff.forms import (
    PAGE_SIZE,
    BadInput,
    confirm_page,
    first_link,
    form_text,
    json_twin,
    next_link,
    plain,
    query_after,
    query_choice,
    query_text,
    wants_json,
)

REASON_LENGTH = 500
# Who may be asked to confirm again: everyone a confirmed signup would bring back, but not those still active.
RESUBSCRIBABLE = SUBSCRIBER_MOVES["confirm"].sources - {SubscriberStatus.ACTIVE}
NOTICES = {"unsubscribed": "Unsubscribed: the address is suppressed for every later send.",
           "mailed": "A confirmation link was mailed. They stay as they are until they follow it.",
           "not-mailed": "A confirmation was mailed to them a short while ago; it was not mailed again."}


def _row(line: db.PersonLine) -> dict[str, Any]:
    return {"id": line.id, "email": line.email, "name": line.name, "status": line.status, "tags": list(line.tags),
            "created_at": line.created_at, "unsubscribed_at": line.unsubscribed_at,
            "unsubscribe_channel": line.unsubscribe_channel}


class People:
    """The routes of the subscriber pages, over one site and its sign-in."""

    def __init__(self, site: Site, auth: Auth):
        self.site, self.auth = site, auth

    def routes(self) -> list[BaseRoute]:
        page = self.auth.page
        base = f"{PREFIX}/subscribers"
        return [
            Route(base, page("viewer", plain(self.site, self.listing)), methods=["GET"]),
            Route(base + "/{id:int}", page("viewer", plain(self.site, self.one)), methods=["GET"]),
            Route(base + "/{id:int}/unsubscribe", page("editor", plain(self.site, self.ask_unsubscribe)),
                  methods=["GET"]),
            Route(base + "/{id:int}/unsubscribe", page("editor", plain(self.site, self.unsubscribe)),
                  methods=["POST"]),
            Route(base + "/{id:int}/resubscribe", page("editor", plain(self.site, self.ask_resubscribe)),
                  methods=["GET"]),
            Route(base + "/{id:int}/resubscribe", page("editor", plain(self.site, self.resubscribe)),
                  methods=["POST"]),
        ]

    # Reading -----------------------------------------------------------------------------------------------

    async def listing(self, request: Request, staffer: Staffer) -> Response:
        search = query_text(request, "search")
        status = query_choice(request, "status", SUBSCRIBER_STATUSES)
        tag = query_text(request, "tag", longest=100)
        if tag is not None:
            try:
                tag = normal_tag(tag)
            except SubscriberError as exc:
                raise BadInput(f"tag: {exc.reason}") from None
        found = db.listing(self.site.store, search=search, status=status, tag=tag, after=query_after(request),
                           limit=PAGE_SIZE)
        if wants_json(request):
            return json_twin([_row(line) for line in found.lines], next_after=found.next_after)
        return self.site.pages.page(request, "staff/subscribers.html", **context(
            staffer, people=found.lines, search=search or "", status_filter=status or "", tag=tag or "",
            statuses=SUBSCRIBER_STATUSES, next_url=next_link(request, found.next_after),
            first_url=first_link(request)))

    async def one(self, request: Request, staffer: Staffer) -> Response:
        person = self._person(request)
        if wants_json(request):
            return json_twin([_row(person.line)], confirmed_at=person.confirmed_at,
                             soft_bounces=person.soft_bounces,
                             deliveries=[vars(item) for item in person.deliveries],
                             events=[vars(item) for item in person.events])
        status = person.line.status
        actions = audit_db.audit_log(self.site.store, target=f"subscriber:{person.line.id}", limit=50)
        return self.site.pages.page(request, "staff/subscriber.html", **context(
            staffer, person=person, actions=actions, notice=NOTICES.get(request.query_params.get("done", "")),
            may_unsubscribe=status in SUBSCRIBER_MOVES["unsubscribe"].sources,
            may_resubscribe=status in RESUBSCRIBABLE and bool(person.line.email)))

    def _person(self, request: Request) -> db.Person:
        found = db.person(self.site.store, request.path_params["id"])
        if found is None:
            raise BadInput(f"There is no subscriber {request.path_params['id']}.", status=404)
        return found

    def _reader(self, request: Request) -> Reader:
        found = reader_db.reader(self.site.store, request.path_params["id"])
        if found is None:
            raise BadInput(f"There is no subscriber {request.path_params['id']}.", status=404)
        return found

    # Acting ------------------------------------------------------------------------------------------------

    def _confirm(self, request: Request, staffer: Staffer, person: Reader, *, verb: str, lede: str,
                 status: int = 200, error: str | None = None) -> Response:
        path = self.auth.path(f"/subscribers/{person.id}")
        return confirm_page(
            self.site, request, staffer, status=status, heading=f"{verb.capitalize()} {person.email}?", lede=lede,
            action=f"{path}/{verb}",
            button=f"{verb.capitalize()} {person.email}", back=path, error=error,
            fields=[{"name": "reason", "label": "Reason (kept in the audit log)", "type": "text",
                     "maxlength": REASON_LENGTH, "value": ""}])

    def _unsubscribe_lede(self, person: Reader) -> str:
        return (f"{person.email} will get no further editions: the address is suppressed, and their rows still "
                "queued in sends in progress are suppressed too. Only a confirmed signup brings them back.")

    async def ask_unsubscribe(self, request: Request, staffer: Staffer) -> Response:
        person = self._reader(request)
        self._require(person, SUBSCRIBER_MOVES["unsubscribe"].sources, "unsubscribed")
        return self._confirm(request, staffer, person, verb="unsubscribe", lede=self._unsubscribe_lede(person))

    async def unsubscribe(self, request: Request, staffer: Staffer) -> Response:
        person = self._reader(request)
        reason = form_text(await request.form(), "reason", longest=REASON_LENGTH)
        self._require(person, SUBSCRIBER_MOVES["unsubscribe"].sources, "unsubscribed")
        now = utcnow()
        changed = reader_db.unsubscribe(self.site.store, person.id, send_id=None, channel="staff", now=now,
                                        provider="staff", detail=f"{reason} (by {staffer.user.name})")
        if not changed:  # someone else was quicker: the page was out of date
            raise BadInput(f"Subscriber {person.id} is no longer active; nothing was changed.", status=409)
        audit_db.audit(self.site.store, user_name=staffer.user.name, action="subscriber unsubscribe",
                       target=f"subscriber:{person.id}", detail=reason, now=now)
        return RedirectResponse(self.auth.path(f"/subscribers/{person.id}") + "?done=unsubscribed", status_code=303)

    async def ask_resubscribe(self, request: Request, staffer: Staffer) -> Response:
        person = self._reader(request)
        self._require(person, RESUBSCRIBABLE, "asked to confirm again")
        lede = (f"This mails {person.email} a link to confirm their subscription (double opt-in). They stay "
                f"{person.status} until they follow it; nobody is made active from here.")
        return self._confirm(request, staffer, person, verb="resubscribe", lede=lede)

    async def resubscribe(self, request: Request, staffer: Staffer) -> Response:
        person = self._reader(request)
        reason = form_text(await request.form(), "reason", longest=REASON_LENGTH)
        self._require(person, RESUBSCRIBABLE, "asked to confirm again")
        settings = self.site.settings
        topics = tuple(tag for tag in person.tags if tag in settings.web.topics)
        now = utcnow()
        try:
            mailed = await readers.request_signup(settings, self.site.store, email=person.email,
                                                  key=person.email_key, name=person.name, topics=topics, now=now,
                                                  compose=confirmation_mail(self.site), provider=self.site.provider)
        except NewsletterError as exc:
            raise BadInput(f"The confirmation could not be mailed just now ({exc.reason}); nothing was changed. "
                           "Try again in a few minutes.", status=503) from None
        audit_db.audit(self.site.store, user_name=staffer.user.name, action="subscriber resubscribe",
                       target=f"subscriber:{person.id}",
                       detail=f"{reason}; {'confirmation mailed' if mailed else 'confirmation mailed recently'}",
                       now=now)
        done = "mailed" if mailed else "not-mailed"
        return RedirectResponse(self.auth.path(f"/subscribers/{person.id}") + f"?done={done}", status_code=303)

    @staticmethod
    def _require(person: Reader, sources: frozenset[str], what: str) -> None:
        if person.status not in sources:
            raise BadInput(f"Subscriber {person.id} is {person.status}, and cannot be {what}.", status=409)


def routes(site: Site, auth: Auth) -> list[BaseRoute]:
    return People(site, auth).routes()
