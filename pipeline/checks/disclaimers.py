"""Required text: every disclaimer, the postal address and a visible unsubscribe link.

Each must be *visible* in email.html — not inside a hidden element, a comment
or an attribute — and present in email.txt. Case and white space aside, the
text must appear verbatim.
"""

from __future__ import annotations

from pipeline import placeholders
from pipeline.checks.report import Problem
from pipeline.config import Settings
from pipeline.htmltext import visible_links, visible_text
from pipeline.render import Edition


def _normal(text: str) -> str:
    return " ".join(text.split()).casefold()


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return f"“{text}”" if len(text) <= limit else f"“{text[: limit - 1]}…”"


def check_disclaimers(edition: Edition, settings: Settings) -> list[Problem]:
    """An error for each required text missing from the visible HTML or from the text part."""
    html_text = _normal(visible_text(edition.email_html))
    plain = _normal(edition.email_txt)
    required = [("required disclaimer", text) for text in settings.checks.required_disclaimers]
    required.append(("postal address", settings.publication.postal_address))
    problems = []
    for label, text in required:
        for part, haystack in (("email.html", html_text), ("email.txt", plain)):
            if _normal(text) not in haystack:
                where = "visible text of email.html" if part == "email.html" else "email.txt"
                problems.append(Problem(check="disclaimers", severity="error",
                                        message=f"{label} missing from the {where}: {_short(text)}", location=part))
    return problems + _unsubscribe(edition)


def _unsubscribe(edition: Edition) -> list[Problem]:
    token = placeholders.placeholder(placeholders.UNSUBSCRIBE_URL)
    problems = []
    if not any(href.strip() == token for href, _ in visible_links(edition.email_html)):
        problems.append(Problem(check="disclaimers", severity="error",
                                message="no visible unsubscribe link (an <a href=\"{{ unsubscribe_url }}\">)",
                                location="email.html"))
    if token not in edition.email_txt:
        problems.append(Problem(check="disclaimers", severity="error",
                                message="no unsubscribe address ({{ unsubscribe_url }}) in the text part",
                                location="email.txt"))
    return problems
