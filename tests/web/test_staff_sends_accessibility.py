"""axe-core in headless Chromium over the console's send pages: WCAG 2.1 A and AA at 640 and 375 px, light and dark.

The pages are fetched in-process (a send with failures, uncertain and suppressed rows, as an editor: every
action and form shown), written beside a copy of the site's stylesheet and opened from file:, as
``tests/test_accessibility.py`` opens the email.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_accessibility import AXE, WCAG_TAGS, browser, describe, violations  # noqa: F401
from tests.test_accessibility import pytestmark as browser_marks
from tests.web.test_staff_auth import sign_in
from tests.web.test_staff_sends import mixed, staff  # noqa: F401

pytestmark = browser_marks


@pytest.fixture
def pages(client, mixed, tmp_path: Path) -> dict[str, Path]:  # noqa: F811
    sign_in(client, "ed")
    shutil.copy(ROOT / "templates" / "web" / "static" / "site.css", tmp_path / "site.css")
    found = {}
    for name, path in (("list", "/staff/sends"), ("send", f"/staff/sends/{mixed}"),
                       ("failed", f"/staff/sends/{mixed}?status=failed"), ("confirm", f"/staff/sends/{mixed}/retry")):
        answer = client.get(path)
        assert answer.status_code == 200
        html = answer.text.replace('href="/static/site.css"', 'href="site.css"')
        html = html.replace(f'src="/staff/sends/{mixed}/preview"', 'src="about:blank"')
        (tmp_path / f"{name}.html").write_text(html, encoding="utf-8")
        found[name] = tmp_path / f"{name}.html"
    return found


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [640, 375])
def test_the_send_pages_have_no_wcag_a_or_aa_violation(browser, pages, width: int,  # noqa: F811
                                                       color_scheme: str) -> None:
    for name, page in pages.items():
        found = violations(browser, page, width, color_scheme, {"type": "tag", "values": WCAG_TAGS})
        assert not found, f"{name}: {describe(found)}"
