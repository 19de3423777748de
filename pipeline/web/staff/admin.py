"""The audit log (every staff member reads it) and the management of staff accounts (admins only).

Accounts change through ``accounts`` exactly as ``newsletter users`` changes them, which writes the audit
entry with the admin's name. An admin cannot remove their own account, so the console always keeps one.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from pipeline import accounts
from pipeline.store import staff as db
from pipeline.store.staff import StaffUser
from pipeline.web.site import Site
from pipeline.web.staff.auth import PREFIX, Auth, Staffer, context
from pipeline.web.staff.forms import (
    PAGE_SIZE,
    BadInput,
    confirm_page,
    first_link,
    json_twin,
    next_link,
    plain,
    query_after,
    wants_json,
)

NOTICES = {"added": "Account added.", "password": "Password changed; their sessions have ended.",
           "removed": "Account removed."}


class Admin:
    def __init__(self, site: Site, auth: Auth):
        self.site, self.auth = site, auth

    def routes(self) -> list[BaseRoute]:
        page, site = self.auth.page, self.site
        users = f"{PREFIX}/users"
        return [
            Route(f"{PREFIX}/audit", page("viewer", plain(site, self.audit)), methods=["GET"]),
            Route(users, page("admin", plain(site, self.users)), methods=["GET"]),
            Route(users, page("admin", plain(site, self.add)), methods=["POST"]),
            Route(users + "/{name}/password", page("admin", plain(site, self.ask_password)), methods=["GET"]),
            Route(users + "/{name}/password", page("admin", plain(site, self.password)), methods=["POST"]),
            Route(users + "/{name}/remove", page("admin", plain(site, self.ask_remove)), methods=["GET"]),
            Route(users + "/{name}/remove", page("admin", plain(site, self.remove)), methods=["POST"]),
        ]

    async def audit(self, request: Request, staffer: Staffer) -> Response:
        entries, next_after = db.audit_page(self.site.store, after=query_after(request), limit=PAGE_SIZE)
        if wants_json(request):
            return json_twin([vars(entry) for entry in entries], next_after=next_after)
        return self.site.pages.page(request, "staff/audit.html", **context(
            staffer, entries=entries, next_url=next_link(request, next_after), first_url=first_link(request)))

    # Accounts ----------------------------------------------------------------------------------------------

    def _users_page(self, request: Request, staffer: Staffer, *, status: int = 200, error: str | None = None,
                    name: str = "", role: str = "viewer") -> Response:
        return self.site.pages.page(request, "staff/users.html", status=status, **context(
            staffer, users=db.users(self.site.store), roles=accounts.ROLES, error=error, name=name, role=role,
            notice=NOTICES.get(request.query_params.get("done", "")), min_password=accounts.MIN_PASSWORD))

    async def users(self, request: Request, staffer: Staffer) -> Response:
        if wants_json(request):
            return json_twin([{"name": user.name, "role": user.role, "has_token": user.has_token,
                               "created_at": user.created_at} for user in db.users(self.site.store)])
        return self._users_page(request, staffer)

    async def add(self, request: Request, staffer: Staffer) -> Response:
        form = await request.form()
        name, role = str(form.get("name", "")).strip().lower()[:100], str(form.get("role", ""))[:20]
        try:
            accounts.add(self.site.store, name, role, str(form.get("password", "")), by=staffer.user.name)
        except accounts.AccountError as exc:
            return self._users_page(request, staffer, status=400, error=f"Not added: {exc.reason}.", name=name,
                                    role=role if role in accounts.ROLES else "viewer")
        return RedirectResponse(self.auth.path("/users") + "?done=added", status_code=303)

    def _user(self, request: Request) -> StaffUser:
        name = str(request.path_params["name"])
        found = db.user_by_name(self.site.store, name) if len(name) <= 64 else None
        if found is None:
            raise BadInput(f"There is no staff account named {name[:64]!r}.", status=404)
        return found

    def _password_form(self, request: Request, staffer: Staffer, user: StaffUser, *, status: int = 200,
                       error: str | None = None) -> Response:
        return confirm_page(
            self.site, request, staffer, status=status, heading=f"New password for {user.name}?",
            lede=f"Every session of {user.name} ends; they sign in again with the new password. Tell it to them "
                 "by a safe way.",
            action=self.auth.path(f"/users/{user.name}/password"), button=f"Set the password of {user.name}",
            back=self.auth.path("/users"), error=error,
            fields=[{"name": "password", "label": "New password", "type": "password", "value": "",
                     "autocomplete": "new-password", "maxlength": accounts.MAX_PASSWORD,
                     "hint": f"At least {accounts.MIN_PASSWORD} characters."}])

    async def ask_password(self, request: Request, staffer: Staffer) -> Response:
        return self._password_form(request, staffer, self._user(request))

    async def password(self, request: Request, staffer: Staffer) -> Response:
        user = self._user(request)
        form = await request.form()
        try:
            accounts.change_password(self.site.store, user.name, str(form.get("password", "")),
                                     by=staffer.user.name)
        except accounts.AccountError as exc:
            return self._password_form(request, staffer, user, status=400, error=f"password: {exc.reason}.")
        if user.id == staffer.user.id:  # their own session ended with it
            return RedirectResponse(self.auth.path("/login"), status_code=303)
        return RedirectResponse(self.auth.path("/users") + "?done=password", status_code=303)

    def _removable(self, request: Request, staffer: Staffer) -> StaffUser:
        user = self._user(request)
        if user.id == staffer.user.id:
            raise BadInput("You cannot remove your own account; another admin can.", status=409)
        return user

    async def ask_remove(self, request: Request, staffer: Staffer) -> Response:
        user = self._removable(request, staffer)
        return confirm_page(
            self.site, request, staffer, heading=f"Remove {user.name} ({user.role})?",
            lede=f"{user.name} can no longer sign in, and their sessions and API token stop working. The audit "
                 "log keeps what they did.",
            action=self.auth.path(f"/users/{user.name}/remove"), button=f"Remove {user.name}",
            back=self.auth.path("/users"))

    async def remove(self, request: Request, staffer: Staffer) -> Response:
        user = self._removable(request, staffer)
        try:
            accounts.remove(self.site.store, user.name, by=staffer.user.name)
        except accounts.AccountError as exc:
            raise BadInput(exc.reason, status=404) from None
        return RedirectResponse(self.auth.path("/users") + "?done=removed", status_code=303)


def routes(site: Site, auth: Auth) -> list[BaseRoute]:
    return Admin(site, auth).routes()
