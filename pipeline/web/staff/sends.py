"""The console's sends: the list, one send's reckoning and recipients, its CSV, its preview, and its actions.

The web process never runs a send. Resume (and retry failed / resend uncertain, which
queue rows again and need a resume) hands the send to ``newsletter run``: the move
``resume`` with no lease holder, which the runner's next tick takes up as it takes up a
send whose sender died (``store.sends.hand_to_runner``). A live lease is never stolen.
Every action is confirmed on a page that says how many people it affects, posted with
the session's CSRF token, recorded in the audit log, and allowed only when the table of
moves allows it (``states.send_moves_from``). A test send goes out inline: it is one
batch to a few addresses the editor typed, outside the delivery log.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from pipeline import csvcells, send
from pipeline.errors import NewsletterError, SendBusy, SendError
from pipeline.store import console as db
from pipeline.store import sends as send_store
from pipeline.store import utcnow
from pipeline.store.staff import audit
from pipeline.store.states import DeliveryStatus, SendStatus, send_moves_from
from pipeline.web.guard import PAGE_POLICY, error_page
from pipeline.web.site import Site
from pipeline.web.staff.auth import PREFIX, Auth, Staffer, context
from pipeline.web.staff.timeline import chart

D = DeliveryStatus
# The send page frames its preview (same origin); nothing else changes from the site's policy.
SEND_PAGE_POLICY = PAGE_POLICY.replace("default-src 'none';", "default-src 'none'; frame-src 'self';")
# The preview is the email itself: its inlined styles and remote images, no script, framed only by the console.
PREVIEW_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; font-src https:; "
                  "form-action 'none'; frame-ancestors 'self'; base-uri 'none'; sandbox")
CSV_COLUMNS = ("delivery_id", "subscriber_id", "email", "status", "attempts", "provider_message_id", "error_class",
               "error_text", "queued_at", "updated_at", "sent_at", "event", "event_at")
TEST_ADDRESSES_MAX = 10
FIGURES_KEPT = 64  # sends whose failures and timeline are kept in memory


class Partly(SendError):
    """An action made its first move (rows queued again) but not its second (the hand-off to the runner)."""


@dataclass(frozen=True, kw_only=True)
class Action:
    """An editor's action on a send: what it is called, what it does, and whom it affects."""

    name: str
    title: str
    effect: str  # what happens, for the confirmation ("{n}" is how many people)
    done: str  # what happened, after


ACTIONS = {
    "pause": Action(name="pause", title="Pause",
                    effect="Sending stops after the batch in flight; {n} queued recipient(s) wait until it is resumed.",
                    done="Paused: sending stops after the batch in flight."),
    "resume": Action(name="resume", title="Resume",
                     effect="{n} queued recipient(s) will be sent by 'newsletter run' on its next tick.",
                     done="Handed to 'newsletter run', which sends it on its next tick."),
    "cancel": Action(name="cancel", title="Cancel",
                     effect="{n} recipient(s) not yet handed to the provider will never be sent it. A cancelled "
                            "send stays cancelled.",
                     done="Cancelled: nothing more will be sent."),
    "retry": Action(name="retry", title="Retry failed",
                    effect="{n} recipient(s) whose delivery failed for a transient reason are queued again, and "
                           "'newsletter run' sends them. Permanent failures are not retried.",
                    done="Transient failures queued again; 'newsletter run' sends them."),
    "resend": Action(name="resend", title="Resend uncertain",
                     effect="{n} recipient(s) whose fate is unknown are queued again, and 'newsletter run' sends "
                            "them. The provider may have accepted some already: they may get it twice.",
                     done="Uncertain rows queued again; 'newsletter run' sends them."),
}


def affected(detail: db.SendDetail, failures: db.Failures) -> dict[str, int]:
    """The actions the send's status allows now (by the table of moves), each with how many people it affects."""
    status, counts = detail.line.status, detail.line.counts
    moves = send_moves_from(status)
    queued = counts.get(D.QUEUED, 0)
    allowed: dict[str, int] = {}
    if "pause" in moves:
        allowed["pause"] = queued
    if "resume" in moves and not (status == SendStatus.SENDING and detail.lease_live(utcnow())):
        allowed["resume"] = queued + counts.get(D.SENDING, 0)
    if "cancel" in moves:
        allowed["cancel"] = queued
    if status != SendStatus.CANCELLED:
        if failures.transient:
            allowed["retry"] = failures.transient
        if counts.get(D.UNCERTAIN, 0):
            allowed["resend"] = counts[D.UNCERTAIN]
    return allowed


