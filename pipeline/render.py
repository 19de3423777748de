"""Render a draft's parsed body into an ``Edition``: the email HTML, its plain-text part and the web page.

    Body ─▶ Jinja2 (StrictUndefined) ─▶ MJML (mjml-python) ─▶ HTML ─▶ premailer (inline.py) ─▶ Edition

The MJML is compiled and the CSS inlined once per edition; per-recipient values
stay as placeholders (``placeholders.py``) filled at send time. The web page is
the same template made a page: MJML's email wrapper becomes its ``<main>``. The
Edition carries the Body it was rendered from, unchanged (rendering writes
nothing to its tokens), so the checks judge the very content that was rendered.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import jinja2
from lxml import html as lxml_html
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markupsafe import Markup
from mjml import mjml2html

from pipeline import placeholders, urls
from pipeline.config import Settings
from pipeline.content import Block, Body, Image, Section, markdown, plain_text, shown_as
from pipeline.draft import Draft
from pipeline.errors import RenderError
from pipeline.inline import DOCTYPE, inline_css, serialize
from pipeline.plaintext import TextRenderer

EMAIL_TEMPLATE = "email.mjml.j2"
TEXT_TEMPLATE = "email.txt.j2"


@dataclass(frozen=True, kw_only=True)
class Link:
    """A link of the email, with the part of the edition it sits in."""

    href: str
    text: str
    section: str


@dataclass(frozen=True, kw_only=True)
class Edition:
    """A built edition: what every subscriber receives, before personalisation."""

    subject: str
    preheader: str
    email_html: str
    email_txt: str
    web_html: str
    mjml: str  # the MJML source of the email, before compiling: what the compat check reads
    links: tuple[Link, ...]
    body: Body = field(repr=False)  # what it was rendered from: the checks read it

    @property
    def draft(self) -> Draft:
        return self.body.draft

    @property
    def name(self) -> str:
        return self.draft.name

    @property
    def images(self) -> tuple[Image, ...]:
        return self.body.images

    @property
    def content_hash(self) -> str:
        """sha256 of everything a subscriber could see: subject and the three outputs."""
        digest = hashlib.sha256()
        for part in (self.subject, self.preheader, self.email_html, self.email_txt, self.web_html):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
        return digest.hexdigest()

    def manifest(self) -> dict[str, Any]:
        """The edition's facts for scripts and later stages (manifest.json)."""
        return {
            "edition": self.name,
            "subject": self.subject,
            "preheader": self.preheader,
            "date": self.draft.date.isoformat(),
            "author": self.draft.meta.author,
            "audience": self.draft.meta.audience,
            "template": self.draft.meta.template,
            "send_at": self.draft.meta.send_at.isoformat() if self.draft.meta.send_at else None,
            "content_hash": self.content_hash,
            "sizes": {
                "email.html": len(self.email_html.encode("utf-8")),
                "email.txt": len(self.email_txt.encode("utf-8")),
                "web.html": len(self.web_html.encode("utf-8")),
            },
            "links": [{"href": link.href, "text": link.text, "section": link.section} for link in self.links],
            "images": [
                {"src": image.src, "alt": image.alt, "width": image.width, "height": image.height,
                 "line": image.line, "local": image.file is not None}
                for image in self.images
            ],
        }


def render_edition(body: Body, settings: Settings) -> Edition:
    """Build the edition of ``body`` with the template its draft's front matter names."""
    draft = body.draft
    templates = _templates(draft, settings)
    context = _context(draft, body, settings)
    mjml_source, email_html = _compile(templates, context, web=False)
    web_page = _as_page(_compile(templates, context, web=True)[1])
    web_html = placeholders.fill(web_page, {placeholders.NAME: placeholders.NAME_FALLBACK}, escape=True)
    email_txt = _render(templates, TEXT_TEMPLATE, context)
    return Edition(
        subject=draft.meta.subject,
        preheader=draft.meta.preheader,
        email_html=email_html,
        email_txt=re.sub(r"\n{3,}", "\n\n", email_txt).strip() + "\n",
        web_html=web_html,
        mjml=mjml_source,
        links=_links(email_html),
        body=body,
    )


