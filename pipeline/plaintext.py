"""Render the draft's content as the plain-text part of the email.

Made from the same markdown-it tokens as the HTML (never scraped from it):
quotes are prefixed with ``> ``, lists keep their markers, and links become
numbered references listed at the end, as careful text newsletters do.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from markdown_it.token import Token

WIDTH = 76
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class TextRenderer:
    """Renders blocks in reading order, numbering links as it meets them."""

    width: int = WIDTH
    references: list[str] = field(default_factory=list)

    def reference(self, url: str) -> int:
        """The number of a link in the reference list (one number per address)."""
        if url not in self.references:
            self.references.append(url)
        return self.references.index(url) + 1

    def inline(self, children: list[Token] | tuple[Token, ...]) -> str:
        """Inline tokens as text; links as ``text [n]``."""
        out: list[str] = []
        href: str | None = None
        link_text_start = 0
        for child in children:
            kind = child.type
            if kind in ("text", "html_inline"):
                out.append(child.content)
            elif kind == "code_inline":
                out.append(f"`{child.content}`")
            elif kind == "softbreak":
                out.append(" ")
            elif kind == "hardbreak":
                out.append("\n")
            elif kind == "image":
                out.append(f"[Image: {self.inline(child.children or [])}]")
            elif kind == "footnote_ref":
                out.append(str(child.meta["id"] + 1).translate(_SUPERSCRIPT))
            elif kind == "link_open":
                href, link_text_start = str(child.attrGet("href") or ""), len(out)
            elif kind == "link_close" and href is not None:
                out.append(self._link_suffix(href, "".join(out[link_text_start:])))
                href = None
        return "".join(out)

    def _link_suffix(self, href: str, text: str) -> str:
        if href.startswith("#") or not href:
            return ""
        if text.strip() in (href, href.removeprefix("mailto:")):
            return ""
        return f" [{self.reference(href)}]"

    def blocks(self, tokens: list[Token] | tuple[Token, ...], prefix: str = "") -> str:
        """Block tokens (paragraphs, lists, quotes, headings ...) as wrapped text, each line after ``prefix``."""
        paragraphs: list[str] = []
        prefixes: list[str] = [prefix] if prefix else []
        lists: list[list[int | None]] = []  # per open list: [next number or None]
        marker = ""
        for index, token in enumerate(tokens):
            kind = token.type
            if kind == "blockquote_open":
                prefixes.append("> ")
            elif kind == "blockquote_close":
                prefixes.pop()
            elif kind in ("bullet_list_open", "ordered_list_open"):
                start = token.attrGet("start")
                lists.append([int(start or 1) if kind == "ordered_list_open" else None])
            elif kind in ("bullet_list_close", "ordered_list_close"):
                lists.pop()
            elif kind == "list_item_open":
                number = lists[-1][0]
                marker = "- " if number is None else f"{number}. "
                if number is not None:
                    lists[-1][0] = number + 1
            elif kind == "list_item_close":
                marker = ""
            elif kind == "inline":
                opener = tokens[index - 1] if index else None
                text = self.inline(token.children or [])
                if opener is not None and opener.type == "heading_open":
                    text = underline(text, "=" if opener.tag in ("h1", "h2") else "-")
                indent = "".join(prefixes) + "  " * max(len(lists) - 1, 0)
                paragraphs.append(self.wrap(text, indent, marker))
                marker = ""
            elif kind in ("fence", "code_block"):
                indent = "".join(prefixes) + "    "
                paragraphs.append("\n".join(indent + line for line in token.content.rstrip("\n").split("\n")))
            elif kind == "hr":
                paragraphs.append("* * *")
            elif kind == "footnote_open":
                marker = str(token.meta["id"] + 1).translate(_SUPERSCRIPT) + " "
        return _join([paragraph for paragraph in paragraphs if paragraph.strip()])

    def wrap(self, text: str, indent: str = "", marker: str = "") -> str:
        """Wrap each line of ``text`` to the width, after ``indent`` and a list ``marker``."""
        lines: list[str] = []
        hanging = indent + " " * len(marker)
        for number, line in enumerate(text.split("\n")):
            first = indent + marker if number == 0 else hanging
            wrapped = textwrap.wrap(
                line, width=max(self.width, len(first) + 20), initial_indent=first,
                subsequent_indent=hanging, break_long_words=False, break_on_hyphens=False,
            ) or [first.rstrip()]
            lines.extend(wrapped)
        return "\n".join(lines)

    def reference_list(self) -> str:
        """The numbered list of link addresses, for the end of the message."""
        return "\n".join(f"[{number}] {url}" for number, url in enumerate(self.references, start=1))


def _join(paragraphs: list[str]) -> str:
    """Blank lines between paragraphs; inside a quote or callout the blank line keeps its prefix."""
    out = paragraphs[:1]
    for before, after in zip(paragraphs, paragraphs[1:], strict=False):
        shared = _common_prefix(before, after)
        out.append(f"\n{shared.rstrip()}\n{after}")
    return "".join(out)


def _common_prefix(before: str, after: str) -> str:
    last_line, first_line = before.rsplit("\n", 1)[-1], after.split("\n", 1)[0]
    shared = ""
    while extended := next((shared + mark for mark in ("> ", "| ", "  ")
                            if last_line.startswith(shared + mark) and first_line.startswith(shared + mark)), None):
        shared = extended
    return shared if shared.strip() else ""


def underline(text: str, rule: str = "=") -> str:
    """A heading for the text part: the text with a rule of the same width below."""
    return f"{text}\n{rule * min(len(text), WIDTH)}"
