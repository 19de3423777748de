"""Cells of the CSV files the pipeline writes, safe to open in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that begins with ``=``, ``+``,
``-`` or ``@`` (or a tab or carriage return before one) as a formula: a
subscriber named ``=HYPERLINK(...)`` would run in the spreadsheet of whoever
opens an export (CSV injection). OWASP's rule is applied to every text cell the
pipeline writes: such a cell is written with a single quote ``'`` before it,
which spreadsheets show as text.

The rule must not change what an export imports back as, so it is reversible:

- ``defused`` prefixes ``'`` to a cell that begins with one of those characters,
  and also to a cell that begins with ``'`` followed by what it would prefix
  (``'=x`` is written ``''=x``);
- ``restored`` removes one leading ``'`` exactly when what follows is a cell that
  ``defused`` would have prefixed.

So every cell survives ``restored(defused(cell))``, including a name that really
begins with a quote: ``'Tis`` is written and read unchanged (no formula
character follows the quote), and ``'=x`` comes back as ``'=x``. The one reading
that changes is of a file written elsewhere with ``'=x`` in a cell: it is
imported as ``=x``, which is what a spreadsheet means by it too.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP, "CSV Injection"
QUOTE = "'"


def _needs_quote(cell: str) -> bool:
    # A run of quotes before a formula character: each needs one more, so the count stays reversible.
    return cell.lstrip(QUOTE).startswith(FORMULA_STARTS)


def defused(cell: Any) -> Any:
    """``cell`` as it is safe to write: text that a spreadsheet would run gets a leading ``'``."""
    if isinstance(cell, str) and _needs_quote(cell):
        return QUOTE + cell
    return cell


def restored(cell: str) -> str:
    """The cell that ``defused`` was given: one leading ``'`` off, when ``defused`` had put it there."""
    if cell.startswith(QUOTE) and _needs_quote(cell[1:]):
        return cell[1:]
    return cell


class Writer:
    """``csv.writer`` whose text cells are defused."""

    def __init__(self, out: TextIO, **options: Any):
        self.writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[Any]) -> None:
        self.writer.writerow([defused(cell) for cell in row])


class DictWriter(csv.DictWriter):
    """``csv.DictWriter`` whose text cells are defused (the header too: ``writeheader`` calls ``writerow``)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: defused(value) for key, value in rowdict.items()})
