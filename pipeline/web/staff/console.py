"""Routes: the staff console, gathered from its modules (see ``__init__``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline.web.site import Site
from pipeline.web.staff import admin, calendar, people, sends
from pipeline.web.staff.auth import PREFIX, Auth, Staffer


def routes(site: Site) -> list[BaseRoute]:
    auth = Auth(site)

    async def home(request: Request, staffer: Staffer) -> Response:
        return RedirectResponse(auth.path("/sends"), status_code=303)

    return [
        *auth.routes(),
        Route(f"{PREFIX}/", auth.page("viewer", home), methods=["GET"]),
        *sends.routes(site, auth),
        *people.routes(site, auth),
        *calendar.routes(site, auth),
        *admin.routes(site, auth),
    ]
