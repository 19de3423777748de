"""Read a draft's Markdown body into the edition's parts: lede, sections, sign-off.

Body conventions (the README documents them for editors):

- ``## Heading`` starts a numbered section; ``[TOC]`` on its own line places the
  table of contents (otherwise it follows the lede); ``[SIGNOFF]`` on its own
  line starts the author's closing words, set apart after the last section.
- ``### [Headline](https://url) – Outlet [February 8th]`` is a source item.
- Headings keep a correct outline whatever level the editor typed: h1 is the
  subject, so a heading is at least h2, and never more than one level below
  the heading before it (sections are h2, their source items h3).
- ``>`` blockquotes are quoted excerpts; a paragraph beginning ``Comment:`` or
  ``Comments:`` (bold or not) is the editor's comment, and a comment of several
  paragraphs stands between a line ``::: comment`` and a line ``:::``.
- Paragraphs written in Chinese, Japanese or Korean are marked with their ``lang``.

Content nested deeper than the pipeline can carry to the reader (markdown-it
drops whatever lies past its ``maxNesting``; HTML parsers past 255 elements) is
refused with the draft.md line, never cut short.

The parts keep their markdown-it tokens, so the HTML and the plain-text parts
are both rendered from the same content. A ``Body`` is parsed once per edition
and shared by rendering and the checks. Parsing settles everything about its
tokens (heading levels, ``lang`` marks, image widths) and nothing writes to
them afterwards: what depends on the publication, such as where an image is
published, is decided while rendering, on a copy of the token.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import imagesize
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.rules_block import StateBlock
from markdown_it.token import Token
from mdit_py_plugins.container import container_plugin
from mdit_py_plugins.footnote import footnote_plugin

from pipeline.draft import Draft
from pipeline.errors import DraftError
from pipeline.svg import active_content, is_svg_file

BlockKind = Literal["prose", "heading", "source", "quote", "comment", "image"]

TOC_MARKER = "[TOC]"
SIGNOFF_MARKER = "[SIGNOFF]"
_COMMENT = re.compile(r"^\s*comments?\s*:", re.IGNORECASE)
_COMMENT_OPEN, _COMMENT_CLOSE = "container_comment_open", "container_comment_close"
_FENCE = re.compile(r"^[ \t]*:{3,}[ \t]*(?P<name>.*?)[ \t]*$", re.MULTILINE)
_SOURCE_TAIL = re.compile(r"^\s*[–—-]+\s*(?P<outlet>[^\[\]]*?)\s*(?:\[(?P<date>[^\[\]]+)\])?\s*$")
_MAX_IMAGE_WIDTH = 552  # the content width of the default template

MAX_BLOCK_NESTING = 9  # lists and quotes inside one another
MAX_INLINE_NESTING = 10  # emphasis, links and strikethrough inside one another
# markdown-it silently skips everything past maxNesting token levels (a list level is two:
# list and item). Kept well above what the limits above allow, so the guard always speaks first.
_PARSER_NESTING = 4 * MAX_BLOCK_NESTING
_BLOCK_CONTAINERS = {"bullet_list_open": 1, "ordered_list_open": 1, "blockquote_open": 1,
                     "bullet_list_close": -1, "ordered_list_close": -1, "blockquote_close": -1,
                     _COMMENT_OPEN: 1, _COMMENT_CLOSE: -1}


def markdown() -> MarkdownIt:
    """The one Markdown dialect of drafts: CommonMark, tables, strikethrough, footnotes; no raw HTML.

    Its renderer leaves the tokens it renders as they are, so one Body can be rendered any number of times.
    """
    md = MarkdownIt("commonmark", {"html": False, "maxNesting": _PARSER_NESTING})
    md.enable(["table", "strikethrough"]).use(footnote_plugin)
    md.use(container_plugin, "comment", validate=lambda params, *_: params.strip().casefold() == "comment")
    md.block.ruler.before("table", "nesting_guard", _nesting_guard)
    image_rule = cast(RendererHTML, md.renderer).rules["image"]

    def image(renderer: Any, tokens: Sequence[Token], index: int, options: Any, env: Any) -> str:
        # markdown-it's image rule writes the rendered alt text into the token's attrs: give it a copy.
        return str(image_rule(shown_as(tokens, index), index, options, env))

    md.add_render_rule("image", image)
    return md


def shown_as(tokens: Sequence[Token], index: int, **attrs: str) -> list[Token]:
    """``tokens`` with a copy of ``tokens[index]`` in its place, its attrs updated: for a renderer to
    change what it shows without changing the Body it renders."""
    shown = list(tokens)
    shown[index] = tokens[index].copy(attrs={**tokens[index].attrs, **attrs})
    return shown


class _TooDeep(Exception):
    """Raised from inside markdown-it; parse_body turns it into a DraftError with the draft.md line."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.message, self.line = message, line


