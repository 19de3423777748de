"""What every route of the web side shares: the settings, the store, the pages, the provider for mail."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from pipeline import urls
from pipeline.config import Settings
from pipeline.providers.base import Provider
from pipeline.store import Store

WEB_TEMPLATES = "web"  # under [paths] templates


@dataclass(frozen=True)
class Pages:
    """The publication's web pages: Jinja2 templates under ``templates/web/``, autoescaped."""

    settings: Settings
    environment: Environment = field(init=False)

    def __post_init__(self) -> None:
        environment = Environment(loader=FileSystemLoader(self.settings.paths.templates / WEB_TEMPLATES),
                                  autoescape=select_autoescape(default=True, default_for_string=True),
                                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        publication = self.settings.publication
        environment.globals.update(publication={"name": publication.name, "language": publication.language,
                                                "postal_address": publication.postal_address,
                                                "footer": publication.footer},
                                   # Links between the pages are the paths of the public addresses, so that
                                   # the pages work at base_url and on a local address alike.
                                   home_url=urls.path_of(urls.home(self.settings)),
                                   archive_url=urls.path_of(urls.archive(self.settings)),
                                   subscribe_url=urls.path_of(urls.subscribe(self.settings)),
                                   feed_url=urls.path_of(urls.feed(self.settings)),
                                   static_url=urls.path_of(urls.static(self.settings, "")),
                                   console_url=urls.path_of(urls.console(self.settings)))
        environment.filters["when"] = self._when
        object.__setattr__(self, "environment", environment)

    def _when(self, moment: dt.datetime | None) -> str:
        """A time as staff read it: in the publication's zone, with its zone, and in UTC."""
        if moment is None:
            return "–"
        local = moment.astimezone(self.settings.publication.zone)
        return f"{local:%Y-%m-%d %H:%M} {local.tzname()} ({moment.astimezone(dt.UTC):%H:%M} UTC)"

    def text(self, template: str, /, **context: Any) -> str:
        return self.environment.get_template(template).render(**context)

    def page(self, request: Request, template: str, /, *, status: int = 200, **context: Any) -> HTMLResponse:
        """The page ``template`` (under templates/web/), with the request's CSRF token if it has one."""
        csrf = getattr(request.state, "csrf_token", None)
        return HTMLResponse(self.text(template, request=request, csrf_token=csrf, **context), status_code=status)


@dataclass(frozen=True)
class Site:
    """Handed to each module's ``routes(site)``."""

    settings: Settings
    store: Store
    pages: Pages
    provider: Provider | None = None  # the mail provider for confirmations; None: the settings' provider

    @property
    def secret(self) -> str:
        assert self.settings.secret is not None  # create_app refuses to start without one
        return self.settings.secret.get_secret_value()
