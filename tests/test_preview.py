"""The built email as headless Chromium lays it out, and ``newsletter preview`` end to end.

Everything runs in Debian's system Chromium (/usr/bin/chromium) through Playwright, with no mocks:
one browser and one build of the sample draft per module. Every page blocks all requests that are
not file:, data: or about:, so no test touches the network.
"""

from __future__ import annotations

import os
import struct
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_settings
from pipeline.prepare import prepare_and_write
from pipeline.preview import browser_session, local_only

from .conftest import ROOT, SAMPLE, chromium_available

pytestmark = [
    pytest.mark.browser,
    # Skipped only on a developer's machine without Chromium; in CI a missing browser fails loudly.
    pytest.mark.skipif(not chromium_available() and not os.environ.get("CI"),
                       reason="needs Debian's chromium at /usr/bin/chromium (make system)"),
]

SETTINGS = tomllib.loads((ROOT / "newsletter.toml").read_text(encoding="utf-8"))
FRONT = yaml.safe_load((ROOT / "drafts" / SAMPLE / "draft.md").read_text(encoding="utf-8").split("---")[1])


@pytest.fixture(scope="module")
def email_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample draft built once, into a folder of its own."""
    out = tmp_path_factory.mktemp("preview") / SAMPLE
    build = prepare_and_write(ROOT / "drafts" / SAMPLE, load_settings(ROOT / "newsletter.toml"), out)
    return build.folder / "email.html"


@pytest.fixture(scope="module")
def browser():
    with browser_session() as chromium:
        yield chromium


@pytest.fixture
def open_email(browser, email_html: Path):
    """Open the email at a viewport width, offline; every page opened is closed after the test."""
    pages = []

    def open_at(width: int, color_scheme: str = "light"):
        page = browser.new_page(viewport={"width": width, "height": 800}, device_scale_factor=1,
                                color_scheme=color_scheme)
        pages.append(page)
        page.route("**/*", local_only)
        page.goto(email_html.as_uri(), wait_until="load")
        return page

    yield open_at
    for page in pages:
        page.close()


def box(page, selector: str) -> dict[str, float]:
    found = page.locator(selector)
    assert found.count() == 1, selector
    result = found.bounding_box()
    assert result is not None and result["width"] > 0 and result["height"] > 0, selector
    return result


@pytest.mark.parametrize("width", [375, 320])
def test_narrow_screens_do_not_scroll_sideways(open_email, width: int) -> None:
    page = open_email(width)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_masthead_columns_sit_side_by_side_on_desktop(open_email) -> None:
    page = open_email(640)
    name, date = box(page, ".masthead-name"), box(page, ".masthead-date")
    assert name["y"] < date["y"] + date["height"] and date["y"] < name["y"] + name["height"]
    assert date["x"] >= name["x"] + name["width"]


def test_masthead_columns_stack_on_mobile(open_email) -> None:
    page = open_email(375)
    name, date = box(page, ".masthead-name"), box(page, ".masthead-date")
    assert date["y"] >= name["y"] + name["height"]


def test_every_contents_link_has_a_target(open_email) -> None:
    page = open_email(640)
    targets = page.eval_on_selector_all(
        '[data-part="toc"] a[href^="#"]',
        "els => els.map(a => a.getAttribute('href').slice(1)).map(id => [id, document.getElementById(id) !== null])",
    )
    assert len(targets) == 5
    assert [anchor for anchor, found in targets if not found] == []
    assert page.locator("h2[id]").count() == 5


def test_visible_text_has_chinese_address_and_disclaimer_but_not_preheader(open_email) -> None:
    page = open_email(640)
    text = page.evaluate("document.body.innerText")
    assert "习近平强调" in text
    assert SETTINGS["publication"]["postal_address"] in text
    assert SETTINGS["publication"]["footer"] in " ".join(text.split())
    preheader = FRONT["preheader"]
    assert preheader in page.evaluate("document.body.textContent")  # in the document, for inboxes to show
    assert preheader not in text  # but hidden from the reader


def test_chinese_paragraphs_ask_for_and_get_a_cjk_font(open_email) -> None:
    page = open_email(640)
    families = page.eval_on_selector_all('p[lang="zh"]', "ps => ps.map(p => getComputedStyle(p).fontFamily)")
    assert families, "no paragraph with lang=zh"
    assert all("Noto Sans CJK" in family or "PingFang" in family for family in families)
    # And Chromium really draws the glyphs with an installed CJK font (fonts-noto-cjk), not a fallback box.
    used = used_fonts(page, 'p[lang="zh"]')
    assert any("CJK" in name for name in used), used


def used_fonts(page, selector: str) -> list[str]:
    """The fonts Chromium really drew the first element matching ``selector`` with."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = [font["familyName"] for font in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]]
    cdp.detach()
    return fonts


