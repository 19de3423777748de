"""The text a reader actually sees in an HTML email.

Hidden elements (``display:none``, the preheader's zero-height trick,
``hidden``, ``aria-hidden``), comments, ``<head>``, ``<style>`` and attributes
do not count: a disclaimer hidden in any of them is not shown to anyone.
"""

from __future__ import annotations

import re

from lxml import etree
from lxml import html as lxml_html

_HIDING = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|max-height\s*:\s*0(?:px)?\s*(?:;|$)|font-size\s*:\s*0(?:px)?\s*;.*opacity\s*:\s*0",
    re.IGNORECASE,
)
_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "td", "th", "blockquote", "br", "table",
           "section", "article", "ol", "ul", "hr", "pre"}
_INVISIBLE = {"head", "style", "script", "title", "template", "noscript"}


def _hidden(element: etree._Element) -> bool:
    if element.tag in _INVISIBLE or element.get("hidden") is not None or element.get("aria-hidden") == "true":
        return True
    return bool(_HIDING.search(element.get("style") or ""))


def visible_text(html: str) -> str:
    """The visible text of ``html``, one line per block element, whitespace collapsed within lines."""
    document = lxml_html.document_fromstring(html.encode("utf-8"))
    parts: list[str] = []

    def walk(element: etree._Element) -> None:
        if not isinstance(element.tag, str):  # comments and processing instructions
            if element.tail:
                parts.append(element.tail)
            return
        if not _hidden(element):
            if element.tag in _BLOCKS:
                parts.append("\n")
            if element.text:
                parts.append(element.text)
            for child in element:
                walk(child)
            if element.tag in _BLOCKS:
                parts.append("\n")
        if element.tail:
            parts.append(element.tail)

    walk(document)
    lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def visible_links(html: str) -> list[tuple[str, str]]:
    """(href, text) of every link a reader can see and click: not hidden, not empty."""
    document = lxml_html.document_fromstring(html.encode("utf-8"))
    links = []
    for anchor in document.iter("a"):
        href = anchor.get("href")
        if href is None or any(_hidden(element) for element in (anchor, *anchor.iterancestors())):
            continue
        text = " ".join(anchor.text_content().split())
        if text or anchor.find(".//img") is not None:
            links.append((href, text))
    return links
