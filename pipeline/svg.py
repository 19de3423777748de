"""SVG images: telling one apart, and refusing one that carries active content.

An SVG file is a document, not only a picture: it can hold ``<script>``, event
handlers (``onload=``), ``<foreignObject>`` (HTML inside the image) and
``javascript:`` links, which run when the published copy under
``asset_base_url`` is opened. A draft's SVG is parsed without resolving
entities, loading a DTD or touching the network, with libxml2's limits on huge
documents kept, and any of those is a reason to refuse it (``active_content``).
Gmail and Outlook do not show SVG at all, so the checks report every SVG image
as well (``checks/images.py``).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from lxml import etree

SUFFIXES = (".svg", ".svgz")
_SCRIPTED = {"script": "a <script> element", "foreignobject": "a <foreignObject> element",
             "handler": "a <handler> element", "listener": "a <listener> element"}
_SCHEMES = ("javascript:", "vbscript:", "data:text/html")
_IGNORED = re.compile(r"[\s\x00-\x1f]+")  # browsers ignore these inside a scheme: "java\tscript:"


def is_svg_address(src: str) -> bool:
    """Whether an image address names an SVG file, by its path's ending."""
    return urlsplit(src).path.lower().endswith(SUFFIXES)


def is_svg_file(file: Path) -> bool:
    """Whether a local image is SVG: by its name, or by its content (XML text, where a raster image is binary)."""
    if file.suffix.lower() in SUFFIXES:
        return True
    with file.open("rb") as stream:
        head = stream.read(256)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<")


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, load_dtd=False, dtd_validation=False, no_network=True,
                           huge_tree=False)


def active_content(file: Path) -> str | None:
    """What makes this SVG unsafe to publish (``"has a <script> element"``), or None when nothing does."""
    try:
        tree = etree.fromstring(file.read_bytes(), _parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        return f"is not well-formed SVG ({str(exc).splitlines()[0]})"
    root = tree.getroot()
    if not isinstance(root.tag, str) or etree.QName(root).localname != "svg":
        return "is not an SVG image (its first element is not <svg>)"
    if tree.docinfo.internalDTD is not None:
        return "declares a DTD of its own (entities can hide content)"
    if any(isinstance(node, etree._ProcessingInstruction) for node in root.itersiblings(preceding=True)):
        return "has an XML processing instruction (a style sheet could run code)"
    for node in root.iter():
        reason = _node_problem(node)
        if reason:
            return reason
    return None


def _node_problem(node: etree._Element) -> str | None:
    if isinstance(node, etree._Entity):
        return f"uses the entity &{node.name};"
    if isinstance(node, etree._ProcessingInstruction):
        return "has an XML processing instruction (a style sheet could run code)"
    if not isinstance(node.tag, str):  # a comment
        return None
    name = etree.QName(node).localname.lower()
    if name in _SCRIPTED:
        return f"has {_SCRIPTED[name]}"
    texts = [(etree.QName(key).localname, value) for key, value in node.attrib.items()]
    if name == "style":
        texts.append(("<style>", node.text or ""))
    for key, value in texts:
        if key.lower().startswith("on"):
            return f"has an event handler ({key}=)"
        flat = _IGNORED.sub("", value).lower()
        scheme = next((scheme for scheme in _SCHEMES if scheme in flat), None)
        if scheme:
            return f"refers to {scheme} (in {key})"
    return None
