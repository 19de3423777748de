"""Image checks: alt text, a declared width, a sensible file size, a published address, no SVG.

A relative ``src`` left in the email would show as a broken image in every
inbox: local images must be published under ``asset_base_url``. Gmail and
Outlook do not show SVG images at all, so every SVG is an error.
"""

from __future__ import annotations

import re

from lxml import html as lxml_html

from pipeline.checks.report import Problem
from pipeline.config import Settings
from pipeline.content import Body, Image
from pipeline.render import Edition
from pipeline.svg import is_svg_address, is_svg_file

_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def _problem(severity: str, message: str, location: str) -> Problem:
    return Problem(check="images", severity=severity, message=message, location=location)  # type: ignore[arg-type]


def check_images(edition: Edition, settings: Settings) -> list[Problem]:
    """Problems with the images of email.html and the draft's image files."""
    body = edition.body
    problems = _files(body, settings) + _svg(body)
    lines = {f"{settings.publication.asset_base_url}/{edition.name}/{image.src.lstrip('./')}": image.line
             for image in body.images if image.file is not None}
    lines.update({image.src: image.line for image in body.images if image.file is None})
    document = lxml_html.document_fromstring(edition.email_html.encode("utf-8"))
    for image in document.iter("img"):
        src = image.get("src") or ""
        location = f"draft.md:{lines[src]}" if src in lines else "template"
        problems += _one_image(image, src, location)
    return problems


def _one_image(image, src: str, location: str) -> list[Problem]:
    problems = []
    if not src or not _ABSOLUTE.match(src):
        problems.append(_problem("error", f"image src {src!r} is relative: publish it under asset_base_url",
                                 location))
    alt = image.get("alt")
    linked = any(ancestor.tag == "a" for ancestor in image.iterancestors())
    if alt is None:
        problems.append(_problem("error", f"image {src} has no alt text", location))
    elif not alt.strip() and linked:
        problems.append(_problem("error", f"linked image {src} has an empty alt: say where the link goes",
                                 location))
    elif not alt.strip():
        problems.append(_problem("warning", f"image {src} has an empty alt (fine only if it is decorative)",
                                 location))
    if not image.get("width"):
        problems.append(_problem("warning", f"image {src} declares no width (Outlook shows it at full size)",
                                 location))
    return problems


def _files(body: Body, settings: Settings) -> list[Problem]:
    problems = []
    limit = settings.checks.max_image_kb
    for image in body.images:
        if image.file is None:
            continue
        location = f"draft.md:{image.line}"
        if not image.file.is_file():
            problems.append(_problem("error", f"image file not found: {image.src}", location))
        elif image.file.stat().st_size > limit * 1024:
            size = image.file.stat().st_size // 1024
            problems.append(_problem("warning", f"image {image.src} is {size} KB (over {limit} KB): "
                                                "slow on mobile data", location))
    return problems


def _svg(body: Body) -> list[Problem]:
    return [_problem("error", f"image {image.src}: SVG is not shown by Gmail or Outlook; use PNG or JPEG",
                     f"draft.md:{image.line}") for image in body.images if _is_svg(image)]


def _is_svg(image: Image) -> bool:
    if image.file is None:
        return is_svg_address(image.src)
    return image.file.is_file() and is_svg_file(image.file)
