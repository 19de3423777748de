"""Read an editor's draft directory into a ``Draft`` record.

    drafts/2024-02-22-china-russia-report/
      draft.md       YAML front matter between --- lines, then the Markdown body
      images/        optional; referenced from the body as images/x.png

Every problem is a ``DraftError`` naming ``draft.md`` and, where there is one,
the line: a typo in the front matter must not pass silently.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from pipeline.errors import DraftError

DRAFT_FILE = "draft.md"
_FENCE = re.compile(r"^---[ \t]*$", re.MULTILINE)
_DATED_FOLDER = re.compile(r"^(\d{4}-\d{2}-\d{2})")


class FrontMatter(BaseModel):
    """The editor's settings for one edition."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    preheader: str = ""
    author: str = ""
    date: dt.date | None = None
    audience: str | None = None
    template: str = "default"
    send_at: dt.datetime | None = None

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value) or value.startswith("."):
            raise ValueError(f"must be a folder name under templates/, got {value!r}")
        return value


@dataclass(frozen=True, kw_only=True)
class Draft:
    """One draft directory, read and validated: the input of rendering."""

    name: str
    folder: Path
    meta: FrontMatter
    date: dt.date
    body: str
    body_line: int  # the line of draft.md on which the body starts
    key_lines: dict[str, int] = field(default_factory=dict, compare=False)  # front-matter key -> line

    @property
    def source(self) -> Path:
        return self.folder / DRAFT_FILE

    @classmethod
    def from_folder(cls, folder: Path) -> Draft:
        return read_draft(folder)


def read_draft(folder: Path) -> Draft:
    """Read ``folder/draft.md``; raise DraftError naming the file and line on bad input."""
    folder = Path(folder)
    source = folder / DRAFT_FILE
    if not folder.is_dir():
        raise DraftError("draft folder not found", path=folder)
    if not source.is_file():
        raise DraftError(f"missing {DRAFT_FILE} (a draft folder holds draft.md and optional images/)", path=source)
    text = _read_text(source)
    front, body, body_line = _split_front_matter(text, source)
    meta = _parse_front_matter(front, source)
    if not body.strip():
        raise DraftError("the body is empty: write the edition below the front matter", path=source, line=body_line)
    return Draft(
        name=folder.resolve().name,
        folder=folder,
        meta=meta,
        date=_edition_date(meta, folder, source),
        body=body,
        body_line=body_line,
        key_lines={key: _key_line(front, key) for key in meta.model_fields_set},
    )


def _read_text(source: Path) -> str:
    data = source.read_bytes()
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DraftError(f"not UTF-8 text (byte {exc.start}); save the file as UTF-8", path=source, line=line) from None


def _split_front_matter(text: str, source: Path) -> tuple[str, str, int]:
    """Return (front matter, body, line where the body starts)."""
    if not text.startswith("---"):
        raise DraftError("missing front matter: start the file with --- and a subject: line", path=source, line=1)
    opening = _FENCE.match(text)
    closing = _FENCE.search(text, opening.end()) if opening else None
    if not opening or not closing:
        raise DraftError("front matter is not closed by a --- line", path=source, line=1)
    front = text[opening.end() + 1 : closing.start()]
    body_line = text.count("\n", 0, closing.end()) + 2
    return front, text[closing.end() :].removeprefix("\n"), body_line


def _parse_front_matter(front: str, source: Path) -> FrontMatter:
    try:
        raw = yaml.safe_load(front)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DraftError(f"malformed YAML front matter: {problem}", path=source, line=line) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise DraftError("front matter must be key: value lines", path=source, line=2)
    try:
        return FrontMatter.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        raise DraftError(_describe(error, key), path=source, line=_key_line(front, key)) from None


def _describe(error: dict[str, Any], key: str) -> str:
    known = ", ".join(FrontMatter.model_fields)
    if error["type"] == "extra_forbidden":
        return f"unknown front-matter key {key!r} (known: {known})"
    if error["type"] == "missing":
        return f"missing required front-matter key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"front-matter key {key!r}: {message}"


def _key_line(front: str, key: str) -> int:
    for number, line in enumerate(front.splitlines(), start=2):
        if re.match(rf"^{re.escape(key)}\s*:", line):
            return number
    return 1


def _edition_date(meta: FrontMatter, folder: Path, source: Path) -> dt.date:
    if meta.date is not None:
        return meta.date
    match = _DATED_FOLDER.match(folder.resolve().name)
    if match:
        try:
            return dt.date.fromisoformat(match[1])
        except ValueError:
            pass
    raise DraftError("no edition date: add 'date: YYYY-MM-DD' or name the folder YYYY-MM-DD-slug", path=source, line=1)
