"""CSV cells safe for spreadsheets (OWASP's rule), and reversible so that exports import back unchanged."""

from __future__ import annotations

import csv
import io

import pytest

from pipeline.csvcells import DictWriter, Writer, defused, restored

CELLS = ["=1+1", "+44", "-Ada", "@SUM(A1)", "\t=1", "\r=1", "'Tis", "'=x", "''=x", "'", "''", "", "Ada", "a=b",
         "x-", "'-", "'''@"]


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_comes_back(cell: str) -> None:
    assert restored(defused(cell)) == cell


@pytest.mark.parametrize(("cell", "written"), [
    ("=1+1", "'=1+1"), ("+44", "'+44"), ("-Ada", "'-Ada"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"), ("'Tis", "'Tis"), ("'=x", "''=x"), ("Ada", "Ada"), ("a=b", "a=b"),
])
def test_a_cell_a_spreadsheet_would_run_gets_a_quote(cell: str, written: str) -> None:
    assert defused(cell) == written


def test_numbers_and_empty_cells_are_left_alone() -> None:
    assert defused(-5) == -5 and defused(None) is None and defused(1.5) == 1.5


def test_the_writers_defuse_every_text_cell() -> None:
    out = io.StringIO()
    Writer(out, lineterminator="\n").writerow(["=cmd|' /C calc'!A0", "fine", 3])
    dict_out = io.StringIO()
    writer = DictWriter(dict_out, fieldnames=["@name", "error"], lineterminator="\n")
    writer.writeheader()
    writer.writerow({"@name": "+x", "error": None})
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["'=cmd|' /C calc'!A0", "fine", "3"]]
    assert dict_out.getvalue() == "'@name,error\n'+x,\n"
