"""Warn about HTML and CSS features of an edition that the newsletter's mail clients do not support.

Support comes from caniemail (``pipeline/data/caniemail``). The check reads the
edition's MJML source, not the compiled HTML: what MJML adds on purpose while
compiling (``mso-`` properties, the ``@media`` rules of its columns, conditional
comments for Outlook) is progressive enhancement and not the editor's to fix.
What is read:

- the CSS of every ``<mj-style>`` (and of ``<style>`` inside ``<mj-raw>``), parsed
  with cssutils: at-rules and media features, selectors, properties, notable values;
- the HTML inside ``<mj-text>``, ``<mj-raw>``, ``<mj-button>`` and ``<mj-table>``:
  elements, attributes and their ``style="..."`` declarations.

A feature is reported once, for every client family in ``checks.clients`` of which
some platform does not support it in the latest version caniemail tested.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import cssutils
from cssutils.css import CSSRule
from cssutils.tokenize2 import Tokenizer
from markdown_it.renderer import RendererHTML

from pipeline.checks.report import Problem
from pipeline.content import Body, markdown
from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.render import Edition

# Mechanics every MJML email uses, and that a client without them cannot show any
# styled email at all (Gmail's webmail for non-Google accounts drops <style>): not worth a
# warning. caniemail has no page for <a> itself, so it needs no entry.
MECHANICS = frozenset({
    "css-selector-class", "css-selector-type", "css-selector-descendant", "css-selector-grouping",
    "html-div", "html-span", "html-p", "html-table", "html-body", "html-style", "html-doctype", "html-comments",
})
# MJML elements whose content is the author's own HTML.
CONTENT_ELEMENTS = frozenset({"mj-text", "mj-raw", "mj-button", "mj-table"})

Support = Mapping[str, Mapping[str, str]]  # family -> platform -> "y" | "n" | "a" | "u"


@dataclass(frozen=True, kw_only=True)
class Feature:
    """A caniemail feature, with the support of the latest version tested on each platform."""

    key: str  # the caniemail id, e.g. "css-border-radius"
    title: str
    category: str  # "css", "html", "image" or "others"
    support: Support

    @property
    def name(self) -> str:
        """``CSS border-radius``, ``HTML lang attribute``; ``HTML5 semantics`` as it is."""
        prefix = {"css": "CSS", "html": "HTML"}.get(self.category, "")
        if not prefix or prefix.lower() in self.title.lower():
            return self.title.strip()
        return f"{prefix} {self.title.strip()}"


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    """Every caniemail feature by id, and the display names of client families and platforms."""

    features: Mapping[str, Feature]
    families: Mapping[str, str]
    platforms: Mapping[str, str]

    def unsupported(self, feature: Feature, family: str) -> tuple[str, ...]:
        """The display names of the family's platforms whose latest version does not support it."""
        platforms = feature.support.get(family, {})
        return tuple(self.platforms.get(name, name) for name, value in platforms.items() if value == "n")

    def gaps(self, feature: Feature, clients: Sequence[str]) -> list[str]:
        """``Outlook (Windows, Windows Mail)`` for each named family missing the feature somewhere."""
        gaps = []
        for family in clients:
            if platforms := self.unsupported(feature, family):
                gaps.append(f"{self.families.get(family, family)} ({', '.join(platforms)})")
        return gaps


@dataclass(frozen=True, kw_only=True)
class Use:
    """One use of a feature in the MJML source: which, as written, and in which MJML element."""

    feature: str
    written: str  # "<time>", "<table role>", "border-radius", "@media (prefers-color-scheme)"
    part: str  # "mj-style", "mj-text", "mj-raw" ...