def _templates(draft: Draft, settings: Settings) -> jinja2.Environment:
    folder = settings.paths.templates / draft.meta.template
    if not folder.is_dir():
        raise RenderError(f"unknown template {draft.meta.template!r}: no folder {folder}",
                          path=draft.source, line=draft.key_lines.get("template"))
    return _environment(folder)


@functools.lru_cache(maxsize=16)
def _environment(folder: Path) -> jinja2.Environment:
    """One Jinja environment per template folder: compiled templates are reused (and
    recompiled when a file changes, as FileSystemLoader checks modification times)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["mjml", "html", "mjml.j2", "html.j2"], default=False),
        keep_trailing_newline=True,
    )


def _render(templates: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template; any Jinja error becomes a RenderError with the template file and line."""
    try:
        return templates.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"template syntax error: {exc.message}", path=exc.filename or name, line=exc.lineno) from None
    except jinja2.TemplateNotFound as exc:
        folder = templates.loader.searchpath[0] if isinstance(templates.loader, jinja2.FileSystemLoader) else ""
        raise RenderError(f"template file not found: {exc.name}", path=folder) from None
    except jinja2.UndefinedError as exc:
        path, line = _template_frame(exc, name)
        raise RenderError(f"undefined template variable: {exc.message}", path=path, line=line) from None


