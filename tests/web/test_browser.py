"""The readers' pages in real headless Chromium against the real server (``newsletter serve`` on uvicorn).

A reader leaves through the link of a mail that a real send wrote to the outbox; a visitor signs up,
follows the confirmation mail's link and confirms; a subscriber changes their name. The live project's
base_url is the local server, so the links in its mails are followed as they are. Each step is kept as
full-page screenshots at 375 and 1024 px, light and dark, under test-artifacts/web/ (git-ignored), and
no step scrolls sideways at either width. axe-core checks every page a reader can reach, in each state
(an error shown, a link expired, before and after each button), at both widths, light and dark.

The pages have no script and their CSP allows none: these contexts keep that CSP (only the
accessibility tests bypass it, to inject axe-core), and one test shows it really stops inline script.
"""

from __future__ import annotations

import datetime as dt
import email.message
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page, Route, expect
from sqlalchemy import select

from pipeline import messages, readers
from pipeline.preview import browser_session
from pipeline.store import Store, utcnow
from pipeline.store import readers as db
from pipeline.store.tables import signups, subscribers
from pipeline.subscribers import import_subscribers
from tests.conftest import ROOT, SAMPLE, chromium_available, parsed, part
from tests.test_accessibility import AXE, OUTLINE_RULES, PAGE_RULES, RUN_AXE, WCAG_TAGS, describe
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


# Keyboard -----------------------------------------------------------------------------------------------------