def latest_support(stats: Mapping[str, Mapping[str, Mapping[str, str]]]) -> dict[str, dict[str, str]]:
    """Per family and platform, the support of the *last version listed*, its ``#n`` notes stripped.

    Version keys mix dates, years and numbers ("2019-10", "16.80"), so they are taken in the
    order caniemail lists them, oldest first, and never sorted.
    """
    latest: dict[str, dict[str, str]] = {}
    for family, platforms in stats.items():
        for platform, versions in platforms.items():
            if versions:
                value = list(versions.values())[-1]  # "y", "n", "a" or "u", then any "#1" note markers
                latest.setdefault(family, {})[platform] = value.split("#")[0].strip() or "u"
    return latest


@functools.cache
def catalogue() -> Catalogue:
    """caniemail's data as packaged with the pipeline, read once."""
    text = resources.files("pipeline").joinpath("data/caniemail/features.json").read_text(encoding="utf-8")
    data = json.loads(text)
    features = {
        key: Feature(key=key, title=entry["title"], category=entry["category"],
                     support=latest_support(entry.get("stats") or {}))
        for key, entry in data["features"].items()
    }
    names = data["nicenames"]
    return Catalogue(features=features, families=names["family"], platforms=names["platform"])


def check_compat(edition: Edition, clients: Sequence[str], ignore: Sequence[str] = ()) -> list[Problem]:
    """One warning per feature the edition uses that one of ``clients`` does not support, by feature id."""
    known = catalogue()
    _check_names(known, clients, ignore)
    skipped = MECHANICS | set(ignore)
    uses: dict[str, list[Use]] = {}
    for use in read_mjml(edition.mjml):
        if use.feature in known.features and use.feature not in skipped:
            uses.setdefault(use.feature, []).append(use)
    in_text = any(use.part == "mj-text" for found in uses.values() for use in found)
    in_draft = _draft_uses(edition.body) if in_text else {}
    problems = []
    for key in sorted(uses):
        feature = known.features[key]
        gaps = known.gaps(feature, clients)
        if gaps:
            problems.append(Problem(
                check="compat", severity="warning",
                message=f"{feature.name}{_as_written(feature, uses[key])} is not supported by {', '.join(gaps)}",
                location=_location(uses[key], in_draft.get(key), edition.draft.meta.template),
            ))
    return problems


def _check_names(known: Catalogue, clients: Sequence[str], ignore: Sequence[str]) -> None:
    for family in clients:
        if family not in known.families:
            raise ConfigError(f"checks.clients: unknown mail client {family!r} "
                              f"(known: {', '.join(sorted(known.families))})")
    for key in ignore:
        if key not in known.features:
            raise ConfigError(f"checks.compat_ignore: {key!r} is not a caniemail feature id")


def _as_written(feature: Feature, uses: Iterable[Use]) -> str:
    """`` (<time>)``: how the edition writes the feature, where the title does not already say it."""
    written = [text for text in dict.fromkeys(use.written for use in uses) if text.lower() not in feature.title.lower()]
    return f" ({', '.join(written[:4])}{', …' if len(written) > 4 else ''})" if written else ""


def _location(uses: list[Use], in_draft: tuple[int, int] | None, template: str) -> str:
    """``default template (mj-style)``, ``draft.md:12``, or both when the template uses it too.

    A use inside ``<mj-text>`` counts as the draft's when the draft's Markdown produces it:
    the template's own uses are the ones left over.
    """
    from_draft, line = in_draft or (0, 0)
    text_uses = sum(1 for use in uses if use.part == "mj-text")
    from_draft = min(from_draft, text_uses)
    parts = [use.part for use in uses if use.part != "mj-text"]
    if text_uses > from_draft:
        parts.append("mj-text")
    where = [f"{template} template ({', '.join(dict.fromkeys(parts))})"] if parts else []
    if from_draft:
        where.append(f"draft.md:{line}")
    return ", ".join(where)


# ---------------------------------------------------------------- reading the MJML source


def read_mjml(source: str) -> list[Use]:
    """Every feature use of an MJML document: its mj-style CSS and the HTML of its content elements."""
    reader = _MjmlReader()
    reader.feed(source)
    reader.close()
    return reader.uses


