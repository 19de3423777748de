"""Text that must stay on one line: a subject, a display name, an address, a greeting.

Such text reaches mail headers, where a carriage return or line feed starts a
new header (``Subject: Hi\\r\\nBcc: …``), and terminals and spreadsheets, where
other control characters do mischief. The rule is Unicode's: a character of the
categories Cc (C0 and C1 controls, DEL), Zl and Zp (the line and paragraph
separators U+2028 and U+2029) does not belong on a line.
"""

from __future__ import annotations

import unicodedata

_BREAKING = ("Cc", "Zl", "Zp")


def breaking_character(text: str) -> str | None:
    """The first control or line-breaking character of ``text``, as ``U+000D``; None when there is none."""
    for char in text:
        if unicodedata.category(char) in _BREAKING:
            return f"U+{ord(char):04X}"
    return None


def one_line(text: str) -> str:
    """``text`` itself; ValueError naming the first control or line-breaking character, if any."""
    found = breaking_character(text)
    if found is not None:
        raise ValueError(f"must be one line without control characters (found {found})")
    return text
