"""Size checks: Gmail clips a message over about 102 KB and drops a <style> block over 16 KB."""

from __future__ import annotations

import re

from pipeline.checks.report import Problem
from pipeline.config import Settings
from pipeline.render import Edition

STYLE_LIMIT = 16 * 1024
WARN_FROM = 0.9
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)


def check_size(edition: Edition, settings: Settings) -> list[Problem]:
    """An error over max_html_bytes or for an oversized <style>; a warning from 90% of the limit."""
    limit = settings.checks.max_html_bytes
    size = len(edition.email_html.encode("utf-8"))
    problems = []
    if size > limit:
        problems.append(Problem(check="size", severity="error", location="email.html",
                                message=f"email.html is {size:,} bytes, over max_html_bytes ({limit:,}): "
                                        "Gmail clips it and hides the rest, footer included"))
    elif size >= WARN_FROM * limit:
        problems.append(Problem(check="size", severity="warning", location="email.html",
                                message=f"email.html is {size:,} bytes, {size / limit:.0%} of max_html_bytes "
                                        f"({limit:,})"))
    for number, block in enumerate(_STYLE.findall(edition.email_html), start=1):
        length = len(block.encode("utf-8"))
        if length > STYLE_LIMIT:
            problems.append(Problem(check="size", severity="error", location="email.html",
                                    message=f"<style> block {number} is {length:,} bytes: Gmail drops blocks over "
                                            f"{STYLE_LIMIT:,}"))
    return problems