def _nesting_guard(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    """The first block rule, consulted at the start of every block: refuse one nested too deep.

    It claims nothing (returns False), so every other rule runs as before.
    """
    # Each list or quote adds one or two token levels: below the limit nothing can be too deep.
    if state.level > MAX_BLOCK_NESTING:
        depth = sum(_BLOCK_CONTAINERS.get(token.type, 0) for token in state.tokens)
        if depth > MAX_BLOCK_NESTING:
            raise _TooDeep(f"lists and quotes nested {depth} deep; at most {MAX_BLOCK_NESTING} levels", start_line)
    return False


def _check_inline_nesting(tokens: list[Token]) -> None:
    """Refuse emphasis, links and the like nested too deep, at the line where it happens."""
    for token in tokens:
        if token.type != "inline":
            continue
        depth, line = 0, token.map[0] if token.map else 0
        for child in token.children or []:
            depth += child.nesting
            line += child.type in ("softbreak", "hardbreak")
            if depth > MAX_INLINE_NESTING:
                raise _TooDeep(f"emphasis and links nested {depth} deep; at most {MAX_INLINE_NESTING} levels", line)


@dataclass(frozen=True, kw_only=True)
class SourceItem:
    """A source the edition excerpts: headline link, outlet and date as the editor wrote them."""

    headline: tuple[Token, ...]
    url: str
    outlet: str
    date: str


@dataclass(frozen=True, kw_only=True)
class Block:
    """One top-level piece of the body, with the draft.md line it starts on."""

    kind: BlockKind
    tokens: tuple[Token, ...]
    line: int
    source: SourceItem | None = None


@dataclass(frozen=True, kw_only=True)
class Section:
    """A numbered ``##`` section."""

    number: int
    title: str
    title_tokens: tuple[Token, ...]
    anchor: str
    line: int
    blocks: tuple[Block, ...]


@dataclass(frozen=True, kw_only=True)
class Image:
    """An image the body shows; local files are published under ``asset_base_url``."""

    src: str
    alt: str
    line: int
    file: Path | None = None
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, kw_only=True)
class Body:
    """The edition's content, in reading order, with the draft it was read from."""

    draft: Draft = field(repr=False)
    lede: tuple[Block, ...]
    toc_after: int  # how many lede blocks come before the table of contents
    sections: tuple[Section, ...]
    footnotes: tuple[Token, ...]
    signoff: tuple[Block, ...]
    images: tuple[Image, ...]
    env: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def has_toc(self) -> bool:
        return len(self.sections) >= 2


def parse_body(draft: Draft) -> Body:
    """Split the draft body into lede, sections and sign-off, classifying each block."""
    env: dict[str, Any] = {}
    try:
        tokens = markdown().parse(draft.body, env)
        _check_inline_nesting(tokens)
    except _TooDeep as exc:
        raise DraftError(exc.message, path=draft.source, line=draft.body_line + exc.line) from None
    chunks, footnotes = _top_level_chunks(tokens)
    reader = _BodyReader(draft)
    for chunk in chunks:
        reader.take(chunk)
    return reader.finish(footnotes, env)


