"""Routes: the staff console, gathered from its modules (see ``__init__``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.store import reports
from pipeline.web.site import Site
from pipeline.web.staff import admin, calendar, people
from pipeline.web.staff.auth import PREFIX, Auth, Staffer, context


def routes(site: Site) -> list[BaseRoute]:
    auth = Auth(site)

    async def home(request: Request, staffer: Staffer) -> Response:
        return RedirectResponse(auth.path("/sends"), status_code=303)

    async def sends(request: Request, staffer: Staffer) -> Response:
        lines = reports.send_lines(site.store)
        return site.pages.page(request, "staff/sends.html", **context(staffer, sends=lines))

    return [
        *auth.routes(),
        Route(f"{PREFIX}/", auth.page("viewer", home), methods=["GET"]),
        Route(f"{PREFIX}/sends", auth.page("viewer", sends), methods=["GET"]),
        *people.routes(site, auth),
        *calendar.routes(site, auth),
        *admin.routes(site, auth),
    ]
