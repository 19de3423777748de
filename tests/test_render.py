"""Rendering: the whole reference edition reaches the reader, and premailer does no damage."""

from __future__ import annotations

import re
import socket
import unicodedata
from pathlib import Path

import pytest
from lxml import html as lxml_html

from pipeline.config import Settings
from pipeline.errors import RenderError
from pipeline.htmltext import visible_text
from pipeline.inline import inline_css
from pipeline.prepare import prepare
from pipeline.render import Edition

from .conftest import SAMPLE, write_draft

SEED = Path(__file__).parent / "data" / "reference-edition.txt"


def _words(text: str) -> str:
    """Letters and digits only, lower-cased: punctuation and layout (dashes, brackets, wrapping) aside."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join("".join(c if c.isalnum() else " " for c in text).split())


@pytest.fixture
def sample(settings: Settings, project: Path) -> Edition:
    return prepare(project / "drafts" / SAMPLE, settings)


def _seed_lines() -> list[str]:
    return [line.strip() for line in SEED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_line_of_the_seed_is_visible_in_the_html(sample: Edition) -> None:
    visible = _words(visible_text(sample.email_html))
    missing = [line for line in _seed_lines() if _words(line) not in visible]
    assert not missing


def test_every_line_of_the_seed_is_in_the_text_part(sample: Edition) -> None:
    text = _words(re.sub(r" \[\d+\]", "", sample.email_txt))  # numbered link references aside
    missing = [line for line in _seed_lines() if _words(line) not in text]
    assert not missing


def test_the_sample_comment_of_four_paragraphs_is_one_callout(sample: Edition) -> None:
    callouts = re.findall(r'<td class="comment-cell".*?</td>', sample.email_html, re.DOTALL)
    whole = [c for c in callouts if "What’s going on with the bilateral trade totals?" in c]
    assert len(whole) == 1
    assert "Russia historically underreports" in whole[0] and "Also notice that Putin" in whole[0]
    text = sample.email_txt
    start = text.index("  | Comments: What’s going on")
    comment = text[start : text.index("\n\n", start)].splitlines()
    assert all(line.startswith("  |") for line in comment)
    assert "  | Also notice that Putin characterized ties as at a “historically high" in comment


def _outline(html: str) -> list[tuple[int, str]]:
    document = lxml_html.document_fromstring(html.encode("utf-8"))
    return [(int(h.tag[1]), " ".join(h.text_content().split()))
            for h in document.iter("h1", "h2", "h3", "h4", "h5", "h6")]


@pytest.mark.parametrize("page", ["email_html", "web_html"])
def test_heading_outline_has_no_gaps_and_source_items_are_headings(sample: Edition, page: str) -> None:
    outline = _outline(getattr(sample, page))
    assert outline[0] == (1, "The Xi – Putin phone call and bilateral trade")
    assert [level for level, _ in outline].count(1) == 1
    assert all(after <= before + 1 for (before, _), (after, _) in zip(outline, outline[1:], strict=False))
    assert (2, "1) Bilateral political ties") in outline
    assert (3, "Telephone conversation with President of China Xi Jinping") in outline
    assert (2, "Navalny reportedly murdered on eve of prisoner exchange") in outline
    assert len([level for level, _ in outline if level == 3]) == 14  # every source item
    assert '<p class="source-meta"' in getattr(sample, page)


def test_preheader_is_hidden_without_low_contrast_text(sample: Edition) -> None:
    """White 1px text (mj-preview's way) is what spam filters score as HTML_FONT_LOW_CONTRAST."""
    body = lxml_html.document_fromstring(sample.email_html.encode("utf-8")).body
    first = next(element for element in body.iter() if (element.text or "").strip())
    assert first.text == sample.preheader  # the first text of the body, for inboxes to show
    style = first.get("style").replace(" ", "")
    assert style == "display:none;max-height:0;overflow:hidden;mso-hide:all"
    assert sample.preheader not in visible_text(sample.email_html)
    assert not re.search(r"(?<![-\w])color:#fff|opacity:0(?![.\d])", sample.email_html.replace(" ", ""), re.I)


def test_chinese_passages_are_intact_utf8_with_lang(sample: Edition) -> None:
    passage = "习近平强调,双方要密切战略协作,捍卫各自国家主权、安全、发展利益,坚决反对外部势力干涉内政。"
    assert passage in sample.email_html and passage in sample.email_txt and passage in sample.web_html
    assert re.search(r'<p lang="zh" class="cjk" style=[^>]*font-family:[^;]*Noto Sans CJK SC', sample.email_html)
    assert sample.email_html.count('lang="zh"') == 3
    assert 'charset=UTF-8' in sample.email_html


def test_general_disclaimer_appears_exactly_once(sample: Edition, settings: Settings) -> None:
    footer = settings.publication.footer
    assert visible_text(sample.email_html).count(footer) == 1
    assert " ".join(sample.email_txt.split()).count(footer) == 1


def test_sample_is_under_gmail_clipping_threshold(sample: Edition, settings: Settings) -> None:
    assert len(sample.email_html.encode("utf-8")) < settings.checks.max_html_bytes == 102_000


def test_premailer_keeps_doctype_important_and_media_queries(sample: Edition) -> None:
    html = sample.email_html
    assert html.lower().startswith("<!doctype html>")
    styles = "".join(re.findall(r"<style[^>]*>(.*?)</style>", html, re.DOTALL))
    assert re.search(r"\.mj-column-per-60\s*\{\s*width:\s*60%\s*!important", styles)
    assert "@media only screen and (min-width: 480px)" in styles or "@media only screen and (min-width:480px)" in styles
    assert "prefers-color-scheme: dark" in styles
    assert re.search(r'<h1 style="[^"]*font-size:30px', html), "CSS was not inlined"


def test_personalisation_placeholders_survive_inlining(sample: Edition) -> None:
    assert 'href="{{ unsubscribe_url }}"' in sample.email_html
    assert 'href="{{ view_url }}"' in sample.email_html
    assert "%7B" not in sample.email_html and "{{%20" not in sample.email_html
    assert "{{ unsubscribe_url }}" in sample.email_txt
    assert "{{" not in sample.web_html, "the web page must not carry per-recipient placeholders"


def test_rendering_never_touches_the_network(project: Path, settings: Settings, monkeypatch) -> None:
    """Even a template with a web font (MJML emits <link> and @import for it) fetches nothing."""
    template = (project / "templates" / "default" / "email.mjml.j2").read_text(encoding="utf-8")
    font = '<mj-font name="Lora" href="https://fonts.googleapis.com/css?family=Lora" />\n    <mj-attributes>'
    (project / "templates" / "default" / "email.mjml.j2").write_text(
        template.replace("<mj-attributes>", font, 1).replace("font-family=\"Georgia", "font-family=\"Lora, Georgia"),
        encoding="utf-8")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    edition = prepare(project / "drafts" / SAMPLE, settings)
    assert '<link href="https://fonts.googleapis.com/css?family=Lora"' in edition.email_html
    assert "@import url(https://fonts.googleapis.com/css?family=Lora)" in edition.email_html


def test_web_page_has_no_unsubscribe_placeholder_but_a_subscribe_link(sample: Edition) -> None:
    assert "Unsubscribe" not in visible_text(sample.web_html)
    assert 'href="https://report.example.org"' in sample.web_html


def test_web_page_is_a_page_with_a_main_landmark_title_and_description(sample: Edition, settings: Settings) -> None:
    page = lxml_html.document_fromstring(sample.web_html.encode("utf-8"))
    assert page.findtext(".//title") == f"{sample.subject} – {settings.publication.name}"
    assert page.xpath("//meta[@name='description']/@content") == [sample.preheader]
    assert sample.preheader not in visible_text(sample.web_html)
    (main,) = page.body.findall("main")
    assert main.find(".//h1").text_content() == sample.subject
    assert "aria-roledescription" not in sample.web_html and not page.xpath("//*[@role='article']")
    (footer,) = page.body.findall("footer")
    assert footer.getprevious() is main and footer.find(".//*[@data-part='footer']") is not None
    assert sample.web_html.lower().startswith("<!doctype html>") and "charset=UTF-8" in sample.web_html


def test_the_email_keeps_its_article_wrapper(sample: Edition) -> None:
    email = lxml_html.document_fromstring(sample.email_html.encode("utf-8"))
    assert not email.xpath("//main") and not email.xpath("//meta[@name='description']")
    (wrapper,) = email.xpath("//*[@aria-roledescription='email']")
    assert wrapper.get("role") == "article" and wrapper.get("aria-label") == sample.subject
    assert email.findtext(".//title") == sample.subject


def test_body_personalisation_name_is_kept_for_send_time(project: Path, settings: Settings) -> None:
    folder = write_draft(project, "2024-03-01-hello", "subject: Hi", "Dear {{ name }}, [read](https://www.ft.com/).\n")
    edition = prepare(folder, settings)
    assert "Dear {{ name }}," in edition.email_html and "Dear {{ name }}," in edition.email_txt
    assert "Dear reader," in edition.web_html


def test_build_is_deterministic(settings: Settings, project: Path) -> None:
    first = prepare(project / "drafts" / SAMPLE, settings)
    second = prepare(project / "drafts" / SAMPLE, settings)
    assert first.content_hash == second.content_hash


def test_inlining_refuses_html_the_parser_would_cut_short() -> None:
    """libxml2 drops everything after an element nested 256 deep: an error, not a shorter email."""
    deep = "<html><body>" + "<b>" * 300 + "x" + "</b>" * 300 + "<p>Unsubscribe</p></body></html>"
    with pytest.raises(RenderError, match="nests elements too deep"):
        inline_css(deep)