def _template_frame(exc: BaseException, name: str) -> tuple[str, int | None]:
    """The innermost traceback frame that is a template file (Jinja rewrites them so)."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename.endswith((".j2", ".mjml", ".html", ".txt")):
            return frame.filename, frame.lineno
    return name, None


def _compile(templates: jinja2.Environment, context: dict[str, Any], *, web: bool) -> tuple[str, str]:
    """The MJML source of one variant and its compiled, CSS-inlined HTML."""
    mjml_source = _render(templates, EMAIL_TEMPLATE, {**context, "web": web})
    try:
        compiled = mjml2html(mjml_source)
    except Exception as exc:  # mrml raises a plain ValueError-like error with its parser message
        raise RenderError(f"MJML compile failed: {exc}", path=EMAIL_TEMPLATE) from None
    return mjml_source, inline_css(compiled)


def _as_page(html: str) -> str:
    """The archive page as a web page, not an email: MJML's wrapper (``role="article"``,
    ``aria-roledescription="email"``) becomes the ``<main>`` landmark and the footer section
    its ``<footer>`` after it."""
    document = lxml_html.document_fromstring(html.encode("utf-8"))
    wrapper = document.body.find("div[@aria-roledescription='email']")
    if wrapper is None:
        return html
    wrapper.tag = "main"
    for name in ("role", "aria-roledescription", "aria-label"):
        wrapper.attrib.pop(name, None)
    for section in wrapper.xpath("./div[.//*[@data-part='footer']]"):
        footer = lxml_html.Element("footer")
        wrapper.addnext(footer)
        footer.append(section)
    return f"{DOCTYPE}\n{serialize(document)}"


class _Views:
    """Turns content parts into what templates show, HTML and text from the same tokens."""

    def __init__(self, draft: Draft, body: Body, settings: Settings):
        self.md = markdown()
        self.renderer = cast(RendererHTML, self.md.renderer)
        self.env = body.env
        self.text = TextRenderer()
        asset_base = f"{settings.publication.asset_base_url}/{draft.name}"
        published = {image.src: f"{asset_base}/{image.src.lstrip('./')}" for image in body.images if image.file}
        image_rule = self.renderer.rules["image"]

        def image(renderer: Any, tokens: Sequence[Token], index: int, options: Any, env: Any) -> str:
            # A local image is shown at its published address; the Body keeps the draft's own src.
            src = str(tokens[index].attrGet("src") or "")
            if src in published:
                tokens = shown_as(tokens, index, src=published[src])
            return str(image_rule(tokens, index, options, env))

        self.md.add_render_rule("image", image)
        # Language spans around CJK runs (content.py): rendered as ordinary <span lang=..> tags.
        self.md.add_render_rule("cjk_open", lambda renderer, tokens, index, options, env: renderer.renderToken(
            tokens, index, options, env))
        self.md.add_render_rule("cjk_close", lambda renderer, tokens, index, options, env: "</span>")

    def html(self, tokens: tuple[Token, ...] | list[Token]) -> Markup:
        return Markup(self.renderer.render(list(tokens), self.md.options, self.env))

    def inline_html(self, tokens: tuple[Token, ...]) -> Markup:
        return Markup(self.renderer.renderInline(list(tokens), self.md.options, self.env))

    def block(self, block: Block) -> dict[str, Any]:
        view: dict[str, Any] = {"kind": block.kind, "line": block.line, "source": None}
        if block.source is None:
            prefix = "  | " if block.kind == "comment" else ""
            return {**view, "html": self.html(block.tokens), "text": self.text.blocks(block.tokens, prefix)}
        source = block.source
        headline_text = self.text.inline(source.headline)
        reference = f" [{self.text.reference(source.url)}]" if source.url else ""
        meta = " · ".join(part for part in (source.outlet, source.date) if part)
        heading = block.tokens[0]
        view["source"] = {
            "tag": heading.tag,
            "lang": heading.attrGet("lang"),
            "headline_html": self.inline_html(source.headline),
            "headline_text": plain_text(source.headline),
            "url": source.url,
            "outlet": source.outlet,
            "date": source.date,
        }
        text = f"{headline_text}{reference}" + (f"\n{meta}" if meta else "")
        return {**view, "html": self.html(block.tokens), "text": text}

    def section(self, section: Section) -> dict[str, Any]:
        return {
            "number": section.number,
            "title": section.title,
            "title_html": self.inline_html(section.title_tokens),
            "anchor": section.anchor,
            "line": section.line,
            "blocks": [self.block(block) for block in section.blocks],
        }


def _context(draft: Draft, body: Body, settings: Settings) -> dict[str, Any]:
    """Everything the templates see. Reading order matters: text links are numbered as met."""
    views = _Views(draft, body, settings)
    lede = [views.block(block) for block in body.lede]
    sections = [views.section(section) for section in body.sections]
    footnotes_text = views.text.blocks(body.footnotes)
    signoff = [views.block(block) for block in body.signoff]
    publication = settings.publication
    return {
        "publication": {
            "name": publication.name,
            "postal_address": publication.postal_address,
            "footer": publication.footer,
            "base_url": publication.base_url,
            "language": publication.language,
        },
        "edition": {
            "name": draft.name,
            "subject": draft.meta.subject,
            "preheader": draft.meta.preheader,
            "author": draft.meta.author,
            "date": draft.date,
            "date_text": _long_date(draft.date),
            "web_url": urls.edition(settings, draft.name),
        },
        "lede_before_toc": lede[: body.toc_after],
        "lede_after_toc": lede[body.toc_after :],
        "toc": [{key: s[key] for key in ("number", "title", "anchor")} for s in sections] if body.has_toc else [],
        "sections": sections,
        "footnotes_html": views.html(body.footnotes) if body.footnotes else Markup(""),
        "footnotes_text": footnotes_text,
        "signoff": signoff,
        "references": views.text.reference_list(),
        "placeholder": {name: placeholders.placeholder(name) for name in placeholders.NAMES},
    }


def _long_date(day: dt.date) -> str:
    return f"{day.day} {day:%B %Y}"


def _links(email_html: str) -> tuple[Link, ...]:
    """Every link of the email in order, with the edition part (or section title) it sits in."""
    document = lxml_html.document_fromstring(email_html.encode("utf-8"))
    links: list[Link] = []
    part = "header"
    for element in document.iter():
        if not isinstance(element.tag, str):
            continue
        marker = element.get("data-part")
        if marker:
            part = marker
        if element.tag == "h2" and element.get("id"):
            part = " ".join(element.text_content().split())
        if element.tag == "a" and element.get("href") is not None:
            text = " ".join(element.text_content().split())
            links.append(Link(href=element.get("href"), text=text, section=part))
    return tuple(links)
