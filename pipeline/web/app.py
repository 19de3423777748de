"""The app: the routes of each module, behind the guard, over the publication's settings and store."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline import urls
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.providers.base import Provider
from pipeline.store import Store
from pipeline.web import archive, reader, webhooks
from pipeline.web.guard import Guard, error_handlers
from pipeline.web.site import WEB_TEMPLATES, Pages, Site
from pipeline.web.staff import console

ROUTE_GROUPS = (reader, archive, webhooks, console)


def create_app(settings: Settings, store: Store | None = None, *, provider: Provider | None = None) -> Starlette:
    """The web side of the publication. ``provider`` replaces the settings' one (tests)."""
    if settings.secret is None:
        raise ConfigError("the web pages sign and open tokens: set NEWSLETTER_SECRET or NEWSLETTER_SECRET_FILE")
    folder = settings.paths.templates / WEB_TEMPLATES
    if not (folder / "base.html").is_file():
        raise ConfigError(f"no web templates in {folder} (base.html is missing)")
    site = Site(settings=settings, store=store or Store.from_settings(settings), pages=Pages(settings),
                provider=provider)

    async def home(request: Request) -> Response:
        return site.pages.page(request, "home.html")

    routes: list[BaseRoute] = [Route("/", home, methods=["GET"])]
    for group in ROUTE_GROUPS:
        routes.extend(group.routes(site))
    routes.append(Mount(urls.STATIC.rstrip("/"), app=StaticFiles(directory=folder / "static"), name="static"))
    prefix = urls.path_of(urls.home(settings)).rstrip("/")
    if prefix:  # base_url has a path (https://example.org/letter): every route is under it
        routes = [Mount(prefix, routes=routes)]
    app = Starlette(routes=routes, exception_handlers=error_handlers(site),
                    middleware=[Middleware(Guard, max_body_bytes=settings.web.max_body_bytes,
                                           private=urls.path_of(urls.console(settings)),
                                           https=settings.publication.base_url.startswith("https://"))])
    app.state.site = site
    return app
