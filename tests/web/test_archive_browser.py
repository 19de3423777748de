"""The archive in real headless Chromium: a reader finds the sent edition in the list and opens it.

Chromium asks for https://report.example.org/...; every such request is answered in-process by the app
(through the TestClient), and anything else is refused, so the test needs no port and no network. The
list page is checked by axe-core (WCAG 2.1 A and AA, landmarks) at a phone's width, light and dark.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.preview import browser_session
from pipeline.store import Store

from ..test_accessibility import AXE, PAGE_RULES, RUN_AXE, WCAG_TAGS, describe
from ..test_accessibility import pytestmark as browser_marks
from .test_archive import _sent, audience  # noqa: F401  (a fixture)

# Chromium is started in each test, after its sends ran: Playwright's sync API holds an event loop, and a
# send is asyncio.run.
pytestmark = [*browser_marks, pytest.mark.usefixtures("audience")]
SITE = "https://report.example.org"


def _open(browser, client, *, color_scheme: str = "light", bypass_csp: bool = False):
    """A phone-sized page whose requests to the site are answered by the app, and nothing else."""

    def answer(route) -> None:
        url = route.request.url
        if not url.startswith(SITE + "/"):
            route.abort()
            return
        response = client.get(url.removeprefix(SITE), follow_redirects=False)
        route.fulfill(status=response.status_code, headers=dict(response.headers), body=response.content)

    context = browser.new_context(viewport={"width": 375, "height": 800}, color_scheme=color_scheme,
                                  bypass_csp=bypass_csp)
    page = context.new_page()
    page.route("**/*", answer)
    return context, page


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_the_list_meets_wcag_on_a_phone(project: Path, settings: Settings, store: Store, client,
                                        color_scheme: str) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    with browser_session() as browser:
        _check_list(browser, client, color_scheme)


def _check_list(browser, client, color_scheme: str) -> None:
    # The page's CSP refuses every script, axe-core's too: that context alone sets it aside.
    context, page = _open(browser, client, color_scheme=color_scheme, bypass_csp=True)
    try:
        page.goto(f"{SITE}/archive/", wait_until="load")
        page.add_script_tag(path=str(AXE))
        found = page.evaluate(RUN_AXE, {"type": "tag", "values": WCAG_TAGS})
        found += page.evaluate(RUN_AXE, {"type": "rule", "values": PAGE_RULES})
        assert not found, describe(found)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    finally:
        context.close()


def test_a_reader_opens_a_sent_edition_from_the_archive(project: Path, settings: Settings, store: Store, client,
                                                        tmp_path: Path) -> None:
    _sent(project, settings, store, "2024-03-01-first", "The first one")
    _sent(project, settings, store, "2024-03-08-second", "The second one")
    with browser_session() as browser:
        _read_an_edition(browser, client, tmp_path)
    assert (tmp_path / "archive.png").stat().st_size > 0 and (tmp_path / "edition.png").stat().st_size > 0


def _read_an_edition(browser, client, tmp_path: Path) -> None:
    context, page = _open(browser, client)
    try:
        page.goto(f"{SITE}/archive/", wait_until="load")
        assert page.locator(".editions a").all_inner_texts() == ["The second one", "The first one"]
        page.screenshot(path=str(tmp_path / "archive.png"), full_page=True)
        page.get_by_role("link", name="The first one").click()
        page.wait_for_url(f"{SITE}/archive/2024-03-01-first/")
        assert page.get_by_role("heading", level=1).inner_text() == "The first one"
        page.screenshot(path=str(tmp_path / "edition.png"), full_page=True)
    finally:
        context.close()
