"""The console's pages in real headless Chromium, served by real uvicorn on a loopback port: no WCAG 2.1 A/AA
violation (axe-core) and no sideways scrolling of the page at 375 px (wide tables scroll inside
``.table-scroll``), at 375 and 1024 px, light and dark. Full-page screenshots go to test-artifacts/staff/.

The pages' Content-Security-Policy allows no script, so the context bypasses CSP to inject axe; nothing
else is loaded from anywhere but the app.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from pipeline.store import readers as reader_db
from pipeline.store import utcnow
from pipeline.web.app import create_app
from tests.conftest import ROOT, chromium_available
from tests.test_accessibility import AXE, RUN_AXE, WCAG_TAGS, describe
from tests.web.staffing import PASSWORD, add_staff, people, scheduled, sent_to_all, subscriber_id

ARTIFACTS = ROOT / "test-artifacts" / "staff"
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif((not chromium_available() or not AXE.is_file()) and not os.environ.get("CI"),
                       reason="needs Debian's chromium and tools/node_modules/axe-core (make setup)"),
]


@pytest.fixture(scope="module")
def browser():
    from pipeline.preview import browser_session

    with browser_session() as chromium:
        yield chromium


@pytest.fixture
def console(settings, store, project) -> Iterator[tuple[str, dict[str, str]]]:
    """The app on uvicorn at a free loopback port, over a store with something on every page; its address and
    the paths of the pages to check."""
    add_staff(store)
    people(store, project, [("ada@example.net", "Ada Lovelace", "policy"), ("bob@example.net", "Bob", "energy"),
                            ("a.very.long.address.that.might.overflow.a.phone@subdomain.example.org",
                             "Someone With A Long Name", "policy;energy")])
    sent_to_all(store, settings, project)
    planned = scheduled(store, settings, project)
    bob = subscriber_id(store, "bob@example.net")
    reader_db.unsubscribe(store, bob, send_id=None, channel="staff", now=utcnow(), provider="staff",
                          detail="asked by phone (by ed)")
    ada = subscriber_id(store, "ada@example.net")
    server, thread, port = _serve(create_app(settings, store))
    pages = {"sends": "/staff/sends", "subscribers": "/staff/subscribers", "subscriber": f"/staff/subscribers/{bob}",
             "unsubscribe": f"/staff/subscribers/{ada}/unsubscribe", "schedule": "/staff/schedule",
             "move": f"/staff/schedule/{planned}/move", "cancel": f"/staff/schedule/{planned}/cancel",
             "audit": "/staff/audit", "users": "/staff/users", "password": "/staff/users/ed/password",
             "not-found": "/staff/subscribers/99999"}
    try:
        yield f"http://127.0.0.1:{port}", pages
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, sock.getsockname()[1]


def _check(page, name: str, width: int, scheme: str) -> list[str]:
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(RUN_AXE, {"type": "tag", "values": WCAG_TAGS})
    problems = [f"{name}: {describe(found)}"] if found else []
    overflow = page.evaluate(OVERFLOW)
    if width <= 375 and overflow > 0:
        problems.append(f"{name}: the page scrolls sideways by {overflow} px at {width} px")
    page.screenshot(path=str(ARTIFACTS / f"{name}-{width}-{scheme}.png"), full_page=True)
    return problems


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [375, 1024])
def test_console_pages_meet_wcag_and_fit_a_phone(browser, console, width: int, scheme: str) -> None:
    base, pages = console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=scheme, bypass_csp=True)
    try:
        page = context.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
        page.goto(base + "/staff/login", wait_until="load")
        problems = _check(page, "login", width, scheme)
        page.fill("#username", "ada")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/staff/sends")
        for name, path in pages.items():
            page.goto(base + path, wait_until="load")
            problems += _check(page, name, width, scheme)
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def test_screenshots_are_kept_out_of_git() -> None:
    assert "test-artifacts/" in Path(ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