class _MjmlReader(HTMLParser):
    """Walks the MJML source once, keeping track of the MJML element it is inside."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []  # the MJML elements around the current position
        self.uses: list[Use] = []
        self.css: list[str] | None = None  # the text of the mj-style or <style> being read

    @property
    def part(self) -> str | None:
        """The innermost content element around the current position, if any."""
        return next((name for name in reversed(self.open) if name in CONTENT_ELEMENTS), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if _is_mjml(tag):
            self.open.append(tag)
            if tag == "mj-style":
                self.css = []
        elif self.part:
            self.handle_startendtag(tag, attrs)
            if tag == "style":
                self.css = []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        part = self.part
        if part and not _is_mjml(tag):
            values = {name: value or "" for name, value in attrs}
            self.uses += [Use(feature=key, written=written, part=part) for key, written in element_uses(tag, values)]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("mj-style", "style") and self.css is not None:
            part = "mj-style" if tag == "mj-style" else self.part or "mj-raw"
            self.uses += [Use(feature=key, written=written, part=part)
                          for key, written in stylesheet_uses("".join(self.css))]
            self.css = None
        if _is_mjml(tag) and tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        if self.css is not None:
            self.css.append(data)


def _is_mjml(tag: str) -> bool:
    return tag == "mjml" or tag.startswith("mj-")


# ---------------------------------------------------------------- HTML


_SEMANTIC = frozenset({"article", "aside", "details", "figcaption", "figure", "footer", "header", "main", "mark",
                       "nav", "section", "summary", "time"})
_ELEMENTS = {
    **{f"h{level}": "html-h1-h6" for level in range(1, 7)},
    "ul": "html-lists", "ol": "html-lists", "dl": "html-lists",
    "map": "html-image-maps", "area": "html-image-maps",
    **{tag: "html-semantics" for tag in _SEMANTIC},
}
_ATTRIBUTES = {
    "lang": "html-lang", "dir": "html-dir", "role": "html-role", "hidden": "html-hidden", "target": "html-target",
    "srcset": "html-srcset", "sizes": "html-srcset", "loading": "html-loading-attribute", "popover": "html-popover",
    "required": "html-required", "inert": "css-inert-attribute", "usemap": "html-image-maps",
    "align": "html-align", "valign": "html-valign", "width": "html-width", "height": "html-height",
    "background": "html-background", "cellpadding": "html-cellpadding", "cellspacing": "html-cellspacing",
}
_IMAGE_FORMATS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "gif": "gif", "webp": "webp", "svg": "svg",
                  "avif": "avif", "bmp": "bmp", "tif": "tiff", "tiff": "tiff", "ico": "ico", "heic": "heif",
                  "heif": "heif", "apng": "apng"}


def element_uses(tag: str, attrs: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(feature id, as written) for one HTML element, its attributes and its style declarations.

    Ids caniemail does not have (``html-em``) are dropped later, by the catalogue.
    """
    yield _ELEMENTS.get(tag, f"html-{tag}"), f"<{tag}>"
    if tag in ("input", "button"):
        kind = attrs.get("type", "text" if tag == "input" else "submit").lower()
        yield f"html-{tag}-{kind}", f'<{tag} type="{kind}">'
    if tag == "meta" and attrs.get("name", "").lower() in ("color-scheme", "supported-color-schemes"):
        yield "html-meta-color-scheme", f'<meta name="{attrs["name"]}">'
    href = attrs.get("href", "")
    if tag == "a" and href.startswith("#"):
        yield "html-anchor-links", '<a href="#…">'
    if tag == "a" and href.lower().startswith("mailto:"):
        yield "html-mailto-links", '<a href="mailto:…">'
    if tag == "img":
        yield from _image_format(attrs.get("src", ""))
    for name, value in attrs.items():
        if name == "style":
            yield from declaration_uses(value)
        elif name in _ATTRIBUTES:
            yield _ATTRIBUTES[name], f"<{tag} {name}>"
        elif name.startswith("aria-"):
            yield f"html-{name}", f"<{tag} {name}>"