def test_english_is_drawn_in_a_latin_serif_not_a_cjk_font(open_email) -> None:
    """A CJK font draws quotes and apostrophes full-width ("It’ s"): English must never get one."""
    page = open_email(640)
    families = page.eval_on_selector_all('[data-part="lede"] p, h1, h3',
                                         "els => els.map(e => getComputedStyle(e).fontFamily)")
    assert families and not [family for family in families if "CJK" in family or "Songti" in family]
    for selector in ('[data-part="lede"] p', "h1", "h3.source a"):
        used = used_fonts(page, selector)
        assert used and not [name for name in used if "CJK" in name], (selector, used)
        # fonts-liberation (make system): Liberation Serif stands in for Times New Roman.
        assert set(used) <= {"Georgia", "Times New Roman", "Liberation Serif"}, (selector, used)


# The colour an element shows on: its own background or the first opaque one of its ancestors.
SHOWN_ON = """el => { for (let e = el; e; e = e.parentElement) {
    const c = getComputedStyle(e).backgroundColor; if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c; }
  return 'rgb(255, 255, 255)'; }"""


def luminance(css: str) -> float:
    """WCAG 2 relative luminance of a computed ``rgb(...)`` colour."""
    red, green, blue = (int(part) / 255 for part in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    lighter, darker = sorted((luminance(one), luminance(other)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_dark_mode_darkens_the_view_in_browser_strip(open_email) -> None:
    page = open_email(640, "dark")
    page_background = page.evaluate(f"({SHOWN_ON})(document.querySelector('.dark-page'))")
    link = page.locator(".topline a")
    strip_background = link.evaluate(SHOWN_ON)
    assert luminance(page_background) < 0.02
    assert strip_background == page_background, "the strip stays light in dark mode"
    assert contrast(link.evaluate("a => getComputedStyle(a).color"), strip_background) >= 4.5


@pytest.mark.parametrize("color_scheme", ["light", "dark"])
def test_section_rules_stand_out_against_their_background(open_email, color_scheme: str) -> None:
    page = open_email(640, color_scheme)
    titles = page.locator("h2.section-title")
    assert titles.count() == 5
    for index in range(titles.count()):
        title = titles.nth(index)
        width, rule = title.evaluate("h => [getComputedStyle(h).borderTopWidth, getComputedStyle(h).borderTopColor]")
        background = title.evaluate(SHOWN_ON)
        assert float(width.removesuffix("px")) >= 1
        assert contrast(rule, background) >= 3, (rule, background)
        assert contrast(title.evaluate("h => getComputedStyle(h).color"), background) >= 4.5


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_preview_command_writes_desktop_and_mobile_screenshots(project: Path, run_cli) -> None:
    # Its own sync_playwright cannot nest in this thread's (the module's browser may be running): use another.
    with ThreadPoolExecutor(max_workers=1) as pool:
        code, out, err = pool.submit(run_cli, "preview", SAMPLE).result()
    assert (code, err) == (0, "")
    folder = project / "build" / SAMPLE
    for name, width in (("desktop.png", 640), ("mobile.png", 375)):
        path = folder / name
        assert path.is_file()
        shot_width, height = png_size(path)
        assert shot_width == width and height > 800  # full page, at device scale factor 1
        assert str(path) in out
    assert "overflows" not in out
    # A rebuild of the same email (the scheduler's when the send fires) keeps them.
    taken = {name: (folder / name).read_bytes() for name in ("desktop.png", "mobile.png")}
    assert run_cli("build", SAMPLE)[0] == 0
    assert {name: (folder / name).read_bytes() for name in taken} == taken