def _top_level_chunks(tokens: list[Token]) -> tuple[list[list[Token]], tuple[Token, ...]]:
    """Group tokens into top-level blocks (open ... close); the footnote block apart."""
    chunks: list[list[Token]] = []
    footnotes: list[Token] = []
    depth = 0
    in_footnotes = False
    for token in tokens:
        if token.type == "footnote_block_open":
            in_footnotes = True
        if in_footnotes:
            footnotes.append(token)
            in_footnotes = token.type != "footnote_block_close"
            continue
        if depth == 0:
            chunks.append([])
        chunks[-1].append(token)
        depth += token.nesting
    return chunks, tuple(footnotes)


class _BodyReader:
    """Walks top-level chunks, tracking where lede, sections and sign-off begin."""

    def __init__(self, draft: Draft):
        self.draft = draft
        self.lede: list[Block] = []
        self.toc_after: int | None = None
        self.sections: list[dict[str, Any]] = []
        self.signoff: list[Block] | None = None
        self.images: list[Image] = []
        self.anchors: set[str] = set()
        self.outline = 1  # the level of the heading before: h1, the subject, to begin with

    def line_of(self, token: Token) -> int:
        return self.draft.body_line + (token.map[0] if token.map else 0)

    def take(self, chunk: list[Token]) -> None:
        first = chunk[0]
        marker = _marker(chunk)
        if marker == TOC_MARKER:
            if self.sections or self.signoff is not None:
                self.fail("[TOC] must come before the first ## section", first)
            self.toc_after = len(self.lede)
        elif marker == SIGNOFF_MARKER:
            if self.signoff is not None:
                self.fail("[SIGNOFF] appears twice", first)
            self.signoff = []
            self.outline = 1
        elif first.type == "heading_open" and first.tag == "h2" and self.signoff is None:
            self.start_section(chunk)
        else:
            block = self.block(chunk)
            target = self.signoff if self.signoff is not None else (
                self.sections[-1]["blocks"] if self.sections else self.lede
            )
            target.append(block)

    def start_section(self, chunk: list[Token]) -> None:
        inline = chunk[1]
        title = plain_text(inline.children or []).strip()
        number = len(self.sections) + 1
        self.outline = 2
        anchor = _unique(f"{number}-{_slug(title)}", self.anchors)
        self.sections.append(
            dict(number=number, title=title, title_tokens=tuple(inline.children or []),
                 anchor=anchor, line=self.line_of(chunk[0]), blocks=[])
        )

    def block(self, chunk: list[Token]) -> Block:
        line = self.line_of(chunk[0])
        fenced = chunk[0].type == _COMMENT_OPEN
        if fenced:
            chunk = self.fenced_comment(chunk)
        self.place_headings(chunk)
        for token in chunk:
            if token.type == _COMMENT_OPEN:
                self.fail("'::: comment' must stand on its own, not inside a list, a quote or a comment", token)
            if token.type == "inline":
                self.refuse_stray_fence(token)
                self.check_images(token, self.line_of(token))
        _mark_languages(chunk)
        kind, source = ("comment", None) if fenced else _classify(chunk)
        return Block(kind=kind, tokens=tuple(chunk), line=line, source=source)

    def place_headings(self, chunk: list[Token]) -> None:
        """Set each heading's level in the outline: h2 at the least, one below the heading before at the most."""
        for token in chunk:
            if token.type == "heading_open":
                self.outline = max(2, min(int(token.tag[1:]), self.outline + 1))
            if token.type in ("heading_open", "heading_close"):
                token.tag = f"h{self.outline}"

    def fenced_comment(self, chunk: list[Token]) -> list[Token]:
        """The paragraphs between ``::: comment`` and ``:::``; a fence left open or holding
        headings would take in the rest of the edition, so either is an error."""
        opener, inner = chunk[0], chunk[1:-1]
        end = opener.map[1] if opener.map else 0
        lines = self.draft.body.splitlines()
        closing = _FENCE.fullmatch(lines[end]) if end < len(lines) else None
        if closing is None or closing["name"]:
            self.fail("'::: comment' is never closed: end the comment with a line ':::'", opener)
        if not inner:
            self.fail("'::: comment' is empty", opener)
        for index, token in enumerate(inner):
            if token.type == "heading_open" or _marker(inner[index : index + 3]):
                self.fail("a comment cannot hold a heading or a marker: close it with ':::' above this line", token)
        return inner

    def refuse_stray_fence(self, inline: Token) -> None:
        """A ``:::`` line that opened or closed nothing would show as text: say what is wrong."""
        fence = _FENCE.search(inline.content)
        if fence is None:
            return
        line = self.line_of(inline) + inline.content.count("\n", 0, fence.start())
        name = fence["name"]
        message = (f"unknown block '::: {name}': the one kind is '::: comment'" if name
                   else "':::' closes a comment, but no '::: comment' is open")
        raise DraftError(message, path=self.draft.source, line=line)

    def check_images(self, inline: Token, line: int) -> None:
        for child in inline.children or []:
            if child.type == "image":
                image = _image(child, self.draft, line)
                if image.width:
                    child.attrSet("width", str(image.width))
                self.images.append(image)

    def fail(self, message: str, token: Token) -> None:
        raise DraftError(message, path=self.draft.source, line=self.line_of(token))

    def finish(self, footnotes: tuple[Token, ...], env: dict[str, Any]) -> Body:
        for token in footnotes:
            if token.type == "inline":
                self.check_images(token, self.line_of(token))
        sections = tuple(
            Section(**{**section, "blocks": tuple(section["blocks"])}) for section in self.sections
        )
        return Body(
            draft=self.draft,
            lede=tuple(self.lede),
            toc_after=len(self.lede) if self.toc_after is None else self.toc_after,
            sections=sections,
            footnotes=footnotes,
            signoff=tuple(self.signoff or ()),
            images=tuple(self.images),
            env=env,
        )