def _image_format(src: str) -> Iterator[tuple[str, str]]:
    if src.lower().startswith("data:"):
        yield "image-base64", "data: image"
        return
    extension = src.split("?")[0].split("#")[0].rsplit(".", 1)[-1].lower()
    if extension in _IMAGE_FORMATS:
        yield f"image-{_IMAGE_FORMATS[extension]}", f".{extension} image"


# ---------------------------------------------------------------- CSS


_COMBINATORS = {"descendant": "css-selector-descendant", "child": "css-selector-child",
                "adjacent-sibling": "css-selector-adjacent-sibling",
                "following-sibling": "css-selector-general-sibling"}
_SIMPLE = {"type-selector": "css-selector-type", "universal": "css-selector-universal",
           "class": "css-selector-class", "id": "css-selector-id", "attribute-start": "css-selector-attribute"}
_PSEUDO_ELEMENTS = ("before", "after", "first-letter", "first-line", "marker", "placeholder")
# Properties whose caniemail page is named after their shorthand or their family, tried in order.
_PROPERTY_PAGES = tuple((re.compile(pattern), page) for pattern, page in (
    (r"border-(start|end)-(start|end)-radius", "css-border-radius-logical"),
    (r"border-(top|bottom)-(left|right)-radius", "css-border-radius"),
    (r"border-(inline|block)", "css-border-inline-block"),
    (r"border-(inline|block)-(start|end)-(color|style|width)", "css-border-inline-block-longhand"),
    (r"border-(inline|block)-(color|style|width|start|end)", "css-border-inline-block-individual"),
    (r"border-(top|right|bottom|left)(-(color|style|width))?|border-(color|style|width)", "css-border"),
    (r"(margin|padding)-(top|right|bottom|left)", r"css-\1"),
    (r"(margin|padding)-(inline|block)", r"css-\1-inline-block"),
    (r"(margin|padding)-(inline|block)-(start|end)", r"css-\1-\2-start-end"),
    (r"outline-(color|style|width)", "css-outline"),
    (r"(animation|transition)-[a-z-]+", r"css-\1"),
    (r"overflow-(x|y)", "css-overflow"),
    (r"grid-template-[a-z]+", "css-grid-template"),
    (r"row-gap|column-gap", "css-gap"),
    (r"columns|column-(fill|rule|rule-color|rule-style|rule-width|span|width)", "css-column-layout-properties"),
    (r"top|right|bottom|left", "css-left-right-top-bottom"),
    (r"block-size", "css-block-inline-size"),
    (r"list-style-type", "css-list-style"),
    (r"text-emphasis-(color|style)", "css-text-emphasis"),
))
_FUNCTIONS = {
    "calc": "css-unit-calc", "min": "css-function-min", "max": "css-function-max", "clamp": "css-function-clamp",
    "light-dark": "css-function-light-dark", "var": "css-variables", "rgb": "css-rgb", "rgba": "css-rgba",
    "linear-gradient": "css-linear-gradient", "repeating-linear-gradient": "css-linear-gradient",
    "radial-gradient": "css-radial-gradient", "repeating-radial-gradient": "css-radial-gradient",
    "conic-gradient": "css-conic-gradient", "repeating-conic-gradient": "css-conic-gradient",
    **{name: "css-modern-color" for name in ("lab", "lch", "oklab", "oklch")},
}
_KEYWORDS = {
    "initial": "css-unit-initial",
    **{name: "css-sytem-ui" for name in ("system-ui", "ui-serif", "ui-sans-serif", "ui-rounded", "ui-monospace")},
    **{name: "css-intrinsic-size" for name in ("fit-content", "min-content", "max-content")},
}
_DISPLAY = {"flex": "css-display-flex", "inline-flex": "css-display-flex", "grid": "css-display-grid",
            "inline-grid": "css-display-grid", "none": "css-display-none"}
