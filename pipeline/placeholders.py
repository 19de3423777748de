"""Per-recipient placeholders: written once into the built edition, filled at send time.

The edition is compiled and inlined once; each message then only substitutes
these few values, which keeps a send of 100,000 messages cheap.
"""

from __future__ import annotations

import html
import re

NAME = "name"
UNSUBSCRIBE_URL = "unsubscribe_url"
VIEW_URL = "view_url"
NAMES = (NAME, UNSUBSCRIBE_URL, VIEW_URL)
NAME_FALLBACK = "reader"

PATTERN = re.compile(r"\{\{\s*(" + "|".join(NAMES) + r")\s*\}\}")
_SENTINEL = re.compile(r"newsletter-placeholder-(" + "|".join(NAMES) + r")-end")


def placeholder(name: str) -> str:
    """The text written into the edition for ``name``, e.g. ``{{ unsubscribe_url }}``."""
    return f"{{{{ {name} }}}}"


def protect(text: str) -> str:
    """Swap placeholders for URL-safe words, so HTML tools cannot percent-encode them."""
    return PATTERN.sub(lambda match: f"newsletter-placeholder-{match[1]}-end", text)


def restore(text: str) -> str:
    """Undo ``protect``."""
    return _SENTINEL.sub(lambda match: placeholder(match[1]), text)


def fill(text: str, values: dict[str, str], *, escape: bool) -> str:
    """Substitute per-recipient values; HTML-escape them for the HTML part."""
    def value(match: re.Match[str]) -> str:
        found = values.get(match[1], "")
        return html.escape(found, quote=True) if escape else found

    return PATTERN.sub(value, text)