def _marker(chunk: list[Token]) -> str | None:
    if len(chunk) == 3 and chunk[0].type == "paragraph_open":
        text = chunk[1].content.strip()
        if text.upper() in (TOC_MARKER, SIGNOFF_MARKER):
            return text.upper()
    return None


def _classify(chunk: list[Token]) -> tuple[BlockKind, SourceItem | None]:
    first = chunk[0]
    if first.type == "heading_open":
        source = _source_item(chunk[1])
        return ("source", source) if source else ("heading", None)
    if first.type == "blockquote_open":
        return "quote", None
    if first.type == "paragraph_open":
        children = [c for c in chunk[1].children or [] if not (c.type == "text" and not c.content)]
        if children and _COMMENT.match(plain_text(children)):
            return "comment", None
        if children and all(c.type in ("image", "softbreak", "hardbreak") for c in children):
            return "image", None
    return "prose", None


def _source_item(inline: Token) -> SourceItem | None:
    children = inline.children or []
    if not children or children[0].type != "link_open":
        return None
    close = next(i for i, c in enumerate(children) if c.type == "link_close")
    tail = plain_text(children[close + 1 :])
    match = _SOURCE_TAIL.match(tail) if tail.strip() else None
    if tail.strip() and not match:
        return None
    return SourceItem(
        headline=tuple(children[1:close]),
        url=str(children[0].attrGet("href") or ""),
        outlet=match["outlet"].strip() if match else "",
        date=(match["date"] or "").strip() if match else "",
    )


