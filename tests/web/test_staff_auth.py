"""Signing in to the staff console: accounts, sessions, roles, CSRF, throttling, the audit log."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from pipeline import accounts
from pipeline.store import staff as db
from pipeline.store.tables import staff_sessions, staff_users
from tests.web.conftest import csrf_of

PASSWORD = "correct horse battery staple"


@pytest.fixture
def staff(store):
    for name, role in (("vera", "viewer"), ("ed", "editor"), ("ada", "admin")):
        accounts.add(store, name, role, PASSWORD, by="test")
    return store


def sign_in(client, name: str, password: str = PASSWORD, next_path: str = ""):
    page = client.get("/staff/login" + (f"?next={next_path}" if next_path else ""))
    return client.post("/staff/login", data={"csrf_token": csrf_of(page.text), "username": name,
                                             "password": password, "next": next_path},
                       follow_redirects=False)


def test_passwords_are_argon2id_hashes(staff) -> None:
    with staff.read() as connection:
        hashes = connection.scalars(select(staff_users.c.password_hash)).all()
    assert hashes and all(value.startswith("$argon2id$") for value in hashes)
    assert all(PASSWORD not in value for value in hashes)


def test_accounts_refuse_short_passwords_bad_names_and_twins(staff) -> None:
    with pytest.raises(accounts.AccountError, match="at least 12"):
        accounts.add(staff, "bob", "viewer", "short", by="test")
    with pytest.raises(accounts.AccountError, match="user name"):
        accounts.add(staff, "Bob Smith", "viewer", PASSWORD, by="test")
    with pytest.raises(accounts.AccountError, match="already"):
        accounts.add(staff, "ed", "viewer", PASSWORD, by="test")
    with pytest.raises(accounts.AccountError, match="unknown role"):
        accounts.add(staff, "bob", "root", PASSWORD, by="test")


def test_anonymous_visitors_are_sent_to_sign_in(client, staff) -> None:
    for path in ("/staff/", "/staff/sends", "/staff/sends?status=failed"):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/staff/login?next=")
    assert client.post("/staff/logout", data={}).status_code == 401


def test_sign_in_opens_a_session_and_goes_where_it_was_asked(client, staff) -> None:
    answer = sign_in(client, "vera", next_path="/staff/sends")
    assert answer.status_code == 303 and answer.headers["location"] == "/staff/sends"
    cookie = answer.headers["set-cookie"]
    assert "newsletter_staff=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Secure" in cookie and "Path=/staff" in cookie
    page = client.get("/staff/sends")
    assert page.status_code == 200 and "vera (viewer)" in page.text
    assert page.headers["cache-control"] == "no-store"  # personal data: never kept by a browser or a proxy
    assert client.get("/staff/login").headers["cache-control"] == "no-store"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/staff", "/u/x", "javascript:alert(1)"])
def test_sign_in_never_sends_anyone_to_another_site(client, staff, target) -> None:
    answer = sign_in(client, "vera", next_path=target)
    assert answer.headers["location"] == "/staff/"


def test_a_wrong_password_is_refused_and_throttled(client, staff) -> None:
    codes = [sign_in(client, "ed", "wrong password!").status_code for _ in range(6)]
    assert codes == [401] * 5 + [429]
    assert sign_in(client, "ed").status_code == 429  # even the right one, until the window passes
    assert sign_in(client, "vera").status_code == 303  # another account is not locked out
    entries = [entry.action for entry in db.audit_log(staff)]
    assert entries.count("sign-in failed") == 5


def test_the_login_form_needs_its_csrf_token(client, staff) -> None:
    answer = client.post("/staff/login", data={"username": "ed", "password": PASSWORD})
    assert answer.status_code == 403


def test_a_post_without_the_session_csrf_token_is_refused(client, staff) -> None:
    sign_in(client, "ed")
    assert client.post("/staff/logout", data={}).status_code == 403
    assert client.post("/staff/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/staff/sends").status_code == 200  # still signed in


def test_sign_out_ends_the_session(client, staff) -> None:
    sign_in(client, "ed")
    page = client.get("/staff/sends")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    cookie = client.cookies.get("newsletter_staff")
    assert client.post("/staff/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 303
    client.cookies.set("newsletter_staff", cookie, path="/staff")  # a copy of the cookie opens nothing
    assert client.get("/staff/sends", follow_redirects=False).status_code == 303


def test_sessions_expire_and_idle_out(client, staff) -> None:
    sign_in(client, "vera")
    assert client.get("/staff/sends").status_code == 200
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    with staff.begin() as connection:
        connection.execute(update(staff_sessions).values(expires_at=past))
    assert client.get("/staff/sends", follow_redirects=False).status_code == 303
    sign_in(client, "vera")
    with staff.begin() as connection:
        connection.execute(update(staff_sessions).values(seen_at=past - dt.timedelta(hours=2)))
    assert client.get("/staff/sends", follow_redirects=False).status_code == 303


def test_a_tampered_cookie_opens_nothing(client, staff) -> None:
    sign_in(client, "vera")
    cookie = client.cookies.get("newsletter_staff")
    client.cookies.set("newsletter_staff", cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), path="/staff")
    assert client.get("/staff/sends", follow_redirects=False).status_code == 303


def test_a_new_password_ends_every_session(client, staff) -> None:
    sign_in(client, "vera")
    accounts.change_password(staff, "vera", "another long password", by="test")
    assert client.get("/staff/sends", follow_redirects=False).status_code == 303


def test_an_api_token_reads_but_never_acts(app, staff) -> None:
    token = accounts.new_token(staff, "ed", by="test")
    with TestClient(app, base_url="https://report.example.org") as client:
        headers = {"Authorization": f"Bearer {token}"}
        assert client.get("/staff/sends", headers=headers).status_code == 200
        assert client.get("/staff/sends", headers={"Authorization": "Bearer nlt_forged"},
                          follow_redirects=False).status_code == 401
        assert client.post("/staff/logout", headers=headers, data={}).status_code == 401


def test_the_sign_in_page_is_plain_and_safe(client) -> None:
    page = client.get("/staff/login")
    assert page.status_code == 200
    assert 'autocomplete="current-password"' in page.text
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.databases
def test_the_cli_manages_accounts(run_cli, settings, monkeypatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, _ = run_cli("--config", str(settings.source), "users", "add", "zed", "--role", "editor",
                           "--password-stdin")
    assert code == 0 and "added zed (editor)" in out
    code, out, _ = run_cli("--config", str(settings.source), "users", "list")
    assert "zed" in out and "editor" in out
    code, _, err = run_cli("--config", str(settings.source), "users", "remove", "nobody")
    assert code == 2 and "no user named 'nobody'" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run_cli("--config", str(settings.source), "users", "passwd", "zed", "--password-stdin")
    assert code == 2 and "at least 12" in err
