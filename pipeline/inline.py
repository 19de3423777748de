"""Inline the compiled email's CSS with premailer, without the damage its defaults do.

premailer's defaults would strip ``!important`` (MJML's columns then stack on
desktop), drop the doctype, percent-encode ``{{ }}`` placeholders inside
``href`` and fetch every ``<link rel=stylesheet>`` and ``@import`` even with
``allow_network=False``. Here ``@media`` rules stay in ``<style>``, web-font
links are set aside untouched and put back afterwards, and nothing is fetched.

The document is parsed here, not inside premailer, so that libxml2's depth limit
(it drops everything after an element nested 256 deep) is an error, not a cut email.
"""

from __future__ import annotations

import logging
import re

from lxml import etree
from premailer import Premailer

from pipeline import placeholders
from pipeline.errors import RenderError

DOCTYPE = "<!doctype html>"
# Web-font links and <style> blocks holding @import: premailer would fetch them.
_FETCHING = re.compile(
    r"<link\b[^>]*\brel=[\"']?stylesheet[^>]*>|<style\b[^>]*>[^<]*@import[^<]*</style>",
    re.IGNORECASE,
)


def inline_css(html: str) -> str:
    """Return ``html`` with its CSS inlined; leftover rules (media queries) kept in <style>."""
    kept: list[str] = []

    def set_aside(match: re.Match[str]) -> str:
        kept.append(match.group())
        return f"<!--newsletter-kept-{len(kept) - 1}-->"

    document = _parse(placeholders.protect(_FETCHING.sub(set_aside, html)))
    try:
        inlined_root = Premailer(
            document,
            keep_style_tags=False,
            strip_important=False,
            allow_network=False,
            allow_loading_external_files=False,
            disable_validation=True,
            remove_classes=False,
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    except Exception as exc:  # premailer raises bare Exceptions and cssutils errors
        raise RenderError(f"CSS inlining failed: {exc}") from exc
    inlined = serialize(inlined_root)
    inlined = re.sub(r"<!--newsletter-kept-(\d+)-->", lambda match: kept[int(match[1])], inlined)
    body = re.sub(r"^\s*<!doctype[^>]*>\s*", "", placeholders.restore(inlined), flags=re.IGNORECASE)
    return f"{DOCTYPE}\n{body}"


def serialize(root: etree._Element) -> str:
    """A parsed document as HTML text, laid out as premailer writes it (without the doctype)."""
    return etree.tostring(root, method="html", encoding="utf-8", pretty_print=True).decode("utf-8")


def _parse(html: str) -> etree._Element:
    """The HTML as premailer would parse it, refusing what the parser would silently truncate."""
    parser = etree.HTMLParser()
    document = etree.fromstring(html.strip(), parser)
    for error in parser.error_log:
        if "Excessive depth" in error.message:
            raise RenderError(f"the compiled email nests elements too deep (line {error.line}): "
                              "HTML parsers drop everything past 255 levels")
    return document
