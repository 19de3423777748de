"""Routes: reader."""

from __future__ import annotations

from starlette.routing import BaseRoute

from pipeline.web.site import Site


def routes(site: Site) -> list[BaseRoute]:
    return []
