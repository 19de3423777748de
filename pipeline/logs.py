"""The delivery log staff read, written out: a line per send, and a line per recipient of a send.

The lines come from ``store/reports.py``; here they become a table, JSON or CSV.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import TextIO

from pipeline.csvcells import DictWriter, Writer
from pipeline.store.reports import DeliveryLine, SendLine, delivery_lines, send_lines
from pipeline.store.states import DeliveryStatus

STATUS_ORDER = tuple(DeliveryStatus)
__all__ = ["DeliveryLine", "SendLine", "delivery_lines", "format_counts", "send_lines", "send_table",
           "write_deliveries", "write_sends"]


def _when(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def format_counts(counts: dict[str, int]) -> str:
    ordered = sorted(counts, key=lambda status: STATUS_ORDER.index(status) if status in STATUS_ORDER else 99)
    return ", ".join(f"{counts[status]} {status}" for status in ordered) or "no recipients"


def send_table(lines: list[SendLine]) -> str:
    if not lines:
        return "no sends yet"
    header = f"{'send':>4}  {'edition':<34} {'status':<10} {'started':<20} {'finished':<20} deliveries"
    rows = [f"{line.id:>4}  {line.edition[:34]:<34} {line.status:<10} {_when(line.started):<20} "
            f"{_when(line.finished):<20} {format_counts(line.counts)}" for line in lines]
    return "\n".join([header, *rows])


def _plain(line: DeliveryLine | SendLine) -> dict[str, object]:
    data = asdict(line)
    for key, value in data.items():
        if isinstance(value, dt.datetime):
            data[key] = value.isoformat()
    return data


def write_sends(lines: list[SendLine], fmt: str, out: TextIO) -> None:
    """Write the send lines as a table, a JSON array or CSV (the counts a column per status)."""
    if fmt == "table":
        out.write(send_table(lines) + "\n")
    elif fmt == "json":
        out.write(json.dumps([_plain(line) for line in lines], ensure_ascii=False, indent=2) + "\n")
    else:
        writer = Writer(out)  # cells safe for a spreadsheet
        writer.writerow(["id", "edition", "status", "reason", "created", "started", "finished", *STATUS_ORDER])
        for line in lines:
            plain = _plain(line)
            writer.writerow([plain[key] for key in ("id", "edition", "status", "reason", "created", "started",
                                                    "finished")] + [line.counts.get(status, 0)
                                                                    for status in STATUS_ORDER])


def write_deliveries(lines: Iterable[DeliveryLine], fmt: str, out: TextIO) -> int:
    """Write the delivery lines as a table, a JSON array or CSV, streaming; return how many."""
    count = 0
    writer = None
    if fmt == "json":
        out.write("[")
    if fmt == "table":
        out.write(f"{'email':<36} {'status':<10} {'tries':>5}  {'provider id':<36} {'updated':<20} error\n")
    for line in lines:
        count += 1
        if fmt == "json":
            out.write(("," if count > 1 else "") + "\n  " + json.dumps(_plain(line), ensure_ascii=False))
        elif fmt == "csv":
            if writer is None:
                writer = DictWriter(out, fieldnames=list(_plain(line)))  # cells safe for a spreadsheet
                writer.writeheader()
            writer.writerow(_plain(line))
        else:
            out.write(f"{line.email[:36]:<36} {line.status:<10} {line.attempts:>5}  "
                      f"{(line.provider_message_id or '-')[:36]:<36} {_when(line.updated):<20} {line.error or ''}\n")
    if fmt == "json":
        out.write("\n]\n" if count else "]\n")
    return count