def _image(token: Token, draft: Draft, line: int) -> Image:
    src = str(token.attrGet("src") or "")
    alt = plain_text(token.children or [])
    if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.IGNORECASE) or src.startswith("//"):
        return Image(src=src, alt=alt, line=line)
    folder = draft.folder.resolve()
    file = (folder / src).resolve()
    if not file.is_relative_to(folder):
        raise DraftError(f"image {src!r} is outside the draft folder", path=draft.source, line=line)
    if not file.is_file():
        raise DraftError(f"image file not found: {src}", path=draft.source, line=line)
    unsafe = active_content(file) if is_svg_file(file) else None
    if unsafe:
        raise DraftError(f"image {src} {unsafe}: an SVG that can run code is not published; use PNG or JPEG",
                         path=draft.source, line=line)
    try:
        width, height = imagesize.get(file)
    except (OSError, ValueError):
        width, height = -1, -1
    if width <= 0:
        raise DraftError(f"not a readable image: {src}", path=draft.source, line=line)
    shown = min(width, _MAX_IMAGE_WIDTH)
    return Image(src=src, alt=alt, line=line, file=file, width=shown, height=round(height * shown / width))


# Chinese, Japanese and Korean: paragraphs mostly in one of them get their lang,
# and runs of them inside other text get a span, so each shows in a CJK font.
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_CJK_CHAR = (r"\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
             r"\uac00-\ud7af\uf900-\ufaff\uff00-\uffef")
_CJK_RUN = re.compile(rf"[{_CJK_CHAR}][{_CJK_CHAR}\s\d.,;:!?%$()“”\"'-]*[{_CJK_CHAR}]|[{_CJK_CHAR}]")
_CJK_ANY = re.compile(rf"[{_CJK_CHAR}]")


def cjk_language(text: str) -> str | None:
    """'zh', 'ja' or 'ko' for text in those scripts, else None."""
    return _script_language(text) if _CJK_ANY.search(text) else None


def _script_language(text: str) -> str:
    """'ja', 'ko' or 'zh' for text with CJK characters in it."""
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    return "zh"


def _mostly_cjk(text: str) -> bool:
    letters = [c for c in text if c.isalnum()]
    cjk = sum(1 for c in letters if _CJK_ANY.match(c))
    return bool(letters) and cjk / len(letters) >= 0.5


def _mark_languages(chunk: list[Token]) -> None:
    """Set lang on CJK paragraphs; wrap CJK runs inside other paragraphs in lang spans."""
    for index, token in enumerate(chunk):
        if token.type != "inline" or not _CJK_ANY.search(token.content):
            continue
        opener = chunk[index - 1] if index else None
        lang = _script_language(token.content)
        if opener is not None and opener.nesting == 1 and _mostly_cjk(token.content):
            opener.attrSet("lang", lang)
            opener.attrJoin("class", "cjk")
            continue
        token.children = _wrap_cjk_runs(token.children or [])


def _wrap_cjk_runs(children: list[Token]) -> list[Token]:
    wrapped: list[Token] = []
    for child in children:
        if child.type != "text" or not _CJK_ANY.search(child.content):
            wrapped.append(child)
            continue
        position = 0
        for run in _CJK_RUN.finditer(child.content):
            if run.start() > position:
                wrapped.append(_text(child.content[position : run.start()]))
            opener = Token("cjk_open", "span", 1)
            opener.attrs = {"lang": _script_language(run.group()), "class": "cjk"}
            wrapped += [opener, _text(run.group()), Token("cjk_close", "span", -1)]
            position = run.end()
        if position < len(child.content):
            wrapped.append(_text(child.content[position:]))
    return wrapped


def _text(content: str) -> Token:
    token = Token("text", "", 0)
    token.content = content
    return token


def plain_text(children: list[Token] | tuple[Token, ...]) -> str:
    """The text of inline tokens, without markup."""
    parts = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(plain_text(child.children or []))
    return "".join(parts)


def _slug(title: str) -> str:
    normal = unicodedata.normalize("NFKD", title)
    slug = re.sub(r"[^\w]+", "-", normal.lower(), flags=re.UNICODE).strip("-")
    return slug[:60] or "section"


def _unique(anchor: str, taken: set[str]) -> str:
    candidate, counter = anchor, 2
    while candidate in taken:
        candidate, counter = f"{anchor}-{counter}", counter + 1
    taken.add(candidate)
    return candidate
