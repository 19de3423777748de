"""The body conventions: sections, contents, source items, quotes, comments, languages, sign-off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import html as lxml_html

from pipeline.config import Settings
from pipeline.content import cjk_language, markdown, parse_body
from pipeline.draft import read_draft
from pipeline.errors import DraftError
from pipeline.htmltext import visible_text
from pipeline.prepare import prepare

from .conftest import write_draft

FRONT = "subject: Conventions\ndate: 2024-03-01"


def _body(project: Path, body: str):
    return parse_body(read_draft(write_draft(project, "2024-03-01-c", FRONT, body)))


def _edition(project: Path, settings: Settings, body: str):
    return prepare(write_draft(project, "2024-03-01-c", FRONT, body), settings)


def test_sections_are_numbered_with_unique_anchors(project: Path) -> None:
    body = _body(project, "Lede.\n\n## Trade\n\nA.\n\n## Trade\n\nB.\n\n## Energy & power\n\nC.\n")
    assert [(s.number, s.title, s.anchor) for s in body.sections] == [
        (1, "Trade", "1-trade"), (2, "Trade", "2-trade"), (3, "Energy & power", "3-energy-power")]
    assert body.has_toc and body.toc_after == 1


def test_toc_marker_places_the_table_of_contents(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "First.\n\n[TOC]\n\nSecond.\n\n## One\n\nx\n\n## Two\n\ny\n")
    text = visible_text(edition.email_html)
    assert text.index("First.") < text.index("Table of contents") < text.index("Second.") < text.rindex("1) One")
    assert '<a href="#1-one"' in edition.email_html and 'id="1-one"' in edition.email_html


def test_a_single_section_has_no_table_of_contents(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "Lede.\n\n## Only\n\nText.\n")
    assert "Table of contents" not in visible_text(edition.email_html)


def test_toc_marker_inside_a_section_is_an_error(project: Path) -> None:
    with pytest.raises(DraftError, match=r"draft.md:9: \[TOC\] must come before"):
        _body(project, "Lede.\n\n## One\n\n[TOC]\n")


@pytest.mark.parametrize(
    ("heading", "outlet", "date"),
    [
        ("### [Putin, Xi talk](https://tass.com/) – TASS [February 8th]", "TASS", "February 8th"),
        ("### [Putin, Xi talk](https://tass.com/) —TASS [February 8th]", "TASS", "February 8th"),
        ("### [Putin, Xi talk](https://tass.com/) - People’s Daily", "People’s Daily", ""),
        ("### [Putin, Xi talk](https://tass.com/)", "", ""),
    ],
)
def test_source_items(project: Path, heading: str, outlet: str, date: str) -> None:
    body = _body(project, f"## S\n\n{heading}\n\n> Quote.\n")
    block = body.sections[0].blocks[0]
    assert block.kind == "source"
    assert (block.source.url, block.source.outlet, block.source.date) == ("https://tass.com/", outlet, date)


def test_plain_subheading_is_not_a_source(project: Path) -> None:
    body = _body(project, "### Navalny reportedly murdered\n\nText.\n")
    assert body.lede[0].kind == "heading"


def test_headings_follow_the_outline_whatever_level_was_typed(project: Path, settings: Settings) -> None:
    body = ("#### Lede story\n\nx\n\n## One\n\n#### Deep\n\n### [Item](https://www.ft.com/) – FT\n\n"
            "# Loud\n\n[SIGNOFF]\n\n### Closing\n")
    edition = _edition(project, settings, body)
    document = lxml_html.document_fromstring(edition.email_html)
    assert [(h.tag, h.text_content().strip()) for h in document.iter("h1", "h2", "h3", "h4", "h5", "h6")] == [
        ("h1", "Conventions"), ("h2", "Lede story"), ("h2", "1) One"), ("h3", "Deep"), ("h3", "Item"),
        ("h2", "Loud"), ("h2", "Closing")]


@pytest.mark.parametrize("paragraph", ["Comment: a.", "**Comment:** a.", "Comments: a.", "*Comments:* a.",
                                       "**Comment**: a."])
def test_comment_paragraphs(project: Path, paragraph: str) -> None:
    assert _body(project, f"{paragraph}\n").lede[0].kind == "comment"


def test_comment_is_a_callout_distinct_from_quotes(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "> Quoted.\n\n**Comment:** Mine.\n")
    assert '<td class="comment-cell"' in edition.email_html
    assert "<blockquote" in edition.email_html
    assert "  | Comment: Mine." in edition.email_txt and "> Quoted." in edition.email_txt


def test_a_comment_of_several_paragraphs_is_one_callout(project: Path, settings: Settings) -> None:
    body = ("::: comment\n**Comments:** First.\n\nSecond, with a [link](https://www.ft.com/).\n\n- a list\n:::\n\n"
            "Not part of it.\n")
    blocks = _body(project, body).lede
    assert [block.kind for block in blocks] == ["comment", "prose"]
    assert [token.type for token in blocks[0].tokens if token.nesting == 1][:2] == ["paragraph_open"] * 2
    edition = _edition(project, settings, body)
    callouts = re.findall(r'<td class="comment-cell".*?</td>', edition.email_html, re.DOTALL)
    assert len(callouts) == 1 and "First." in callouts[0] and "a list" in callouts[0]
    assert "Not part of it." not in callouts[0]
    assert ("  | Comments: First.\n  |\n  | Second, with a link [1].\n  |\n  | - a list\n\nNot part of it."
            in edition.email_txt)


@pytest.mark.parametrize(("body", "message"), [
    ("::: comment\nFirst.\n\n## Next\n\nText.\n", r"draft.md:5: '::: comment' is never closed"),
    ("::: comment\nFirst.\n\n## Next\n\n:::\n", r"draft.md:8: a comment cannot hold a heading"),
    ("::: comment\nFirst.\n\n[SIGNOFF]\n:::\n", r"draft.md:8: a comment cannot hold a heading or a marker"),
    ("::: comment\n:::\n", r"draft.md:5: '::: comment' is empty"),
    ("First.\n\n:::\n", r"draft.md:7: ':::' closes a comment, but no '::: comment' is open"),
    ("First.\nSecond line.\n::: note\nThird.\n", r"draft.md:7: unknown block '::: note'"),
    ("- item\n\n  ::: comment\n  Mine.\n  :::\n", r"draft.md:7: '::: comment' must stand on its own"),
])
def test_a_comment_fence_cannot_swallow_or_drop_text(project: Path, body: str, message: str) -> None:
    with pytest.raises(DraftError, match=message):
        _body(project, body)


def test_commentary_word_inside_text_is_not_a_comment(project: Path) -> None:
    assert _body(project, "No comment: really.\n").lede[0].kind == "prose"


def test_languages() -> None:
    assert cjk_language("习近平强调") == "zh"
    assert cjk_language("日本語のテキスト") == "ja"
    assert cjk_language("한국어 텍스트") == "ko"
    assert cjk_language("English only") is None


def test_mixed_paragraph_gets_lang_spans(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "> Xi said 双方要密切战略协作 on Thursday.\n")
    assert '<span lang="zh" class="cjk"' in edition.email_html
    assert "Xi said 双方要密切战略协作 on Thursday." in visible_text(edition.email_html)
    assert "> Xi said 双方要密切战略协作 on Thursday." in edition.email_txt


def test_japanese_paragraph(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "これは日本語の段落です。\n")
    assert '<p lang="ja" class="cjk"' in edition.email_html


def test_signoff_is_set_apart_after_the_last_section(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "## One\n\nx\n\n[SIGNOFF]\n\nUntil next time,\\\nJoe\n")
    body = _body(project, "## One\n\nx\n\n[SIGNOFF]\n\nUntil next time,\\\nJoe\n")
    assert len(body.sections[0].blocks) == 1 and len(body.signoff) == 1
    assert 'data-part="signoff"' in edition.email_html
    assert "Until next time,\nJoe" in edition.email_txt


def test_ordinary_markdown(project: Path, settings: Settings) -> None:
    body = ("Some *emphasis*, **strong** and a [link](https://www.ft.com/).[^1]\n\n"
            "- one\n- two\n\n1. first\n2. second\n\n---\n\n[^1]: A footnote.\n")
    edition = _edition(project, settings, body)
    html = edition.email_html
    assert "<em>emphasis</em>" in html and "<strong>strong</strong>" in html
    assert "<ul" in html and "<ol" in html and "<hr" in html
    assert "A footnote." in visible_text(html)
    text = edition.email_txt
    assert "a link [1]." in text and "[1] https://www.ft.com/" in text
    assert "- one\n- two" in text.replace("\n\n- two", "\n- two") and "1. first" in text and "2. second" in text
    assert "¹ A footnote." in text


def test_raw_html_in_a_draft_is_shown_as_text(project: Path, settings: Settings) -> None:
    edition = _edition(project, settings, "<script>alert(1)</script>\n")
    assert "<script>" not in edition.email_html


SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="40" height="20">'


def _image_draft(project: Path, name: str, content: str) -> Path:
    folder = write_draft(project, "2024-03-01-c", FRONT, f"Lede.\n\n![A chart](images/{name})\n")
    (folder / "images").mkdir(exist_ok=True)
    (folder / "images" / name).write_text(content, encoding="utf-8")
    return folder


@pytest.mark.parametrize(("content", "reason"), [
    (f"{SVG_OPEN}<script>alert(1)</script></svg>", "has a <script> element"),
    (f'{SVG_OPEN}<SCRIPT xlink:href="https://evil.example/x.js"/></svg>', "has a <script> element"),
    (f'{SVG_OPEN}<rect width="5" height="5" onload="alert(1)"/></svg>', r"has an event handler \(onload=\)"),
    ('<svg xmlns="http://www.w3.org/2000/svg" onLoad="alert(1)"/>', r"has an event handler \(onLoad=\)"),
    (f"{SVG_OPEN}<foreignObject><p xmlns='http://www.w3.org/1999/xhtml'>hi</p></foreignObject></svg>",
     "has a <foreignObject> element"),
    (f'{SVG_OPEN}<a xlink:href="javascript:alert(1)"><rect width="5" height="5"/></a></svg>',
     r"refers to javascript: \(in href\)"),
    (f'{SVG_OPEN}<a href=" JAVA&#9;SCRIPT:alert(1)"><rect width="5" height="5"/></a></svg>',
     r"refers to javascript: \(in href\)"),
    (f'{SVG_OPEN}<set attributeName="href" to="javascript:alert(1)"/></svg>', r"refers to javascript: \(in to\)"),
    (f"{SVG_OPEN}<style>a {{ background: url(javascript:alert(1)) }}</style></svg>", "refers to javascript:"),
    ('<!DOCTYPE svg [<!ENTITY x "&#60;script&#62;alert(1)&#60;/script&#62;">]>'
     f"{SVG_OPEN}&x;</svg>", "declares a DTD of its own"),
    ('<?xml-stylesheet href="evil.xsl" type="text/xsl"?>' f"{SVG_OPEN}</svg>", "has an XML processing instruction"),
    (f"{SVG_OPEN}<rect></svg>", r"is not well-formed SVG \(.*\)"),
    ("<html><body>not an image</body></html>", r"is not an SVG image"),
])
def test_an_svg_that_can_run_code_is_refused_when_the_draft_is_read(project: Path, content: str,
                                                                     reason: str) -> None:
    with pytest.raises(DraftError, match=rf"draft.md:7: image images/chart.svg {reason}"):
        parse_body(read_draft(_image_draft(project, "chart.svg", content)))


def test_an_svg_named_as_a_png_is_still_read_as_svg(project: Path) -> None:
    folder = _image_draft(project, "chart.png", f"\n{SVG_OPEN}<script>alert(1)</script></svg>")
    with pytest.raises(DraftError, match=r"draft.md:7: image images/chart.png has a <script> element: an SVG that "
                                         r"can run code is not published; use PNG or JPEG"):
        parse_body(read_draft(folder))


def test_a_plain_svg_is_read(project: Path) -> None:
    body = parse_body(read_draft(_image_draft(project, "chart.svg", f'{SVG_OPEN}<!-- a chart -->'
                                                                    '<a xlink:href="#bar"><rect id="bar" width="5" '
                                                                    'height="5" fill="#0af"/></a></svg>')))
    assert [(image.src, image.width) for image in body.images] == [("images/chart.svg", 40)]


def _nested_list(depth: int) -> str:
    return "".join("  " * level + f"- item{level}\n" for level in range(depth))


def _nested_emphasis(depth: int) -> str:
    marks = ["*", "**", "~~"]
    opening = "".join(f"{marks[level % 3]}open{level} " for level in range(depth))
    closing = "".join(f" close{level}{marks[level % 3]}" for level in reversed(range(depth)))
    return f"{opening}middle{closing}"


@pytest.mark.parametrize(("body", "line", "message"), [
    (_nested_list(10), 14, "lists and quotes nested 10 deep; at most 9 levels"),
    ("".join("> " * level + f"quote{level}\n" + "> " * level + "\n" for level in range(1, 13)), 23,
     "lists and quotes nested 10 deep; at most 9 levels"),
    (f"Before.\n\nA first line,\n{_nested_emphasis(30)}\n", 8, "emphasis and links nested 11 deep; at most 10 levels"),
])
def test_content_nested_too_deep_is_refused_at_its_line(project: Path, body: str, line: int, message: str) -> None:
    with pytest.raises(DraftError, match=rf"draft.md:{line}: {message}$"):
        _body(project, f"{body}\nAfter.\n\n## Next\n\nMore.\n")


@pytest.mark.parametrize("body", [_nested_list(9), _nested_list(10), _nested_list(14), _nested_emphasis(10),
                                  _nested_emphasis(30), _nested_emphasis(250)])
def test_an_edition_never_shows_less_than_the_draft(project: Path, settings: Settings, body: str) -> None:
    """markdown-it skips what lies past its nesting limit and libxml2 past 255 elements: refused, never cut."""
    words = {*re.findall(r"\w+\d+|middle", body), "After", "More"}
    try:
        edition = _edition(project, settings, f"{body}\nAfter.\n\n## Next\n\nMore.\n")
    except DraftError as exc:
        assert re.search(r"draft.md:\d+: .* nested \d+ deep; at most \d+ levels$", str(exc))
        return
    for shown in (visible_text(edition.email_html), edition.email_txt):
        assert not words - set(re.findall(r"\w+", shown))


def test_check_refuses_a_draft_nested_too_deep(project: Path, run_cli) -> None:
    write_draft(project, "2024-03-01-deep", FRONT, _nested_list(12) + "\nThe rest of the edition.\n")
    code, out, err = run_cli("check", "2024-03-01-deep", "--offline")
    assert code == 2 and out == ""
    assert err.endswith("draft.md:14: lists and quotes nested 10 deep; at most 9 levels\n"), err


def test_rendering_writes_nothing_to_the_tokens() -> None:
    """markdown-it's own image rule sets the alt text on the token; the draft dialect's renders a copy."""
    md = markdown()
    tokens = md.parse("![An *important* chart](images/chart.png)\n")
    parsed = [token.as_dict() for token in tokens]
    assert '<img src="images/chart.png" alt="An important chart"' in md.renderer.render(tokens, md.options, {})
    assert [token.as_dict() for token in tokens] == parsed
