"""Read an editor's draft directory into a ``Draft`` record.

    drafts/2024-02-22-china-russia-report/
      draft.md       YAML front matter between --- lines, then the Markdown body
      images/        optional; referenced from the body as images/x.png

Every problem is a ``DraftError`` naming ``draft.md`` and, where there is one,
the line: a typo in the front matter must not pass silently. The front matter is
read by a strict YAML loader: a key given twice, a date that does not exist
(``2024-02-30``) and nesting deeper than any front matter needs are errors, and
the subject, preheader and author must each be one line (they reach mail headers).
``archive`` must be a YAML boolean (``true`` or ``false``): a quoted string or a number
is an error, not a guess at whether to publish the edition.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from pydantic_core import ErrorDetails

from pipeline.errors import DraftError
from pipeline.oneline import one_line
from pipeline.when import out_of_reach

DRAFT_FILE = "draft.md"
_FENCE = re.compile(r"^---[ \t]*$", re.MULTILINE)
_DATED_FOLDER = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_TOP_KEY = re.compile(r"^([^\s:#][^:]*?)\s*:")
_NEWLINE = re.compile(r"\r\n?")  # a line end as Python's text files read it (universal newlines)
MAX_DEPTH = 16  # nesting levels of the front matter; more is a mistake (or an attack on the parser's stack)
FIRST_LINE = 2  # the line of draft.md where the front matter starts, after the opening ---


class _Refused(Exception):
    """The front-matter loader refuses a node; ``line`` is the node's line in draft.md."""

    def __init__(self, message: str, mark: yaml.Mark, *, key: str | None = None):
        super().__init__(message)
        self.line, self.key = mark.line + FIRST_LINE, key


class _FrontMatterLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: no key twice, only real dates, nesting at most MAX_DEPTH deep."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # The composer recurses once per level: a few thousand '[' would exhaust the stack.
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeConstructor says so
                continue
            if earlier is not key_node:
                raise _twice(key, earlier.start_mark, key_node.start_mark)
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> dt.date | dt.datetime:
        # PyYAML raises a bare ValueError for 2024-02-30, not a YAMLError.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise _Refused(f"{node.value} is not a real date or time ({exc})", node.start_mark) from None


def _twice(key: Any, first: yaml.Mark, second: yaml.Mark) -> _Refused:
    lines = sorted({first.line + FIRST_LINE, second.line + FIRST_LINE})
    where = f"lines {lines[0]} and {lines[1]}" if len(lines) == 2 else f"line {lines[0]}"
    if second.column == 0:  # a key of the front matter itself, not of a value nested in it
        return _Refused(f"front-matter key {key!r} is given twice ({where}): keep one", second, key=str(key))
    return _Refused(f"{key!r} is given twice ({where}): keep one", second)


_FrontMatterLoader.add_constructor("tag:yaml.org,2002:timestamp", _FrontMatterLoader.construct_yaml_timestamp)


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
    archive: bool = True  # false: the edition is sent, but never listed or served by the public archive

    @field_validator("archive", mode="before")
    @classmethod
    def _archive(cls, value: object) -> object:
        # Strict: pydantic would take "false" in quotes, "0" or 0 for false; a typo must not publish (or hide) one.
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("subject", "preheader", "author")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return one_line(value.strip())

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: dt.datetime | None) -> dt.datetime | None:
        reason = None if value is None else out_of_reach(value)
        if reason is not None:
            raise ValueError(reason)
        return value

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
    # draft.md as read, line by line (lines[0] is draft.md:1): the checks point at lines without reading it again
    lines: tuple[str, ...] = field(repr=False, compare=False)

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
    front, body, body_line = _split_front_matter(text.replace("\r\n", "\n"), source)
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
        lines=tuple(_NEWLINE.sub("\n", text).splitlines()),
    )


def _read_text(source: Path) -> str:
    data = source.read_bytes()
    try:
        return data.decode("utf-8-sig")
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
        raw = yaml.load(front, Loader=_FrontMatterLoader)  # a SafeLoader subclass: no arbitrary objects
    except _Refused as exc:
        key = exc.key or _key_at(front, exc.line)
        message = str(exc) if exc.key or key is None else f"front-matter key {key!r}: {exc}"
        raise DraftError(message, path=source, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + FIRST_LINE if mark is not None else None
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


def _describe(error: ErrorDetails, key: str) -> str:
    known = ", ".join(FrontMatter.model_fields)
    if error["type"] == "extra_forbidden":
        return f"unknown front-matter key {key!r} (known: {known})"
    if error["type"] == "missing":
        return f"missing required front-matter key {key!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"front-matter key {key!r}: {message}"


def _key_line(front: str, key: str) -> int:
    for number, line in enumerate(front.splitlines(), start=FIRST_LINE):
        if re.match(rf"^{re.escape(key)}\s*:", line):
            return number
    return 1


def _key_at(front: str, line: int) -> str | None:
    """The top-level key whose value holds draft.md line ``line``."""
    keys = [match[1] for text in front.splitlines()[: line - FIRST_LINE + 1] if (match := _TOP_KEY.match(text))]
    return keys[-1] if keys else None


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
