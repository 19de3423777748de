"""The schedule in the console: what goes out when (in the publication's zone and UTC), whether its draft changed
since it was scheduled, and an editor's move and cancel.

Only sends that have not fired are moved or cancelled here (the moves ``reschedule`` and ``cancel`` from
scheduled, held or missed); a send under way is paused or cancelled from its own page. A time typed into the
form is read in the publication's zone, and refused when it is past, skipped or doubled by a clock change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import schedule
from pipeline.errors import ScheduleError, SendError
from pipeline.schedule import ScheduledLine
from pipeline.send import cancel_send
from pipeline.store import calendar as db
from pipeline.store import staff as audit_db
from pipeline.store import utcnow
from pipeline.store.states import SEND_MOVES, SendStatus
from pipeline.web.site import Site
from pipeline.web.staff.auth import PREFIX, Auth, Staffer, context
from pipeline.web.staff.forms import BadInput, confirm_page, json_twin, plain, wants_json
from pipeline.when import describe, parse_when

# Sends that have not fired: the only ones this page moves or cancels.
MOVABLE = SEND_MOVES["reschedule"].sources
CANCELLABLE = MOVABLE & SEND_MOVES["cancel"].sources
FOLDS = (("", "it happens once"), ("0", "the first time (before the clocks fall back)"),
         ("1", "the second time (after the clocks fall back)"))


def _row(line: ScheduledLine) -> dict[str, Any]:
    return {"id": line.id, "status": line.status, "at": line.at, "timezone": line.timezone, "changed": line.changed,
            "edition": line.edition, "reason": line.reason, "may_move": line.status in MOVABLE,
            "may_cancel": line.status in CANCELLABLE}


def split(lines: list[ScheduledLine], now: dt.datetime) -> tuple[list[ScheduledLine], list[ScheduledLine]]:
    """(upcoming soonest first, past newest first): a send still waiting for its time is upcoming; a cancelled
    one never goes out, so it is past even when its time is still ahead."""
    upcoming = [line for line in lines if line.status == SendStatus.SCHEDULED
                or (line.at and line.at > now and line.status != SendStatus.CANCELLED)]
    past = [line for line in reversed(lines) if line not in upcoming]
    return upcoming, past


def _notice(request: Request) -> str | None:
    """What the last action did, after its redirect (only words of ours, never text from the address)."""
    done, send_id = request.query_params.get("done", ""), request.query_params.get("send", "")
    if done not in ("moved", "cancelled") or not send_id.isdecimal() or len(send_id) > 12:
        return None
    return f"Send {int(send_id)} {done}."


class Calendar:
    def __init__(self, site: Site, auth: Auth):
        self.site, self.auth = site, auth
        self.zone = site.settings.publication.zone

    def routes(self) -> list[BaseRoute]:
        page, base = self.auth.page, f"{PREFIX}/schedule"
        return [
            Route(base, page("viewer", plain(self.site, self.listing)), methods=["GET"]),
            Route(base + "/{id:int}/move", page("editor", plain(self.site, self.ask_move)), methods=["GET"]),
            Route(base + "/{id:int}/move", page("editor", plain(self.site, self.move)), methods=["POST"]),
            Route(base + "/{id:int}/cancel", page("editor", plain(self.site, self.ask_cancel)), methods=["GET"]),
            Route(base + "/{id:int}/cancel", page("editor", plain(self.site, self.cancel)), methods=["POST"]),
        ]

    async def listing(self, request: Request, staffer: Staffer) -> Response:
        upcoming, past = split(schedule.calendar(self.site.store, self.site.settings), utcnow())
        if wants_json(request):
            return json_twin([_row(line) for line in upcoming + past], upcoming=[line.id for line in upcoming])
        return self.site.pages.page(request, "staff/schedule.html", **context(
            staffer, upcoming=[_row(line) for line in upcoming], past=[_row(line) for line in past],
            zone=self.zone.key, notice=_notice(request)))

    def _entry(self, request: Request, allowed: frozenset[str], verb: str) -> db.Entry:
        send_id = request.path_params["id"]
        found = next((entry for entry in db.entries(self.site.store) if entry.id == send_id), None)
        if found is None:
            raise BadInput(f"There is no scheduled send {send_id}.", status=404)
        if found.status not in allowed:
            raise BadInput(f"Send {send_id} is {found.status}, and cannot be {verb} here.", status=409)
        return found

    # Move --------------------------------------------------------------------------------------------------

    def _move_form(self, request: Request, staffer: Staffer, entry: db.Entry, *, value: str, fold: str = "",
                   status: int = 200, error: str | None = None) -> Response:
        when = describe(entry.at, self.zone) if entry.at else "no time"
        return confirm_page(
            self.site, request, staffer, status=status, heading=f"Move send {entry.id} ({entry.edition})?",
            lede=f"It is {entry.status}, for {when}. The new time is read in {self.zone.key}; the draft is "
                 "rebuilt and checked again when it fires.",
            action=self.auth.path(f"/schedule/{entry.id}/move"), button=f"Move send {entry.id}",
            back=self.auth.path("/schedule"), error=error,
            fields=[{"name": "at", "label": f"New time ({self.zone.key})", "type": "datetime-local",
                     "value": value, "hint": "The date and the time of day, in the publication's zone."},
                    {"name": "fold", "label": "If the clocks fall back at that time, send", "type": "select",
                     "options": FOLDS, "value": fold}])

    async def ask_move(self, request: Request, staffer: Staffer) -> Response:
        entry = self._entry(request, MOVABLE, "moved")
        value = f"{entry.at.astimezone(self.zone):%Y-%m-%dT%H:%M}" if entry.at else ""
        return self._move_form(request, staffer, entry, value=value)

    async def move(self, request: Request, staffer: Staffer) -> Response:
        entry = self._entry(request, MOVABLE, "moved")
        form = await request.form()
        text, fold = str(form.get("at", "")).strip()[:40], str(form.get("fold", ""))
        if fold not in ("", "0", "1"):
            raise BadInput("fold: choose 0 (the first) or 1 (the second)")
        try:
            if not text:
                raise ScheduleError("at: enter the new date and time")
            at = parse_when(text, self.zone, fold=int(fold) if fold else None)
            schedule.require_future(at, self.zone)
        except ScheduleError as exc:
            message = exc.reason.replace("add --fold 0", "choose").replace("or --fold 1", "or")
            return self._move_form(request, staffer, entry, value=text, fold=fold, status=400,
                                   error=f"The new time cannot be used: {message}.")
        try:
            schedule.move(self.site.store, entry.id, at)
        except (ScheduleError, SendError) as exc:
            raise BadInput(exc.reason, status=409) from None
        audit_db.audit(self.site.store, user_name=staffer.user.name, action="schedule move", target=f"send:{entry.id}",
                       detail=f"{entry.at.isoformat() if entry.at else '-'} -> {at.astimezone(dt.UTC).isoformat()}",
                       now=utcnow())
        return RedirectResponse(self.auth.path("/schedule") + f"?done=moved&send={entry.id}", status_code=303)

    # Cancel ------------------------------------------------------------------------------------------------

    async def ask_cancel(self, request: Request, staffer: Staffer) -> Response:
        entry = self._entry(request, CANCELLABLE, "cancelled")
        when = describe(entry.at, self.zone) if entry.at else "no time"
        return confirm_page(
            self.site, request, staffer, heading=f"Cancel send {entry.id} ({entry.edition})?",
            lede=f"It is {entry.status}, for {when}. Cancelled, it never goes out; nobody has been sent it yet. "
                 "This cannot be undone (schedule the draft again instead).",
            action=self.auth.path(f"/schedule/{entry.id}/cancel"), button=f"Cancel send {entry.id}",
            back=self.auth.path("/schedule"))

    async def cancel(self, request: Request, staffer: Staffer) -> Response:
        entry = self._entry(request, CANCELLABLE, "cancelled")
        try:
            cancel_send(self.site.store, entry.id, reason=f"cancelled by {staffer.user.name} in the console")
        except SendError as exc:
            raise BadInput(exc.reason, status=409) from None
        audit_db.audit(self.site.store, user_name=staffer.user.name, action="schedule cancel",
                       target=f"send:{entry.id}", detail=f"was {entry.status}", now=utcnow())
        return RedirectResponse(self.auth.path("/schedule") + f"?done=cancelled&send={entry.id}", status_code=303)


def routes(site: Site, auth: Auth) -> list[BaseRoute]:
    return Calendar(site, auth).routes()
