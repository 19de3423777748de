"""Sign-in, sessions and roles of the staff console.

A session is a random secret in a cookie (signed with the site's secret, HttpOnly,
SameSite=Strict, Secure over https, scoped to /staff/) whose SHA-256 names a row
of ``staff_sessions``; it ends ``[staff] session_hours`` after sign-in, after
``idle_minutes`` without a request, at sign-out, and when the password changes.
Every form of a session carries that session's CSRF token. Failed sign-ins are
limited per account and per address (``limits``); a wrong name costs what a wrong
password costs. A script may read the JSON twin of a page with its account's API
token (``Authorization: Bearer``), never act.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from itsdangerous import BadSignature, Signer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import accounts, urls
from pipeline.store import staff as db
from pipeline.store import utcnow
from pipeline.store.staff import StaffUser
from pipeline.web.guard import CSRF_FIELD, csrf_valid, error_page, issue_csrf, with_csrf
from pipeline.web.site import Site

COOKIE = "newsletter_staff"
PREFIX = urls.CONSOLE
Endpoint = Callable[[Request, "Staffer"], Awaitable[Response]]


@dataclass(frozen=True)
class Staffer:
    """Who is asking: the account, and the CSRF token of their session (None for an API token)."""

    user: StaffUser
    csrf: str | None

    def may(self, role: str) -> bool:
        return accounts.may(self.user.role, role)


class Auth:
    def __init__(self, site: Site):
        self.site, self.settings = site, site.settings
        self.signer = Signer(site.secret, salt="newsletter staff session")
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.per_account: list[RateLimitItem] = parse_many(self.settings.staff.login_rate_account)
        self.per_ip: list[RateLimitItem] = parse_many(self.settings.staff.login_rate_ip)

    # Who is asking -----------------------------------------------------------------------------------------

    def staffer(self, request: Request) -> Staffer | None:
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer ") and request.method == "GET":
            user = accounts.by_token(self.site.store, bearer[7:].strip())
            return None if user is None else Staffer(user, None)
        raw = self._session_secret(request)
        if raw is None:
            return None
        found = db.live_session(self.site.store, _hash(raw), now=utcnow(),
                                idle=dt.timedelta(minutes=self.settings.staff.idle_minutes))
        return None if found is None else Staffer(found.user, found.csrf)

    def _session_secret(self, request: Request) -> str | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 200:
            return None
        try:
            return self.signer.unsign(cookie).decode("ascii")
        except (BadSignature, UnicodeDecodeError):
            return None

    def page(self, role: str, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` for staff of at least ``role``: anonymous visitors go to sign in, others get 403; a
        POST needs its session's CSRF token."""

        async def guarded(request: Request) -> Response:
            staffer = self.staffer(request)
            if staffer is None:
                if request.method == "GET" and "authorization" not in request.headers:
                    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"{self.path('/login')}?next={quote(target)}", status_code=303)
                return error_page(self.site, request, 401, "Sign in first.")
            if not staffer.may(role):
                return error_page(self.site, request, 403, "Your role does not allow this.")
            if request.method == "POST":
                form = await request.form()
                if staffer.csrf is None or not hmac.compare_digest(str(form.get(CSRF_FIELD, "")), staffer.csrf):
                    return error_page(self.site, request, 403)
            request.state.staffer = staffer
            return await endpoint(request, staffer)

        return guarded

    def path(self, tail: str) -> str:
        """A console path under the site's base path."""
        return urls.path_of(urls.console(self.settings, tail))

    # Sign-in and out ---------------------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self._login(request)

    def _login(self, request: Request, *, status: int = 200, error: str | None = None, name: str = "") -> Response:
        issue_csrf(self.site, request)
        page = self.site.pages.page(request, "staff/login.html", status=status, error=error, name=name,
                                    next=_safe_next(request.query_params.get("next"), self.path("/")))
        return with_csrf(self.site, request, page)

    async def login(self, request: Request) -> Response:
        form: FormData = await request.form()
        if not csrf_valid(self.site, request, form.get(CSRF_FIELD)):
            return error_page(self.site, request, 403)
        name, password = str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
        client = request.client.host if request.client else "unknown"
        keys = [(item, "login-account", name) for item in self.per_account] + \
               [(item, "login-ip", client) for item in self.per_ip]
        if not all(self.limiter.test(item, kind, key) for item, kind, key in keys):
            return self._login(request, status=429, name=name,
                               error="Too many failed sign-ins. Wait a few minutes, then try again.")
        user = accounts.authenticate(self.site.store, name, password)
        now = utcnow()
        if user is None:
            for item, kind, key in keys:
                self.limiter.hit(item, kind, key)
            db.audit(self.site.store, user_name=name[:64] or "-", action="sign-in failed",
                     detail=f"from {client}", now=now)
            return self._login(request, status=401, name=name, error="Wrong name or password.")
        raw = secrets.token_urlsafe(32)
        hours = self.settings.staff.session_hours
        db.open_session(self.site.store, session_hash=_hash(raw), user_id=user.id, csrf=secrets.token_urlsafe(32),
                        now=now, expires_at=now + dt.timedelta(hours=hours))
        db.audit(self.site.store, user_name=user.name, action="sign-in", detail=f"from {client}", now=now)
        response = RedirectResponse(_safe_next(str(form.get("next", "")), self.path("/")), status_code=303)
        response.set_cookie(COOKIE, self.signer.sign(raw).decode("ascii"), max_age=int(hours * 3600),
                            path=self.path("/"), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request, staffer: Staffer) -> Response:
        raw = self._session_secret(request)
        if raw is not None:
            db.close_session(self.site.store, _hash(raw))
        db.audit(self.site.store, user_name=staffer.user.name, action="sign-out", now=utcnow())
        response = RedirectResponse(self.path("/login"), status_code=303)
        response.delete_cookie(COOKIE, path=self.path("/"), httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    def routes(self) -> list[BaseRoute]:
        return [Route(f"{PREFIX}/login", self.login_page, methods=["GET"]),
                Route(f"{PREFIX}/login", self.login, methods=["POST"]),
                Route(f"{PREFIX}/logout", self.page("viewer", self.logout), methods=["POST"])]


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("ascii")).hexdigest()


def _safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: a console path of this site, never another site."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target if "/staff" in parts.path else default


def context(staffer: Staffer, **values: Any) -> dict[str, Any]:
    """What every console page shows: who is signed in, what they may do, their CSRF token."""
    return {"staffer": staffer.user, "can_act": staffer.may("editor"), "is_admin": staffer.may("admin"),
            "staff_csrf": staffer.csrf, **values}
