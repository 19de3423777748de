"""Content checks: what an editor leaves behind by mistake.

Left-over placeholders (TK, TODO, XXX, lorem ipsum), empty sections, a
paragraph pasted twice in a row, and a missing preheader or an overlong subject.
"""

from __future__ import annotations

import re

from pipeline.checks.report import Problem
from pipeline.content import Block, Body, plain_text
from pipeline.draft import Draft

LEFTOVERS = re.compile(r"\b(TK|TODO|XXX)\b|lorem ipsum", re.IGNORECASE)
# TK, TODO and XXX count only in capitals: "todo" is an ordinary word in prose.
_CAPITALS = re.compile(r"\b(TK|TODO|XXX)\b")
MAX_SUBJECT = 100


def check_wording(body: Body) -> list[Problem]:
    """Every content problem of the draft, located at its draft.md line."""
    draft = body.draft
    problems = _leftovers(draft)
    problems += _empty_sections(draft, body)
    problems += _repeats(draft, body)
    problems += _subject_and_preheader(draft)
    return problems


def _problem(severity: str, message: str, location: str) -> Problem:
    return Problem(check="content", severity=severity, message=message, location=location)  # type: ignore[arg-type]


def _leftovers(draft: Draft) -> list[Problem]:
    problems = []
    for number, line in enumerate(draft.lines, start=1):
        for match in LEFTOVERS.finditer(line):
            word = match.group()
            if word.lower() != "lorem ipsum" and not _CAPITALS.fullmatch(word):
                continue
            problems.append(_problem("error", f"left-over placeholder {word!r}", f"draft.md:{number}"))
    return problems


def _empty_sections(draft: Draft, body: Body) -> list[Problem]:
    return [
        _problem("error", f"section {section.number}) {section.title!r} is empty", f"draft.md:{section.line}")
        for section in body.sections
        if not section.blocks
    ]


def _block_text(block: Block) -> str:
    inline = [token for token in block.tokens if token.type == "inline"]
    return " ".join(" ".join(plain_text(token.children or []).split()) for token in inline).casefold()


def _repeats(draft: Draft, body: Body) -> list[Problem]:
    problems = []
    runs = [body.lede, *(section.blocks for section in body.sections), body.signoff]
    for blocks in runs:
        for before, after in zip(blocks, blocks[1:], strict=False):
            text = _block_text(after)
            if len(text.split()) >= 3 and text == _block_text(before):
                problems.append(_problem("error", "paragraph repeated twice in a row", f"draft.md:{after.line}"))
    return problems


def _subject_and_preheader(draft: Draft) -> list[Problem]:
    problems = []
    subject_line = f"draft.md:{draft.key_lines.get('subject', 1)}"
    if not draft.meta.subject.strip():
        problems.append(_problem("error", "the subject is empty", subject_line))
    elif len(draft.meta.subject) > MAX_SUBJECT:
        problems.append(_problem("warning", f"the subject is {len(draft.meta.subject)} characters long; "
                                            f"inboxes cut it around {MAX_SUBJECT}", subject_line))
    if not draft.meta.preheader.strip():
        problems.append(_problem("warning", "no preheader: inboxes will show the first words of the email instead",
                                 "draft.md:1"))
    return problems