def routes(site: Site, auth: Auth) -> list[BaseRoute]:
    return SendPages(site, auth).routes()


@dataclass(frozen=True, kw_only=True)
class Figures:
    """What a send's page shows beyond its counts: failures and the timeline, kept while the counts stay."""

    failures: db.Failures
    minutes: int
    timeline: list[tuple[Any, int, int]]


class SendPages:
    def __init__(self, site: Site, auth: Auth):
        self.site, self.auth, self.store = site, auth, site.store
        self._figures: OrderedDict[tuple[Any, ...], Figures] = OrderedDict()
        self._counts: dict[tuple[Any, ...], dict[str, int]] = {}  # of settled sends (store.console.SETTLED_SENDS)

    def figures(self, detail: db.SendDetail) -> Figures:
        """The failures and timeline of a send, read again only when its counts or status changed: every move of
        a row changes the counts (settling, retrying, cancelling), so the same counts mean the same figures.
        A page of a million rows then reads the rows' index for the counts only."""
        line = detail.line
        key = (line.id, tuple(sorted(line.counts.items())), line.status, line.reason)
        found = self._figures.get(key)
        if found is None:
            minutes, points = db.timeline(self.store, line.id)
            found = Figures(failures=db.failures(self.store, line.id), minutes=minutes, timeline=points)
            self._figures[key] = found
            while len(self._figures) > FIGURES_KEPT:
                self._figures.popitem(last=False)
        self._figures.move_to_end(key)
        return found

    def routes(self) -> list[BaseRoute]:
        base = f"{PREFIX}/sends"
        viewer, editor = (lambda endpoint: self.auth.page("viewer", endpoint)), \
                         (lambda endpoint: self.auth.page("editor", endpoint))
        return [
            Route(base, viewer(self.index), methods=["GET"]),
            Route(base + "/{send_id:int}", viewer(self.show), methods=["GET"]),
            Route(base + "/{send_id:int}/recipients.csv", viewer(self.csv), methods=["GET"]),
            Route(base + "/{send_id:int}/preview", viewer(self.preview), methods=["GET"]),
            Route(base + "/{send_id:int}/test", editor(self.test_send), methods=["POST"]),
            Route(base + "/{send_id:int}/{action:str}", editor(self.confirm), methods=["GET"]),
            Route(base + "/{send_id:int}/{action:str}", editor(self.act), methods=["POST"]),
        ]

    # Reading ---------------------------------------------------------------------------------------------

    async def index(self, request: Request, staffer: Staffer) -> Response:
        lines = db.send_rows(self.store)
        if request.query_params.get("format") == "json":
            return JSONResponse({"sends": [line.to_dict() for line in lines]})
        return self.site.pages.page(request, "staff/sends.html", **context(staffer, sends=lines))

    def _detail(self, request: Request) -> db.SendDetail | Response:
        if len(self._counts) > FIGURES_KEPT:
            self._counts.clear()
        detail = db.send_detail(self.store, int(request.path_params["send_id"]), kept=self._counts)
        return error_page(self.site, request, 404, "There is no such send.") if detail is None else detail

    def _filter(self, request: Request) -> tuple[db.Filter, int | None]:
        """The table's filter and cursor from the query; BadQuery for any that cannot be used."""
        params = request.query_params
        chosen = db.Filter.of(params.get("status"), params.get("search"))
        raw = params.get("after", "").strip()
        if raw and not (raw.isascii() and raw.isdigit() and len(raw) < 19):
            raise db.BadQuery("'after' is the delivery id a page starts after: a whole number")
        return chosen, int(raw) if raw else None

    async def show(self, request: Request, staffer: Staffer) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        try:
            chosen, after = self._filter(request)
            page = db.recipients(self.store, detail.line.id, chosen, after=after, limit=db.PAGE_SIZE)
        except db.BadQuery as exc:
            return error_page(self.site, request, 400, str(exc))
        send_path = self.auth.path(f"/sends/{detail.line.id}")
        filters = {key: value for key, value in (("status", chosen.status), ("search", chosen.search)) if value}
        next_url = (f"{send_path}?{urlencode({**filters, 'after': page.next_after})}"
                    if page.next_after is not None else None)
        figures = self.figures(detail)
        if request.query_params.get("format") == "json":
            return JSONResponse(self._json(detail, figures.failures, page, next_url))
        response = self.site.pages.page(
            request, "staff/send.html", **context(
                staffer, send=detail.line, detail=detail, reckoning=detail.reckoning(), page=page,
                chosen=chosen, after=after, next_url=next_url, send_path=send_path,
                first_url=f"{send_path}?{urlencode(filters)}" if filters else send_path,
                csv_url=f"{send_path}/recipients.csv" + (f"?{urlencode(filters)}" if filters else ""),
                actions={name: (ACTIONS[name], count) for name, count in affected(detail, figures.failures).items()},
                failures=figures.failures, statuses=tuple(DeliveryStatus),
                chart=chart(figures.minutes, figures.timeline, self.site.settings.publication.zone),
                report=detail.check_report, done=ACTIONS[done].done if (done := request.query_params.get(
                    "done", "")) in ACTIONS else None, lease_live=detail.lease_live(utcnow())))
        response.headers["Content-Security-Policy"] = SEND_PAGE_POLICY
        return response

    def _json(self, detail: db.SendDetail, failures: db.Failures, page: db.RecipientPage,
              next_url: str | None) -> dict[str, Any]:
        return {"send": {**detail.line.to_dict(), "override_reason": detail.override_reason,
                         "check_report": detail.check_report, "runner": detail.runner,
                         "lease_until": detail.lease_until.isoformat() if detail.lease_until else None},
                "reconciliation": dict(detail.reckoning()),
                "failure_reasons": [{"status": status, "reason": reason, "count": count}
                                    for status, reason, count in failures.reasons],
                "recipients": [row.to_dict() for row in page.rows],
                "next_after": page.next_after, "next": next_url}

    async def csv(self, request: Request, staffer: Staffer) -> Response:
        """Exactly the rows the page's filter selects, streamed a chunk at a time; formula cells defused."""
        send_id = int(request.path_params["send_id"])
        if not db.exists(self.store, send_id):
            return error_page(self.site, request, 404, "There is no such send.")
        try:
            chosen, _ = self._filter(request)
        except db.BadQuery as exc:
            return error_page(self.site, request, 400, str(exc))
        rows = db.every_recipient(self.store, send_id, chosen)
        return StreamingResponse(_csv_chunks(rows), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="send-{send_id}-recipients.csv"'})

    async def preview(self, request: Request, staffer: Staffer) -> Response:
        html = db.edition_html(self.store, int(request.path_params["send_id"]))
        if html is None:
            return error_page(self.site, request, 404, "There is no such send.")
        return HTMLResponse(html, headers={"Content-Security-Policy": PREVIEW_POLICY,
                                           "X-Frame-Options": "SAMEORIGIN"})

    # Acting ----------------------------------------------------------------------------------------------

    def _action(self, request: Request) -> tuple[db.SendDetail, Action, int] | Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        action = ACTIONS.get(request.path_params["action"])
        if action is None:
            return error_page(self.site, request, 404)
        allowed = affected(detail, db.failures(self.store, detail.line.id))
        if action.name not in allowed:
            return error_page(self.site, request, 409, f"Send {detail.line.id} is {detail.line.status}: it cannot "
                                                       f"be given '{action.title}' now.")
        return detail, action, allowed[action.name]

    async def confirm(self, request: Request, staffer: Staffer) -> Response:
        found = self._action(request)
        if isinstance(found, Response):
            return found
        detail, action, count = found
        return self.site.pages.page(request, "staff/send_confirm.html", **context(
            staffer, send=detail.line, action=action, effect=action.effect.format(n=f"{count:,}"), count=count,
            send_path=self.auth.path(f"/sends/{detail.line.id}")))

    async def act(self, request: Request, staffer: Staffer) -> Response:
        found = self._action(request)
        if isinstance(found, Response):
            return found
        detail, action, count = found
        form = await request.form()
        if form.get("confirm") != "yes":
            return error_page(self.site, request, 400, "Tick the box to confirm, then try again.")
        send_id, name = detail.line.id, staffer.user.name
        try:
            outcome = self._perform(action.name, send_id, name)
        except Partly as exc:  # rows were queued again: that is recorded, and the page says what is left to do
            audit(self.store, user_name=name, action=f"send {action.name}", target=f"send {send_id}",
                  detail=str(exc), now=utcnow())
            return error_page(self.site, request, 409, str(exc))
        except SendError as exc:
            return error_page(self.site, request, 409, str(exc))
        audit(self.store, user_name=name, action=f"send {action.name}", target=f"send {send_id}",
              detail=outcome, now=utcnow())
        return RedirectResponse(f"{self.auth.path(f'/sends/{send_id}')}?done={action.name}", status_code=303)

    def _perform(self, name: str, send_id: int, by: str) -> str:
        """Make the action's move; what it did, for the audit log. SendError when the move is refused."""
        if name == "pause":
            send.pause_send(self.store, send_id)
            return "paused"
        if name == "cancel":
            send.cancel_send(self.store, send_id, f"cancelled from the console by {by}")
            return "cancelled"
        if name == "resume":
            send_store.hand_to_runner(self.store, send_id, f"resumed from the console by {by}; 'newsletter run' "
                                                           "sends it")
            return "handed to 'newsletter run'"
        count = (send.retry_failed if name == "retry" else send.resend_uncertain)(self.store, send_id)
        try:
            send_store.hand_to_runner(self.store, send_id, f"{count} row(s) queued again from the console by {by}; "
                                                           "'newsletter run' sends them")
        except SendBusy as exc:
            if send_store.send_record(self.store, send_id).status == SendStatus.SENDING:
                return f"{count} row(s) queued again; {exc.runner}, which is sending it, sends them"
            raise Partly(f"{count} row(s) queued again, but {exc}; resume it then") from None
        return f"{count} row(s) queued again; handed to 'newsletter run'"

    async def test_send(self, request: Request, staffer: Staffer) -> Response:
        detail = self._detail(request)
        if isinstance(detail, Response):
            return detail
        form = await request.form()
        addresses = [part.strip() for part in str(form.get("addresses", "")).replace("\n", ",").split(",")
                     if part.strip()]
        bad = [address for address in addresses if not _looks_like_address(address)]
        if not addresses or bad or len(addresses) > TEST_ADDRESSES_MAX:
            return error_page(self.site, request, 400, f"Give 1 to {TEST_ADDRESSES_MAX} addresses, separated by "
                                                       "commas" + (f"; not an address: {bad[0]}" if bad else "."))
        edition, subject, html, text = send_store.sent_parts(self.store, detail.line.id)
        try:
            outcomes = await send.send_test(self.site.settings, edition_name=edition, subject=subject, html=html,
                                            text=text, addresses=addresses, provider=self.site.provider)
        except NewsletterError as exc:
            return error_page(self.site, request, 502, f"The provider did not take the test send: {exc}")
        results = list(zip(addresses, outcomes, strict=False))
        audit(self.store, user_name=staffer.user.name, action="send test", target=f"send {detail.line.id}",
              detail=", ".join(f"{address}: {outcome.status}" for address, outcome in results), now=utcnow())
        return self.site.pages.page(request, "staff/send_test.html", **context(
            staffer, send=detail.line, results=results, send_path=self.auth.path(f"/sends/{detail.line.id}")))


def _looks_like_address(address: str) -> bool:
    local, _, domain = address.rpartition("@")
    return bool(local) and "." in domain and len(address) <= 320 and not any(c.isspace() for c in address)


def _csv_chunks(rows: Iterator[db.Recipient], every: int = 500) -> Iterator[str]:
    """The CSV text, a few hundred rows at a time (a sync iterator: Starlette runs it in a thread)."""
    buffer = io.StringIO()
    writer = csvcells.Writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for number, row in enumerate(rows, start=1):
        writer.writerow([row.id, row.subscriber_id, row.email, row.status, row.attempts, row.provider_message_id,
                         row.error_class, row.error_text, _iso(row.queued), _iso(row.updated), _iso(row.sent),
                         row.event, _iso(row.event_at)])
        if number % every == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _iso(moment: Any) -> str:
    return moment.isoformat() if moment is not None else ""


__all__ = ["ACTIONS", "affected", "routes"]
