"""Per-recipient placeholders: written once into the built edition, filled at send time.

The edition is compiled and inlined once; each message then only substitutes
these few values, which keeps a send of 100,000 messages cheap. A send splits
each part once at its placeholders (``template``): constant pieces and the
slots between them, so that a provider can encode every constant piece once
(a JSON string, a quoted-printable line) and make each recipient's message by
joining those with the recipient's own values, encoded alike. A value is never
scanned for placeholders: a name that reads ``{{ name }}`` stays as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

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
    return Template.of(text).fill(values, escape=escape)  # once: not kept in the per-send cache


def shown(values: dict[str, str], *, escape: bool) -> dict[str, str]:
    """Every placeholder's value as a part shows it: HTML-escaped for the HTML part; missing ones empty."""
    if escape:
        return {name: html.escape(values.get(name, ""), quote=True) for name in NAMES}
    return {name: values.get(name, "") for name in NAMES}


@dataclass(frozen=True, slots=True)
class Template:
    """A text split at its placeholders: ``pieces[0] slot[0] pieces[1] ... slot[-1] pieces[-1]``."""

    pieces: tuple[str, ...]  # constant text, one more than the slots
    slots: tuple[str, ...]  # placeholder names, in order

    @classmethod
    def of(cls, text: str) -> Template:
        """``text`` split at its placeholders."""
        parts = PATTERN.split(text)  # the group: text, name, text, name, ..., text
        return cls(pieces=tuple(parts[0::2]), slots=tuple(parts[1::2]))

    def fill(self, values: dict[str, str], *, escape: bool) -> str:
        """The text with the recipient's values in its slots (HTML-escaped for the HTML part)."""
        if not self.slots:
            return self.pieces[0]
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            value = values.get(slot, "")
            out += (html.escape(value, quote=True) if escape else value, piece)
        return "".join(out)

    def encoded(self, encode: Callable[[str], bytes]) -> Encoded:
        """The template with every constant piece encoded once by ``encode`` (which must encode character by
        character, like a JSON string's escapes, so that joined pieces encode the joined text)."""
        return Encoded(pieces=tuple(encode(piece) for piece in self.pieces), slots=self.slots, encode=encode,
                       used=frozenset(self.slots))


@dataclass(frozen=True, slots=True)
class Encoded:
    """A ``Template`` whose constant pieces are already encoded; ``render`` encodes only a recipient's values."""

    pieces: tuple[bytes, ...]
    slots: tuple[str, ...]
    encode: Callable[[str], bytes]
    used: frozenset[str] = frozenset()  # the slots' names, each encoded once per recipient

    def render(self, values: dict[str, str], *, escape: bool) -> bytes:
        return self.pieces[0] if not self.slots else b"".join(self.chunks(values, escape=escape))

    def chunks(self, values: dict[str, str], *, escape: bool) -> list[bytes]:
        """What ``render`` joins: the constant pieces (shared, not copied) and the recipient's encoded values,
        for a caller that joins many messages into one request body at once."""
        if not self.slots:
            return [self.pieces[0]]
        encode = self.encode
        if escape:
            mine = {slot: encode(html.escape(values.get(slot, ""), quote=True)) for slot in self.used}
        else:
            mine = {slot: encode(values.get(slot, "")) for slot in self.used}
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out += (mine[slot], piece)
        return out


@lru_cache(maxsize=64)  # a send's few parts (and, for quoted-printable, their placeholder lines), split once
def template(text: str) -> Template:
    """``text`` split at its placeholders, once per text."""
    return Template.of(text)
