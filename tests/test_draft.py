"""Reading a draft's front matter: strict YAML, one-line header fields, a send time within reach."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from pipeline.draft import read_draft
from pipeline.errors import DraftError

from .conftest import write_draft

BODY = "Hello.\n"


def _read(project: Path, front: str):
    return read_draft(write_draft(project, "2024-03-01-front", front, BODY))


@pytest.mark.parametrize("key", ["subject", "preheader", "author"])
@pytest.mark.parametrize(("value", "found"), [
    (r'"Hi\r\nBcc: x@example.net"', "U+000D"),
    (r'"Hi\nthere"', "U+000A"),
    (r'"Hi\0there"', "U+0000"),
    (r'"Hi\tthere"', "U+0009"),
    (r'"Hi\u2028there"', "U+2028"),
    (r'"Hi\x85there"', "U+0085"),
])
def test_header_fields_must_be_one_line(project: Path, key: str, value: str, found: str) -> None:
    front = f"date: 2024-03-01\n{key}: {value}" + ("" if key == "subject" else "\nsubject: S")
    with pytest.raises(DraftError, match=rf"draft.md:3: front-matter key '{key}': must be one line without "
                                         rf"control characters \(found {re.escape(found)}\)"):
        _read(project, front)


def test_header_fields_are_trimmed_and_a_folded_subject_is_one_line(project: Path) -> None:
    draft = _read(project, "subject: >\n  A long subject\n  on two lines\npreheader: '  Short  '")
    assert draft.meta.subject == "A long subject on two lines"
    assert draft.meta.preheader == "Short"


def test_a_key_given_twice_names_both_lines(project: Path) -> None:
    with pytest.raises(DraftError, match=r"draft.md:4: front-matter key 'preheader' is given twice "
                                         r"\(lines 2 and 4\): keep one"):
        _read(project, "preheader: First\nsubject: S\npreheader: Second")


def test_a_key_given_twice_inside_a_value_names_the_front_matter_key(project: Path) -> None:
    with pytest.raises(DraftError, match=r"draft.md:3: front-matter key 'audience': 'a' is given twice \(line 3\)"):
        _read(project, "subject: S\naudience: {a: 1, a: 2}")


def test_an_impossible_date_inside_a_list_names_its_key_and_line(project: Path) -> None:
    with pytest.raises(DraftError, match=r"draft.md:4: front-matter key 'audience': 2024-02-30 is not a real date"):
        _read(project, "subject: S\naudience:\n  - 2024-02-30")


@pytest.mark.parametrize("front", [
    "subject: " + "[" * 3000 + "]" * 3000,
    "subject: S\naudience: " + "{a: " * 3000 + "1" + "}" * 3000,
    "subject: S\naudience:\n" + "".join(" " * level + "- \n" for level in range(40)),
])
def test_deep_nesting_is_refused_with_its_line(project: Path, front: str) -> None:
    with pytest.raises(DraftError, match=r"draft.md:\d+: .*nested more than 16 levels deep"):
        _read(project, front)


def test_moderate_nesting_is_judged_by_the_keys_own_rule(project: Path) -> None:
    with pytest.raises(DraftError, match=r"draft.md:2: front-matter key 'subject': Input should be a valid string"):
        _read(project, "subject: " + "[" * 8 + "]" * 8)


def test_a_send_at_within_ten_years_keeps_its_offset(project: Path) -> None:
    soon = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=30)
    draft = _read(project, f"subject: S\nsend_at: {soon.isoformat(' ')}")
    assert draft.meta.send_at == soon
    assert _read(project, "subject: S\nsend_at: 2024-03-01 09:00").meta.send_at == dt.datetime(2024, 3, 1, 9, 0)


@pytest.mark.parametrize(("value", "expected"), [
    ("0001-01-01 00:00", "0001-01-01 00:00 is before 2000: a send time must be between 2000 and 10 years from now"),
    ("0001-01-01 00:00:00+05:00", "0001-01-01 00:00 is before 2000"),
    ("9999-12-31 23:59", "9999-12-31 23:59 is more than 10 years ahead (a typo?)"),
    ("9999-12-31 23:59:59-05:00", "9999-12-31 23:59 is more than 10 years ahead"),
])
def test_a_send_at_out_of_reach_is_refused(project: Path, value: str, expected: str) -> None:
    with pytest.raises(DraftError, match=rf"draft.md:3: front-matter key 'send_at': {re.escape(expected)}"):
        _read(project, f"subject: S\nsend_at: {value}")


def test_draft_lines_are_numbered_as_a_text_file_reads_them(project: Path) -> None:
    folder = write_draft(project, "2024-03-01-lines", "subject: S", "x\n")
    (folder / "draft.md").write_bytes(b"\xef\xbb\xbf---\r\nsubject: S\r\n---\r\nOne\rTwo\r\r\nThree \xe4\xb8\xad\n")
    draft = read_draft(folder)
    assert draft.lines == tuple((folder / "draft.md").read_text(encoding="utf-8-sig").splitlines())
    assert draft.lines[3:] == ("One", "Two", "", "Three 中")


def test_archive_is_true_unless_the_editor_says_false(project: Path) -> None:
    assert _read(project, "subject: S").meta.archive is True
    assert _read(project, "subject: S\narchive: false").meta.archive is False


@pytest.mark.parametrize("value", ['"false"', "0", "maybe", ""])
def test_archive_must_be_a_boolean(project: Path, value: str) -> None:
    with pytest.raises(DraftError, match=r"draft.md:3: front-matter key 'archive': must be true or false, got "):
        _read(project, f"subject: S\narchive: {value}")
