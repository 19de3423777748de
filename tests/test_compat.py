"""The client-support check: caniemail data, what the MJML source uses, and where it comes from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.checks.compat import (
    Catalogue,
    Feature,
    catalogue,
    check_compat,
    declaration_uses,
    latest_support,
    read_mjml,
    stylesheet_uses,
)
from pipeline.config import Settings, load_settings
from pipeline.errors import ConfigError
from pipeline.prepare import prepare
from pipeline.render import Edition

from .conftest import ROOT, SAMPLE, write_draft

PACKAGED_DATA = ROOT / "pipeline" / "data" / "caniemail"
# What the default template itself uses that a default client lacks, whatever the draft says.
TEMPLATE_BASELINE = {
    "css-at-media",  # its dark-mode and small-screen rules
    "css-at-media-prefers-color-scheme",
    "css-color-scheme",  # :root { color-scheme: light dark }
    "css-height",  # img { height: auto }
    "html-meta-color-scheme",
}
# The hidden preheader's div, in editions that have one (the sample does).
PREHEADER = {"css-display-none", "css-max-height", "css-overflow"}
ORDINARY = """
    The first paragraph, with *emphasis*, **strong words** and [a link](https://example.org/a).

    A second paragraph that goes on for a while, as paragraphs do, with another
    [link](https://example.org/b "titled") in it.

    The last one.
    """


def _edition(project: Path, settings: Settings, body: str, name: str = "2024-03-01-compat") -> Edition:
    folder = write_draft(project, name, "subject: Compatibility", body)
    return prepare(folder, settings)


def _features(problems: list) -> set[str]:
    return {_feature_of(problem.message) for problem in problems}


def _feature_of(message: str) -> str:
    """The feature id of a warning, found back through its title."""
    for key, feature in catalogue().features.items():
        if message.startswith(feature.name + " ") and " is not supported by " in message:
            return key
    raise AssertionError(f"no feature for {message!r}")


def _edit_template(project: Path, old: str, new: str) -> None:
    template = project / "templates" / "default" / "email.mjml.j2"
    text = template.read_text(encoding="utf-8")
    assert old in text
    template.write_text(text.replace(old, new, 1), encoding="utf-8")


# ---------------------------------------------------------------- the data


def test_packaged_data_carries_its_source_and_licence() -> None:
    data = json.loads((PACKAGED_DATA / "features.json").read_text(encoding="utf-8"))
    assert data["source"].startswith("hteumeuleu/caniemail at commit 6b086a34")
    assert len(data["features"]) == 307
    assert "MIT" in (PACKAGED_DATA / "LICENSE").read_text(encoding="utf-8")


def test_latest_support_takes_the_last_version_listed_not_the_largest() -> None:
    stats = {
        "outlook": {
            "windows": {"2007": "y", "2019": "n", "2013": "y"},  # sorted, 2019 would win
            "macos": {"2019-10": "n", "16.80": "a #1"},  # sorted, "2019-10" would win
            "ios": {},
        },
        "gmail": {"android": {"2020-04": "n #2 #3", "2022-02": "y #1"}},
    }
    assert latest_support(stats) == {"outlook": {"windows": "y", "macos": "a"}, "gmail": {"android": "y"}}


def test_gaps_name_the_families_and_platforms_that_lack_a_feature() -> None:
    feature = Feature(key="css-thing", title="thing", category="css", support={
        "outlook": {"windows": "n", "windows-mail": "n", "macos": "a", "ios": "y"},
        "yahoo": {"desktop-webmail": "a"},  # partial support is not reported
        "gmail": {"android": "u"},
    })
    known = Catalogue(features={"css-thing": feature}, families={"outlook": "Outlook", "yahoo": "Yahoo! Mail"},
                      platforms={"windows": "Windows", "windows-mail": "Windows Mail"})
    assert known.gaps(feature, ["gmail", "apple-mail", "outlook", "yahoo"]) == ["Outlook (Windows, Windows Mail)"]
    assert feature.name == "CSS thing"


def test_catalogue_is_read_once_from_the_package() -> None:
    known = catalogue()
    assert known is catalogue()
    assert len(known.features) == 307
    flex = known.features["css-display-flex"]
    assert known.unsupported(flex, "outlook") == ("Windows", "Windows Mail")
    assert known.unsupported(flex, "apple-mail") == ()
    assert known.families["yahoo"] == "Yahoo! Mail"


# ---------------------------------------------------------------- reading CSS and HTML


def test_stylesheet_features_come_from_the_parsed_css() -> None:
    css = """
    /* a note */
    .a > .b + .c ~ .d, [data-x] *, #top .a.b:hover::before { display: flex; width: calc(100% - 2rem);
      background: linear-gradient(#fff, rgba(0, 0, 0, .5)) !important; margin-inline-start: 1em;
      border-top-left-radius: 4px; border-left-color: red; --gap: 2vw; font-family: system-ui; }
    td:nth-child(2n+1):not(.x) { padding-block: 0; color: initial; }
    @media (prefers-color-scheme: dark), (hover: hover) { .a { display: none } }
    @supports (display: grid) { .a { display: grid } }
    @font-face { font-family: X; src: url(x.woff2) }
    """
    found = {feature for feature, _ in stylesheet_uses(css)}
    assert found >= {
        "css-comments", "css-selector-child", "css-selector-adjacent-sibling", "css-selector-general-sibling",
        "css-selector-grouping", "css-selector-attribute", "css-selector-universal", "css-selector-id",
        "css-selector-chaining", "css-pseudo-class-hover", "css-pseudo-element-before", "css-display-flex",
        "css-unit-calc", "css-unit-rem", "css-unit-percent", "css-linear-gradient", "css-rgba", "css-important",
        "css-margin-inline-start-end", "css-border-radius", "css-border", "css-variables", "css-unit-vw",
        "css-sytem-ui", "css-pseudo-class-nth-child", "css-pseudo-class-not", "css-padding-inline-block",
        "css-unit-initial", "css-at-media", "css-at-media-prefers-color-scheme", "css-at-media-hover",
        "css-display-none", "css-at-supports", "css-at-font-face",
    }
    for unchained in (".a .b > p { color: red }", "a:not(.b) { color: red }", "li:has(p.x) { color: red }"):
        assert "css-selector-chaining" not in {feature for feature, _ in stylesheet_uses(unchained)}, unchained


def test_style_attributes_and_html_elements_are_read_inside_content_elements_only() -> None:
    mjml = """<mjml><mj-head><mj-attributes><mj-all font-family="x" border-radius="9px" /></mj-attributes>
      <mj-raw><meta name="color-scheme" content="light dark"><!--[if mso]><video></video><![endif]--></mj-raw>
      </mj-head><mj-body><mj-section background-url="https://example.org/a.png"><mj-column>
      <mj-button border-radius="4px" href="https://example.org">Go <span style="display:flex">now</span></mj-button>
      <mj-text><h4 lang="fr" dir="ltr" role="note">T</h4>
      <ul><li><a href="#x">x</a> <a href="mailto:a@b.c">m</a></li></ul>
      <img src="https://example.org/a.webp" srcset="a.webp 2x" loading="lazy"><svg></svg><time>t</time></mj-text>
      <mj-table><tr><td style="border-radius: 3px" valign="top">x</td></tr></mj-table>
      </mj-column></mj-section></mj-body></mjml>"""
    uses = read_mjml(mjml)
    found = {use.feature for use in uses}
    assert found >= {
        "html-meta-color-scheme", "css-display-flex", "html-h1-h6", "html-lang", "html-dir", "html-role",
        "html-lists", "html-anchor-links", "html-mailto-links", "image-webp", "html-srcset",
        "html-loading-attribute", "html-svg", "html-semantics", "css-border-radius", "html-valign",
    }
    assert "html-video" not in found  # inside a conditional comment, for Outlook only
    assert {use.part for use in uses if use.feature == "css-border-radius"} == {"mj-table"}  # not mj-button's own
    assert {use.part for use in uses if use.feature == "css-display-flex"} == {"mj-button"}
    assert [feature for feature, _ in declaration_uses("border-radius: 4px !important")] == [
        "css-border-radius", "css-important", "css-unit-px"]


# ---------------------------------------------------------------- editions


def test_the_default_template_baseline(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "Hello.\n")
    problems = check_compat(edition, settings.checks.clients)
    assert _features(problems) == TEMPLATE_BASELINE
    assert all(problem.check == "compat" and problem.severity == "warning" for problem in problems)
    assert all(problem.location.startswith("default template (") for problem in problems)
    assert [problem.message for problem in problems] == sorted(
        (problem.message for problem in problems), key=lambda message: _feature_of(message))


def test_ordinary_paragraphs_add_no_warning_to_the_template_baseline(project: Path, settings: Settings) -> None:
    baseline = check_compat(_edition(project, settings, "Hello.\n", "2024-03-01-baseline"), settings.checks.clients)
    problems = check_compat(_edition(project, settings, ORDINARY), settings.checks.clients)
    assert _features(problems) <= _features(baseline)
    assert not [problem for problem in problems if "draft.md" in problem.location]


def test_the_sample_edition(project: Path, settings: Settings) -> None:
    edition = prepare(project / "drafts" / SAMPLE, settings)
    # The sample's settings ignore what the template does on purpose: nothing is left to report.
    assert check_compat(edition, settings.checks.clients, settings.checks.compat_ignore) == []
    problems = check_compat(edition, settings.checks.clients)
    # The contents (local anchors) and the comment callouts (a role=presentation table) come on top.
    assert _features(problems) == TEMPLATE_BASELINE | PREHEADER | {"html-anchor-links", "html-role"}
    role = next(problem for problem in problems if "role attribute" in problem.message)
    assert role.message == "HTML role attribute (<table role>) is not supported by Outlook (Windows Mail)"
    assert role.location == "default template (mj-text)"


def test_a_template_edit_is_reported_naming_the_feature_and_outlook(project: Path, settings: Settings) -> None:
    _edit_template(project, ".comment { width: 100%;", ".comment { display: flex; border-radius: 6px; width: 100%;")
    problems = check_compat(_edition(project, settings, "Hello.\n"), settings.checks.clients)
    flex = next(problem for problem in problems if problem.message.startswith("CSS display:flex "))
    assert "Outlook (Windows, Windows Mail)" in flex.message
    assert flex.location == "default template (mj-style)"
    radius = next(problem for problem in problems if problem.message.startswith("CSS border-radius "))
    assert radius.message == "CSS border-radius is not supported by Outlook (Windows, Windows Mail)"


def test_compat_ignore_silences_a_feature(project: Path) -> None:
    _edit_template(project, ".comment { width: 100%;", ".comment { display: flex; border-radius: 6px; width: 100%;")
    toml = project / "newsletter.toml"
    text = re.sub(r"compat_ignore = \[.*?\]", 'compat_ignore = ["css-border-radius", "css-at-media"]',
                  toml.read_text(encoding="utf-8"), flags=re.DOTALL)
    toml.write_text(text, encoding="utf-8")
    settings = load_settings(toml)
    edition = _edition(project, settings, "Hello.\n")
    assert {"css-border-radius", "css-at-media"} <= _features(check_compat(edition, settings.checks.clients))
    found = _features(check_compat(edition, settings.checks.clients, settings.checks.compat_ignore))
    assert "css-display-flex" in found
    assert not found & {"css-border-radius", "css-at-media"}


def test_what_mjml_emits_is_not_read(project: Path, settings: Settings) -> None:
    # Without the template's own CSS (its style sheets, the preheader's style), nothing of the compiled email's
    # CSS is reported ...
    template = project / "templates" / "default" / "email.mjml.j2"
    text = template.read_text(encoding="utf-8")
    own_css = r"<mj-style>.*?</mj-style>|<mj-raw><div class=\"preheader\".*?</mj-raw>"
    template.write_text(re.sub(own_css, "", text, flags=re.DOTALL), encoding="utf-8")
    edition = prepare(project / "drafts" / SAMPLE, settings)
    problems = check_compat(edition, settings.checks.clients)
    assert not [problem for problem in problems if problem.message.startswith("CSS")]
    # ... although MJML's output has media queries, mso- properties, column classes and conditional comments,
    for mjml_own in ("@media", "mso-", "mj-column-per-", "<!--[if mso"):
        assert mjml_own in edition.email_html
        assert mjml_own not in edition.mjml
    # which the same reader would have reported, had the check read the compiled HTML.
    compiled_css = "".join(re.findall(r"<style[^>]*>(.*?)</style>", edition.email_html, flags=re.DOTALL))
    assert "css-at-media" in {feature for feature, _ in stylesheet_uses(compiled_css)}


def test_what_the_draft_adds_is_located_in_draft_md(project: Path, settings: Settings) -> None:
    body = """
        A first paragraph.

        See [the note below](#note) for more.

        ![A chart](https://example.org/chart.webp)
        """
    edition = _edition(project, settings, body)
    problems = {_feature_of(problem.message): problem for problem in check_compat(edition, settings.checks.clients)}
    assert set(problems) == TEMPLATE_BASELINE | {"html-anchor-links", "image-webp"}
    # The body starts on line 4, after three lines of front matter.
    assert problems["html-anchor-links"].location == "draft.md:6"
    assert problems["image-webp"].location == "draft.md:8"
    assert problems["image-webp"].message == "webP image format (.webp image) is not supported by Outlook (Windows)"


def test_a_feature_of_both_template_and_draft_names_both(project: Path, settings: Settings) -> None:
    body = """
        Intro, see [below](#2-two).

        ## One

        Text.

        ## Two

        More.
        """
    edition = _edition(project, settings, body)
    anchors = next(problem for problem in check_compat(edition, settings.checks.clients)
                   if problem.message.startswith("HTML Local anchors"))
    assert anchors.location == "default template (mj-text), draft.md:4"


def test_unknown_clients_and_feature_ids_are_config_errors(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "Hello.\n")
    with pytest.raises(ConfigError, match="checks.clients: unknown mail client 'gmial'"):
        check_compat(edition, ["gmial"])
    with pytest.raises(ConfigError, match="checks.compat_ignore: 'css-flex' is not a caniemail feature id"):
        check_compat(edition, ["gmail"], ignore=["css-flex"])


def test_only_the_named_clients_are_considered(project: Path, settings: Settings) -> None:
    _edit_template(project, ".comment { width: 100%;", ".comment { display: flex; width: 100%;")
    edition = _edition(project, settings, "Hello.\n")
    assert "css-display-flex" not in _features(check_compat(edition, ["apple-mail", "gmail"]))
    assert "css-display-flex" in _features(check_compat(edition, ["outlook"]))
