"""The readers' pages in real headless Chromium against the real server (``newsletter serve`` on uvicorn).

A reader leaves through the link of a mail that a real send wrote to the outbox; a visitor signs up,
follows the confirmation mail's link and confirms; a subscriber changes their name. The live project's
base_url is the local server, so the links in its mails are followed as they are. Each step is kept as
full-page screenshots at 375 and 1024 px, light and dark, under test-artifacts/web/ (git-ignored), and
no step scrolls sideways at either width.

The pages have no script and their CSP allows none: these contexts keep that CSP (only the
accessibility tests bypass it, to inject axe-core), and one test shows it really stops inline script.
"""

from __future__ import annotations

import email.message
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from sqlalchemy import select

from pipeline.preview import browser_session
from pipeline.store import Store
from pipeline.store.tables import signups, subscribers
from pipeline.subscribers import import_subscribers
from tests.conftest import ROOT, SAMPLE, chromium_available, parsed, part
from tests.web.conftest import LiveServer

ARTIFACTS = ROOT / "test-artifacts" / "web"
WIDTHS = (375, 1024)

pytestmark = [
    pytest.mark.browser,
    # Skipped only on a developer's machine without Chromium; in CI (make setup installs it) a miss fails loudly.
    pytest.mark.skipif(not chromium_available() and not os.environ.get("CI"),
                       reason="needs Debian's chromium (make setup)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with browser_session() as chromium:
        yield chromium


def loopback_only(server: LiveServer):
    """A route handler that lets requests to the local server through and aborts everything else."""

    def handle(route: Route) -> None:
        if route.request.url.startswith((server.url + "/", "data:", "about:")):
            route.continue_()
        else:
            route.abort()

    return handle


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": WIDTHS[-1], "height": 800})
    context.route("**/*", loopback_only(live_server))
    try:
        yield context.new_page()
    finally:
        context.close()


def snapshot(page: Page, name: str) -> None:
    """Full-page screenshots of the page as it is now, at each width, light and dark; none scrolls sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            page.screenshot(path=ARTIFACTS / f"{name}-{width}-{scheme}.png", full_page=True)
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= width, f"{name} is {scroll_width} px wide in a {width} px window"
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": WIDTHS[-1], "height": 800})


def unique_address(who: str) -> str:
    """An address no other test of the module uses (they share one server and store)."""
    return f"{who}-{uuid.uuid4().hex[:8]}@example.net"


def add_readers(server: LiveServer, store: Store, people: list[tuple[str, str]]) -> None:
    path = server.project / f"people-{uuid.uuid4().hex[:8]}.csv"
    path.write_text("email,name,tags\n" + "".join(f"{email},{name},policy\n" for email, name in people),
                    encoding="utf-8")
    assert not import_subscribers(store, path).rejected


def subscriber(store: Store, address: str):
    with store.read() as connection:
        return connection.execute(select(subscribers).where(subscribers.c.email_key == address.lower())).first()


def mails_to(folder: Path, address: str) -> list[email.message.EmailMessage]:
    found = [parsed(path.read_bytes()) for path in sorted(folder.glob("*/*.eml"))]
    return [message for message in found if address in str(message["To"])]


def list_unsubscribe_url(message: email.message.EmailMessage) -> str:
    found = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    assert found, f"no web address in List-Unsubscribe: {message['List-Unsubscribe']}"
    return found[1]


# A reader leaves --------------------------------------------------------------------------------------------


def test_a_reader_unsubscribes_through_the_page_of_their_mail(page: Page, live_server: LiveServer,
                                                               live_store: Store) -> None:
    leaving, staying = unique_address("ada"), unique_address("bob")
    add_readers(live_server, live_store, [(leaving, "Ada Lovelace"), (staying, "Bob")])
    sent = live_server.newsletter("send", SAMPLE, "--now", "--offline")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    (mail,) = mails_to(live_server.settings.paths.outbox, leaving)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    page.goto(live_server.local(list_unsubscribe_url(mail)))
    expect(page.get_by_role("heading", level=1)).to_have_text("Unsubscribe from The China-Russia Report?")
    expect(page.get_by_text("a…@example.net")).to_be_visible()
    snapshot(page, "unsubscribe-1-page")
    assert subscriber(live_store, leaving).status == "active", "opening the link alone unsubscribed them"

    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    snapshot(page, "unsubscribe-2-done")
    row = subscriber(live_store, leaving)
    assert (row.status, row.unsubscribe_channel) == ("unsubscribed", "page")
    assert subscriber(live_store, staying).status == "active"

    page.goto(live_server.local(list_unsubscribe_url(mail)))
    expect(page.get_by_role("heading", level=1)).to_have_text("You are not subscribed")
    expect(page.get_by_role("button", name="Subscribe again")).to_be_visible()


# A visitor signs up and sets their preferences -----------------------------------------------------------------


def sign_up(page: Page, server: LiveServer, store: Store, address: str, name: str, *, shots: str = "") -> None:
    """Sign up through the form, follow the confirmation mail's link and confirm; ends on "You are subscribed"."""
    page.goto("/subscribe")
    expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe to The China-Russia Report")
    page.get_by_label("Email address").fill(address)
    page.get_by_role("textbox", name="Name").fill(name)
    if shots:
        snapshot(page, f"{shots}-1-form")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")
    if shots:
        snapshot(page, f"{shots}-2-check-inbox")
    assert subscriber(store, address) is None, "a signup is not a subscriber before it is confirmed"

    (mail,) = mails_to(server.settings.paths.outbox, address)
    assert mail["List-Unsubscribe"] is None  # a transactional message, not an edition
    found = re.search(re.escape(server.url) + r"/confirm/[A-Za-z0-9_-]+", part(mail, "plain"))
    assert found, "no confirmation link in the mail"
    page.goto(server.local(found[0]))
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm your subscription")
    if shots:
        snapshot(page, f"{shots}-3-confirm")
    assert subscriber(store, address) is None, "opening the confirmation link alone subscribed them"
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("You are subscribed")
    if shots:
        snapshot(page, f"{shots}-4-subscribed")


def test_a_visitor_signs_up_and_confirms_from_the_mail(page: Page, live_server: LiveServer,
                                                       live_store: Store) -> None:
    address = unique_address("grace")
    sign_up(page, live_server, live_store, address, "Grace Hopper", shots="signup")
    row = subscriber(live_store, address)
    assert (row.status, row.name) == ("active", "Grace Hopper")
    with live_store.read() as connection:
        confirmed = connection.execute(select(signups.c.confirmed_at).where(signups.c.email_key == address)).one()
    assert confirmed.confirmed_at is not None


def test_a_subscriber_changes_their_name_in_the_preferences(page: Page, live_server: LiveServer,
                                                            live_store: Store) -> None:
    address = unique_address("edsger")
    sign_up(page, live_server, live_store, address, "Edsger")
    page.get_by_role("link", name="Your preferences").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your preferences")
    expect(page.get_by_role("textbox", name="Name")).to_have_value("Edsger")
    snapshot(page, "preferences-1-page")

    page.get_by_role("textbox", name="Name").fill("Edsger W. Dijkstra")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_role("textbox", name="Name")).to_have_value("Edsger W. Dijkstra")
    snapshot(page, "preferences-2-saved")
    row = subscriber(live_store, address)
    assert (row.status, row.name) == ("active", "Edsger W. Dijkstra")


# The page's policy -------------------------------------------------------------------------------------------

INJECT_SCRIPT = """() => new Promise(resolve => {
  const blocked = [];
  document.addEventListener('securitypolicyviolation', event => blocked.push(event.effectiveDirective));
  const inline = document.createElement('script');
  inline.textContent = 'window.inlineRan = true;';
  document.body.append(inline);
  const handler = document.createElement('img');
  handler.setAttribute('onerror', 'window.handlerRan = true;');
  handler.setAttribute('src', '/static/none.png');
  handler.setAttribute('alt', '');
  document.body.append(handler);
  setTimeout(() => resolve({inline: window.inlineRan === true, handler: window.handlerRan === true, blocked}), 500);
})"""


@pytest.mark.parametrize("bypass", [False, True], ids=["served-policy", "policy-bypassed"])
def test_the_pages_policy_stops_inline_script(browser: Browser, live_server: LiveServer, bypass: bool) -> None:
    """Script written into a served page does not run; with the policy bypassed the same script does (the
    test can see it run)."""
    context = browser.new_context(base_url=live_server.url, bypass_csp=bypass)
    context.route("**/*", loopback_only(live_server))
    try:
        page = context.new_page()
        page.goto("/subscribe")
        ran = page.evaluate(INJECT_SCRIPT)
    finally:
        context.close()
    if bypass:
        assert ran["inline"] and ran["handler"]
    else:
        assert not ran["inline"] and not ran["handler"]
        assert "script-src-elem" in ran["blocked"] and "script-src-attr" in ran["blocked"]