_MEDIA_FEATURES = {
    "prefers-color-scheme": "css-at-media-prefers-color-scheme",
    "prefers-reduced-motion": "css-at-media-prefers-reduced-motion",
    "orientation": "css-at-media-orientation", "hover": "css-at-media-hover", "any-hover": "css-at-media-hover",
    "device-pixel-ratio": "css-at-media-device-pixel-ratio", "resolution": "css-at-media-device-pixel-ratio",
}
_AT_RULES = {"@supports": "css-at-supports", "@keyframes": "css-at-keyframes", "@-webkit-keyframes": "css-at-keyframes"}
_VENDOR = re.compile(r"^-(webkit|moz|ms|o)-")
_NUMBER = re.compile(r"^[+-]?[\d.]+(e[+-]?\d+)?")
_TOKENIZER = Tokenizer(doComments=False)


@functools.cache
def _css_parser() -> cssutils.CSSParser:
    # cssutils logs every property it does not know (color-scheme, mso-...); its log level is global,
    # and premailer (inline.py) sets the same CRITICAL level.
    return cssutils.CSSParser(loglevel=logging.CRITICAL, validate=False, parseComments=True)


def stylesheet_uses(css: str) -> Iterator[tuple[str, str]]:
    """(feature id, as written) for every rule of a style sheet."""
    for rule in _css_parser().parseString(css):
        yield from _rule_uses(rule)


def declaration_uses(style: str) -> Iterator[tuple[str, str]]:
    """(feature id, as written) for the declarations of a ``style="..."`` attribute."""
    for declaration in _css_parser().parseStyle(style).getProperties(all=True):
        yield from _property_uses(declaration)


def _rule_uses(rule: Any) -> Iterator[tuple[str, str]]:
    if rule.type == CSSRule.STYLE_RULE:
        selectors = list(rule.selectorList)
        if not selectors:  # cssutils could not parse it (CSS nesting, for one): nothing reliable to say
            return
        if len(selectors) > 1:
            yield "css-selector-grouping", ","
        for selector in selectors:
            yield from _selector_uses(selector.seq)
        for declaration in rule.style.getProperties(all=True):
            yield from _property_uses(declaration)
    elif rule.type == CSSRule.MEDIA_RULE:
        yield "css-at-media", "@media"
        for name in re.findall(r"\(\s*(?:-webkit-)?(?:min-|max-)?([a-z-]+)", rule.media.mediaText.lower()):
            if name in _MEDIA_FEATURES:
                yield _MEDIA_FEATURES[name], f"@media ({name})"
        for inner in rule.cssRules:
            yield from _rule_uses(inner)
    elif rule.type == CSSRule.FONT_FACE_RULE:
        yield "css-at-font-face", "@font-face"
    elif rule.type == CSSRule.IMPORT_RULE:
        yield "css-at-import", "@import"
    elif rule.type == CSSRule.COMMENT:
        yield "css-comments", "/* */"
    elif rule.type == CSSRule.UNKNOWN_RULE and rule.atkeyword.lower() in _AT_RULES:
        yield _AT_RULES[rule.atkeyword.lower()], rule.atkeyword.lower()


