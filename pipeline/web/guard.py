"""What stands between the internet and the routes: headers, limits, CSRF and error pages.

* Every answer carries a Content-Security-Policy without script (an archived edition
  may use inline styles, nothing else does), ``X-Frame-Options: DENY``,
  ``Referrer-Policy: no-referrer`` (a token in the address must not leak to a linked
  site), ``X-Content-Type-Options: nosniff``; and ``Cache-Control: no-store`` on pages
  named by a token and on the staff console.
* A request body larger than ``[web] max_body_bytes`` is refused with 413 before it is
  read in full, whether or not it says its length.
* A form is accepted only with the CSRF token of its page: a random value in a cookie
  (HttpOnly, SameSite=Strict, Secure when the page came over https) and its HMAC in a hidden
  field (signed double-submit). RFC 8058's one-click unsubscribe is the one exception,
  decided by its route: a mail provider posts it with no cookie.
* An error is a plain page with its status and one sentence; a traceback never reaches
  a client, and the access log shows at most the first characters of a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.web.site import Site

log = logging.getLogger("newsletter.web")

PAGE_POLICY = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
               "frame-ancestors 'none'; base-uri 'none'")
# An archived edition is the email itself: inlined styles, images from the asset host; still no script.
EDITION_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; font-src https:; "
                  "form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
CSRF_COOKIE = "newsletter_csrf"
CSRF_FIELD = "csrf_token"
_TOKEN_IN_PATH = re.compile(r"^(/(?:u|p|confirm)/)([A-Za-z0-9_-]{6})[A-Za-z0-9_=-]*")
STATUS_TEXT = {
    400: "This link is not valid. If you copied it from an email, check that it is complete.",
    403: "This form has expired. Go back, reload the page and try again.",
    404: "There is nothing at this address.",
    405: "This address does not accept that kind of request.",
    413: "The request is too large.",
    429: "Too many requests. Please wait a while and try again.",
    500: "Something went wrong on our side. Nothing was changed; please try again later.",
    503: "The service is busy. Please try again in a few minutes.",
}


def redacted(path: str) -> str:
    """A path fit for a log: a token shows its first six characters only."""
    return _TOKEN_IN_PATH.sub(lambda match: f"{match[1]}{match[2]}…", path)


class Guard:
    """Pure ASGI middleware: security headers, the body limit, the access log."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, https: bool, private: str = "/staff"):
        self.app, self.max_body, self.https = app, max_body_bytes, https
        self.private = private.rstrip("/")  # the console: its pages show personal data, never cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, path = time.perf_counter(), redacted(scope.get("path", ""))
        status = 500
        declared = _declared_length(scope)
        if declared is not None and declared > self.max_body:
            await self._too_large(scope, receive, send)
            log.info("%s %s 413 (body of %d bytes)", scope["method"], path, declared)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", PAGE_POLICY)
                headers.setdefault("X-Frame-Options", "DENY")
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Content-Type-Options"] = "nosniff"
                headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
                headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
                if self.https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
                path_now = scope.get("path", "")
                if _TOKEN_IN_PATH.match(path_now) or path_now == self.private or \
                        path_now.startswith(self.private + "/"):
                    headers["Cache-Control"] = "no-store"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            log.info("%s %s %d %.1f ms", scope["method"], path, status, (time.perf_counter() - started) * 1000)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = PlainTextResponse(STATUS_TEXT[413], status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


# CSRF -----------------------------------------------------------------------------------------------------


def _csrf_key(site: Site) -> bytes:
    return hashlib.sha256(b"newsletter csrf v1|" + site.secret.encode()).digest()


def _signed(site: Site, value: str) -> str:
    return hmac.new(_csrf_key(site), value.encode(), hashlib.sha256).hexdigest()


def issue_csrf(site: Site, request: Request) -> str | None:
    """The form token of this request's cookie, made now if it has none (the cookie is set by ``with_csrf``)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", value):
        value = secrets.token_urlsafe(32)
        request.state.new_csrf_cookie = value
    request.state.csrf_token = _signed(site, value)
    return request.state.csrf_token


def with_csrf(site: Site, request: Request, response: Response) -> Response:
    """Set the CSRF cookie a page's token was made for, when the request had none."""
    value = getattr(request.state, "new_csrf_cookie", None)
    if value:
        # Secure whenever the page came over https (behind a TLS proxy, as uvicorn reads its forwarded
        # headers); a plain-http page at a local address could not keep a Secure cookie.
        response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
    return response


def csrf_valid(site: Site, request: Request, form_token: object) -> bool:
    """Whether a submitted form carries the token of this browser's cookie."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if not value or not isinstance(form_token, str):
        return False
    return hmac.compare_digest(_signed(site, value), form_token)


# Error pages ----------------------------------------------------------------------------------------------


def error_handlers(site: Site) -> dict[int | type[Exception], Callable[[Request, Exception], Awaitable[Response]]]:
    """Plain pages for every error status, and for any exception (logged without the request's token)."""

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_page(site, request, status)

    async def crash(request: Request, exc: Exception) -> Response:
        log.error("error answering %s %s: %s: %s", request.method, redacted(request.url.path),
                  type(exc).__name__, exc)
        return error_page(site, request, 500)

    return {HTTPException: http_error, Exception: crash}


def error_page(site: Site, request: Request, status: int, message: str | None = None) -> Response:
    text = message or STATUS_TEXT.get(status, "This request cannot be answered.")
    if request.url.path.startswith("/webhooks/"):
        return PlainTextResponse(text, status_code=status)
    try:
        return site.pages.page(request, "error.html", status=status, status_code=status, message=text)
    except Exception:  # a broken template must not turn an error page into a traceback
        return HTMLResponse(f"<!doctype html><title>{status}</title><p>{text}</p>", status_code=status)