FOCUSED = """() => {
  const element = document.activeElement, style = getComputedStyle(element);
  return {what: element.outerHTML.slice(0, 80), name: element.getAttribute('name'),
          outline: style.outlineStyle, width: parseFloat(style.outlineWidth)};
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_control_shows_where_the_keyboard_is(page: Page, live_server: LiveServer, live_store: Store,
                                                   scheme: Literal["light", "dark"]) -> None:
    """Tab goes through the links, fields and buttons of a form, each showing a focus ring; never to the
    honeypot a person cannot see."""
    page.emulate_media(color_scheme=scheme)
    for path in ("/subscribe", _preferences_link(live_server, live_store)):
        page.goto(path)
        seen = []
        for _ in range(20):
            page.keyboard.press("Tab")
            focused = page.evaluate(FOCUSED)
            if focused["what"].startswith("<body"):
                break
            seen.append(focused)
            assert focused["outline"] != "none" and focused["width"] >= 2, f"no focus ring on {focused['what']}"
        names = [focused["name"] for focused in seen]
        assert "website" not in names, "the honeypot takes the focus"
        assert {"name", "topics"} <= set(names), names


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


# Accessibility: axe-core on every page a reader can reach ----------------------------------------------------

needs_axe = pytest.mark.skipif(not AXE.is_file() and not os.environ.get("CI"),
                               reason="needs tools/node_modules/axe-core (make setup)")
Visit = Callable[[Page, LiveServer, Store], None]


def _reader(server: LiveServer, store: Store, *, unsubscribed: bool = False, who: str = "reader") -> int:
    address = unique_address(who)
    add_readers(server, store, [(address, "Reader")])
    subscriber_id = int(subscriber(store, address).id)
    if unsubscribed:
        db.unsubscribe(store, subscriber_id, send_id=None, channel="staff", now=utcnow())
    return subscriber_id


def _unsubscribe_link(server: LiveServer, store: Store, *, unsubscribed: bool = False) -> str:
    return "/u/" + messages.unsubscribe_token(server.settings, _reader(server, store, unsubscribed=unsubscribed), 0)


def _preferences_link(server: LiveServer, store: Store, *, who: str = "reader") -> str:
    return "/p/" + readers.preferences_token(server.settings, _reader(server, store, who=who))


def _confirm_link(server: LiveServer, store: Store, *, hours_ago: float = 0) -> str:
    address = unique_address("visitor")
    confirm_hours = server.settings.web.confirm_hours
    ticket = db.open_signup(store, email=address, email_key=address, name="", tags=(),
                            now=utcnow() - dt.timedelta(hours=hours_ago), valid_for=dt.timedelta(hours=confirm_hours),
                            resend_after=dt.timedelta(hours=1))
    return "/confirm/" + readers.confirm_token(server.settings, ticket.id, ticket.created_at)


Link = Callable[[LiveServer, Store], str]


def _open(link: str | Link) -> Visit:
    def visit(page: Page, server: LiveServer, store: Store) -> None:
        page.goto(link if isinstance(link, str) else link(server, store))

    return visit


def _click(link: Link, button: str, *, tick: str | None = None) -> Visit:
    def visit(page: Page, server: LiveServer, store: Store) -> None:
        page.goto(link(server, store))
        if tick:
            page.get_by_label(tick).check()
        page.get_by_role("button", name=button, exact=True).click()

    return visit


def _sign_up_as(address: Callable[[], str]) -> Visit:
    def visit(page: Page, server: LiveServer, store: Store) -> None:
        page.goto("/subscribe")
        page.get_by_label("Email address").fill(address())
        page.get_by_role("button", name="Subscribe").click()

    return visit


def _stale_form(page: Page, server: LiveServer, store: Store) -> None:
    page.goto("/subscribe")
    page.context.clear_cookies()  # the form's token no longer matches this browser's cookie: 403
    page.get_by_label("Email address").fill(unique_address("late"))
    page.get_by_role("button", name="Subscribe").click()


# Each page, and the heading that proves the visit reached it.
PAGES: dict[str, tuple[Visit, str]] = {
    "home": (_open("/"), "The China-Russia Report"),
    "subscribe": (_open("/subscribe"), "Subscribe to The China-Russia Report"),
    "subscribe-error": (_sign_up_as(lambda: "not an address"), "Subscribe to The China-Russia Report"),
    "check-inbox": (_sign_up_as(lambda: unique_address("new")), "Check your inbox"),
    "unsubscribe": (_open(_unsubscribe_link), "Unsubscribe from The China-Russia Report?"),
    "unsubscribe-not-subscribed": (_open(lambda server, store: _unsubscribe_link(server, store, unsubscribed=True)),
                                   "You are not subscribed"),
    "unsubscribed": (_click(_unsubscribe_link, "Unsubscribe"), "You are unsubscribed"),
    "resubscribe": (_click(lambda server, store: _unsubscribe_link(server, store, unsubscribed=True),
                           "Subscribe again"), "Check your inbox"),
    "confirm": (_open(_confirm_link), "Confirm your subscription"),
    "confirm-expired": (_open(lambda server, store: _confirm_link(server, store, hours_ago=49)),
                        "This link has expired"),
    "confirmed": (_click(_confirm_link, "Confirm my subscription"), "You are subscribed"),
    "preferences": (_open(_preferences_link), "Your preferences"),
    # An address is one long word: at 375 px it must wrap rather than push the page sideways.
    "preferences-long-address": (_open(lambda server, store: _preferences_link(
        server, store, who="areaderwitharatherlongaddressthathasnohyphen")), "Your preferences"),
    "preferences-saved": (_click(_preferences_link, "Save"), "Your preferences"),
    "erased": (_click(_preferences_link, "Erase my data", tick="Erase my address, name and history for good"),
               "Your data is erased"),
    "archive": (_open("/archive/"), "Archive"),
    "error-400": (_open("/u/not-a-token"), "This link does not work"),
    "error-403": (_stale_form, "Sorry"),
    "error-404": (_open("/no/such/page"), "Not found"),
}


def _axe_everywhere(browser: Browser, server: LiveServer, store: Store, name: str) -> dict[str, list[dict]]:
    """axe-core's violations on page ``name`` at each width, light and dark (and its outline and landmarks at
    the first), keyed by where; each view also kept as a screenshot. The page's CSP is bypassed only to
    inject axe."""
    context = browser.new_context(base_url=server.url, bypass_csp=True, viewport={"width": WIDTHS[0], "height": 800})
    context.route("**/*", loopback_only(server))
    found: dict[str, list[dict]] = {}
    try:
        page = context.new_page()
        visit, heading = PAGES[name]
        visit(page, server, store)
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        page.add_script_tag(path=str(AXE))
        found["outline and landmarks"] = page.evaluate(RUN_AXE, {"type": "rule", "values": OUTLINE_RULES + PAGE_RULES})
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 800})
                scroll_width = page.evaluate("document.documentElement.scrollWidth")
                assert scroll_width <= width, f"{name} is {scroll_width} px wide in a {width} px window"
                page.screenshot(path=ARTIFACTS / "pages" / f"{name}-{width}-{scheme}.png", full_page=True)
                found[f"{width} px, {scheme}"] = page.evaluate(RUN_AXE, {"type": "tag", "values": WCAG_TAGS})
    finally:
        context.close()
    return {where: violations for where, violations in found.items() if violations}


@needs_axe
@pytest.mark.parametrize("name", list(PAGES))
def test_no_wcag_a_or_aa_violation_on_any_reader_page(browser: Browser, live_server: LiveServer, live_store: Store,
                                                      name: str) -> None:
    found = _axe_everywhere(browser, live_server, live_store, name)
    assert not found, "\n".join(f"{where}:\n{describe(violations)}" for where, violations in found.items())
