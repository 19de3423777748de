"""What the console's lists and forms share: reading query and form fields, JSON twins, plain refusals.

A bad field is a ``BadInput`` naming it; ``plain`` turns it into a 400 page with that sentence, so a
mistyped address or a forged form gets a page that says what was wrong, never a traceback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pipeline.oneline import breaking_character
from pipeline.web.guard import error_page
from pipeline.web.site import Site
from pipeline.web.staff.auth import Endpoint, Staffer, context

PAGE_SIZE = 50
FORMATS = ("html", "json")


class BadInput(Exception):
    """A field of a request that cannot be used; ``status`` 400, or 404/409 for what is not there or not now."""

    def __init__(self, message: str, *, status: int = 400):
        self.message, self.status = message, status
        super().__init__(message)


def plain(site: Site, endpoint: Endpoint) -> Endpoint:
    """``endpoint``, with a ``BadInput`` answered by a plain page of its status and sentence."""

    async def answered(request: Request, staffer: Staffer) -> Response:
        try:
            return await endpoint(request, staffer)
        except BadInput as exc:
            return error_page(site, request, exc.status, exc.message)

    return answered


def confirm_page(site: Site, request: Request, staffer: Staffer, *, heading: str, lede: str, action: str,
                 button: str, back: str, fields: list[dict[str, Any]] | None = None, error: str | None = None,
                 status: int = 200) -> Response:
    """The confirmation step of a console action: what it does, its fields, one button that posts it."""
    return site.pages.page(request, "staff/confirm.html", status=status, **context(
        staffer, heading=heading, lede=lede, action=action, button=button, back=back, error=error,
        fields=fields or []))


def one_line(name: str, value: str, *, longest: int) -> str:
    """``value`` stripped; BadInput naming the field when it is too long or spans lines."""
    value = value.strip()
    if len(value) > longest:
        raise BadInput(f"{name}: at most {longest} characters, not {len(value)}")
    if breaking_character(value):
        raise BadInput(f"{name}: one line, without control characters")
    return value


def query_text(request: Request, name: str, *, longest: int = 320) -> str | None:
    value = one_line(name, request.query_params.get(name, ""), longest=longest)
    return value or None


def query_choice(request: Request, name: str, choices: Iterable[str]) -> str | None:
    value = request.query_params.get(name, "").strip()
    options = tuple(choices)
    if value and value not in options:
        raise BadInput(f"{name}: {value[:40]!r} is not one of {', '.join(options)}")
    return value or None


def query_after(request: Request) -> int | None:
    """The keyset cursor of a list: the id of the last row of the page before."""
    value = request.query_params.get("after", "").strip()
    if not value:
        return None
    if not value.isdecimal() or len(value) > 18:
        raise BadInput(f"after: {value[:40]!r} is not a row id (a whole number)")
    return int(value)


def wants_json(request: Request) -> bool:
    """Whether the JSON twin of the list was asked for (``?format=json``)."""
    return query_choice(request, "format", FORMATS) == "json"


def form_text(form: FormData, name: str, *, longest: int, required: bool = True) -> str:
    value = one_line(name, str(form.get(name, "")), longest=longest)
    if required and not value:
        raise BadInput(f"{name}: this field is required")
    return value


def next_link(request: Request, after: int | None) -> str | None:
    """The address of the next page: these filters, the cursor moved on."""
    if after is None:
        return None
    kept = [(key, value) for key, value in request.query_params.multi_items() if key != "after"]
    return request.url.path + "?" + urlencode([*kept, ("after", str(after))])


def first_link(request: Request) -> str | None:
    """The address of the first page of these filters; None when this is it."""
    if "after" not in request.query_params:
        return None
    kept = [(key, value) for key, value in request.query_params.multi_items() if key != "after"]
    return request.url.path + ("?" + urlencode(kept) if kept else "")


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def json_twin(rows: list[dict[str, Any]], *, next_after: int | None = None, **more: Any) -> Response:
    """A list as a script reads it: its rows (times as ISO 8601 in UTC) and the cursor of the next page."""
    body = {"rows": _plain(rows), "next_after": next_after, **_plain(more)}
    return JSONResponse(body)
