"""axe-core in headless Chromium: the sample's email.html and web.html meet WCAG 2.1 A and AA.

axe-core comes from npm, pinned in tools/package-lock.json and installed by `make setup`
(`npm ci --prefix tools`); Chromium is Debian's. Each page is checked at 640 px and 375 px, in
light and in dark mode (prefers-color-scheme emulated), offline: only file: and data: load.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.prepare import prepare_and_write
from pipeline.preview import browser_session, local_only

from .conftest import ROOT, SAMPLE, chromium_available

AXE = ROOT / "tools" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# Best practices beyond the tags that screen-reader users lean on: headings to jump between, and
# (for the web page) landmarks. An email's own wrapper is an article, so its landmarks are not asked.
OUTLINE_RULES = ["heading-order", "page-has-heading-one", "empty-heading"]
PAGE_RULES = ["landmark-one-main", "region", "landmark-unique", "landmark-no-duplicate-contentinfo"]

pytestmark = [
    pytest.mark.browser,
    # Skipped only on a developer's machine without them; in CI (make setup installs both) a miss fails loudly.
    pytest.mark.skipif((not chromium_available() or not AXE.is_file()) and not os.environ.get("CI"),
                       reason="needs Debian's chromium and tools/node_modules/axe-core (make setup)"),
]

RUN_AXE = """async (runOnly) => {
  const result = await axe.run(document, {runOnly, resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
}"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("accessibility") / SAMPLE
    return prepare_and_write(ROOT / "drafts" / SAMPLE, load_settings(ROOT / "newsletter.toml"), out).folder


@pytest.fixture(scope="module")
def browser():
    with browser_session() as chromium:
        yield chromium


def violations(browser, page_file: Path, width: int, color_scheme: str, run_only: dict) -> list[dict]:
    context = browser.new_context(viewport={"width": width, "height": 800}, color_scheme=color_scheme)
    try:
        page = context.new_page()
        page.route("**/*", local_only)
        page.goto(page_file.as_uri(), wait_until="load")
        page.add_script_tag(path=str(AXE))
        return page.evaluate(RUN_AXE, run_only)
    finally:
        context.close()


def describe(found: list[dict]) -> str:
    return "\n".join(f"{v['id']} ({v['impact']}): {v['help']}\n    " + "\n    ".join(v["nodes"]) for v in found)


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [640, 375])
@pytest.mark.parametrize("name", ["email.html", "web.html"])
def test_no_wcag_a_or_aa_violation(browser, built: Path, name: str, width: int, color_scheme: str) -> None:
    found = violations(browser, built / name, width, color_scheme, {"type": "tag", "values": WCAG_TAGS})
    assert not found, describe(found)


@pytest.mark.parametrize("name", ["email.html", "web.html"])
def test_headings_and_landmarks_let_a_screen_reader_user_move_around(browser, built: Path, name: str) -> None:
    rules = OUTLINE_RULES + (PAGE_RULES if name == "web.html" else [])
    found = violations(browser, built / name, 640, "light", {"type": "rule", "values": rules})
    assert not found, describe(found)