def _selector_uses(items: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """Combinators, simple selectors, pseudo-classes and -elements, and chained compound selectors."""
    compound = 0  # simple selectors in the current compound selector: more than one is chaining
    nested = 0  # inside the parentheses of :not(), :has(), :nth-child() ...
    for item in items:
        if item.type in _COMBINATORS:
            compound = 0 if not nested else compound
            yield _COMBINATORS[item.type], {"descendant": "a b"}.get(item.type, f"a {item.value} b")
        elif item.type in _SIMPLE:
            compound += 0 if nested else 1
            if compound == 2 and not nested:
                yield "css-selector-chaining", "chained selector"
            yield _SIMPLE[item.type], str(item.value[1] if isinstance(item.value, tuple) else item.value)
        elif item.type in ("pseudo-class", "pseudo-element", "negation-start"):
            nested += item.value.endswith("(")
            name = item.value.strip(":(").lower()
            kind = "element" if item.type == "pseudo-element" or name in _PSEUDO_ELEMENTS else "class"
            yield f"css-pseudo-{kind}-{name}", item.value.rstrip("(")
        elif item.type in ("function-end", "negation-end"):
            nested -= 1


def _property_uses(declaration: Any) -> Iterator[tuple[str, str]]:
    """The property's own page, then what its value uses: display values, functions, units, keywords."""
    name = _VENDOR.sub("", declaration.name.lower())
    value = declaration.value
    if name.startswith("--"):
        yield "css-variables", name
    elif name == "display":
        shown = value.strip().lower()
        yield _DISPLAY.get(shown, "css-display"), f"display:{shown}"
    else:
        yield _property_page(name), name
    if declaration.priority:
        yield "css-important", "!important"
    yield from _value_uses(value)


def _value_uses(value: str) -> Iterator[tuple[str, str]]:
    """Functions, units and notable keywords of a value, from cssutils' tokens (inside calc() too)."""
    for kind, text, *_ in _TOKENIZER.tokenize(value):
        text = text.lower()
        if kind == "FUNCTION" and text[:-1] in _FUNCTIONS:
            yield _FUNCTIONS[text[:-1]], f"{text})"
        elif kind == "DIMENSION":
            unit = _NUMBER.sub("", text, count=1)
            yield f"css-unit-{unit}", unit
        elif kind == "PERCENTAGE":
            yield "css-unit-percent", "%"
        elif kind == "IDENT" and text in _KEYWORDS:
            yield _KEYWORDS[text], text


def _property_page(name: str) -> str:
    for pattern, page in _PROPERTY_PAGES:
        if match := pattern.fullmatch(name):
            return match.expand(page)
    return f"css-{name}"


# ---------------------------------------------------------------- what the draft contributes


def _draft_uses(body: Body) -> dict[str, tuple[int, int]]:
    """Feature id -> (uses, first draft.md line) in the HTML the draft's Markdown renders to.

    Rendered as the template renders blocks (source items show only their headline), so
    counting these against the MJML's uses tells the draft's part from the template's.
    """
    found: Counter[str] = Counter()
    first: dict[str, int] = {}
    for line, html in _draft_fragments(body, body.draft.body_line):
        for use in read_mjml(f"<mj-text>{html}</mj-text>"):
            found[use.feature] += 1
            first.setdefault(use.feature, line)
    return {key: (count, first[key]) for key, count in found.items()}


def _draft_fragments(body: Body, body_line: int) -> list[tuple[int, str]]:
    """(draft.md line, HTML) of every part of the body the template shows, in reading order."""
    md = markdown()
    renderer = cast(RendererHTML, md.renderer)

    def render(tokens: Sequence[Any], *, inline: bool = False) -> str:
        if inline:
            return renderer.renderInline(list(tokens), md.options, body.env)
        return renderer.render(list(tokens), md.options, body.env)

    fragments = [(section.line, render(section.title_tokens, inline=True)) for section in body.sections]
    for block in (*body.lede, *(block for section in body.sections for block in section.blocks), *body.signoff):
        if block.kind == "source" and block.source is not None:
            fragments.append((block.line, render(block.source.headline, inline=True)))
        else:
            fragments.append((block.line, render(block.tokens)))
    if body.footnotes:
        lines = [token.map[0] for token in body.footnotes if token.map]
        fragments.append((body_line + min(lines, default=0), render(body.footnotes)))
    return sorted(fragments, key=lambda fragment: fragment[0])
