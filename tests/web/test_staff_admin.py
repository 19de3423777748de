"""The audit log (everyone, newest first, in keyset pages) and staff accounts in the web (admins only)."""

from __future__ import annotations

import re

import pytest

from pipeline import accounts
from pipeline.store import staff as db
from pipeline.store import utcnow
from tests.web.conftest import csrf_of
from tests.web.staffing import PASSWORD, add_staff, post_form, sign_in

NEW_PASSWORD = "a different long password"


@pytest.fixture
def staff(store):
    add_staff(store)
    return store


def test_every_page_sends_anonymous_visitors_to_sign_in(client, staff) -> None:
    for path in ("/staff/audit", "/staff/audit?format=json", "/staff/users", "/staff/users/ed/password",
                 "/staff/users/ed/remove"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/staff/login?next="), path
    assert client.post("/staff/users", data={"name": "x"}).status_code == 401


def test_the_audit_log_is_newest_first_in_pages_and_its_twin_has_the_same_rows(client, staff) -> None:
    for number in range(60):
        db.audit(staff, user_name="test", action="note", detail=f"entry {number}", now=utcnow())
    sign_in(client, "vera")
    page = client.get("/staff/audit")
    assert page.status_code == 200
    details = re.findall(r"<td>(entry \d+|from [^<]+)</td>", page.text)
    twin = client.get("/staff/audit?format=json").json()
    assert [row["detail"] for row in twin["rows"]] == details
    assert details[0] == "from testclient" and details[1] == "entry 59" and len(details) == 50
    older = re.search(r'href="([^"]+)" rel="next"', page.text)
    assert older is not None
    rest = client.get(older[1].replace("&amp;", "&"))
    assert re.findall(r"<td>(entry \d+)</td>", rest.text)[-1] == "entry 0"
    assert twin["next_after"] == twin["rows"][-1]["id"]
    assert client.get("/staff/audit?after=-1").status_code == 400


def test_non_admins_get_403_on_every_user_page(client, staff) -> None:
    for name in ("vera", "ed"):
        client.cookies.clear()
        sign_in(client, name)
        token = csrf_of(client.get("/staff/audit").text)
        assert "/staff/users" not in client.get("/staff/audit").text
        for path in ("/staff/users", "/staff/users?format=json", "/staff/users/ada/password",
                     "/staff/users/ada/remove"):
            assert client.get(path).status_code == 403, path
        for path, data in (("/staff/users", {"name": "eve", "role": "admin", "password": PASSWORD}),
                           ("/staff/users/ada/password", {"password": NEW_PASSWORD}),
                           ("/staff/users/ada/remove", {})):
            assert client.post(path, data={"csrf_token": token, **data}).status_code == 403, path
    assert [user.name for user in db.users(staff)] == ["ada", "ed", "vera"]


def test_an_admin_adds_resets_and_removes_accounts_each_audited(client, staff) -> None:
    sign_in(client, "ada")
    page = client.get("/staff/users")
    assert page.status_code == 200 and "vera" in page.text and "/staff/users/ada/remove" not in page.text
    assert [row["name"] for row in client.get("/staff/users?format=json").json()["rows"]] == ["ada", "ed", "vera"]
    answer = post_form(client, "/staff/users", "/staff/users", {"name": "zed", "role": "editor",
                                                                "password": PASSWORD})
    added = db.user_by_name(staff, "zed")
    assert answer.status_code == 303 and added is not None and added.role == "editor"
    short = post_form(client, "/staff/users", "/staff/users", {"name": "yan", "role": "viewer", "password": "short"})
    assert short.status_code == 400 and "at least 12" in short.text
    twin = post_form(client, "/staff/users", "/staff/users", {"name": "zed", "role": "viewer", "password": PASSWORD})
    assert twin.status_code == 400 and "already" in twin.text
    bad_role = post_form(client, "/staff/users", "/staff/users", {"name": "yan", "role": "root", "password": PASSWORD})
    assert bad_role.status_code == 400 and "unknown role" in bad_role.text
    path = "/staff/users/zed/password"
    assert post_form(client, path, path, {"password": "short"}).status_code == 400
    assert post_form(client, path, path, {"password": NEW_PASSWORD}).status_code == 303
    assert accounts.authenticate(staff, "zed", NEW_PASSWORD) is not None
    path = "/staff/users/zed/remove"
    assert post_form(client, path, path, {}).status_code == 303
    assert db.user_by_name(staff, "zed") is None
    actions = [(entry.user_name, entry.action, entry.target) for entry in db.audit_log(staff, limit=3)]
    assert actions == [("ada", "user remove", "user:zed"), ("ada", "user password", "user:zed"),
                       ("ada", "user add", "user:zed")]
    assert client.get("/staff/users/nobody/password").status_code == 404


def test_an_admin_cannot_remove_themselves(client, staff) -> None:
    sign_in(client, "ada")
    assert client.get("/staff/users/ada/remove").status_code == 409
    token = csrf_of(client.get("/staff/users").text)
    assert client.post("/staff/users/ada/remove", data={"csrf_token": token}).status_code == 409
    assert db.user_by_name(staff, "ada") is not None


def test_a_user_post_without_the_csrf_token_is_refused(client, staff) -> None:
    sign_in(client, "ada")
    assert client.post("/staff/users", data={"name": "eve", "role": "admin", "password": PASSWORD}).status_code == 403
    assert client.post("/staff/users/ed/remove", data={"csrf_token": "forged"}).status_code == 403
    assert db.user_by_name(staff, "eve") is None and db.user_by_name(staff, "ed") is not None
