"""The delivery log as staff read it: CSV that is safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import datetime as dt
import io

from pipeline.logs import DeliveryLine, write_deliveries

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def _line(email: str, error: str | None) -> DeliveryLine:
    return DeliveryLine(email=email, status="failed", attempts=1, provider_message_id="@id-1", error=error,
                        queued=NOW, updated=NOW, sent=None)


def test_csv_log_defuses_cells_a_spreadsheet_would_run() -> None:
    out = io.StringIO()
    lines = [_line("=sum@example.org", "-ERR =HYPERLINK(\"https://evil.example\")"), _line("ada@example.org", None)]
    assert write_deliveries(lines, "csv", out) == 2
    header, first, second = list(csv.reader(io.StringIO(out.getvalue())))
    assert header == ["email", "status", "attempts", "provider_message_id", "error", "queued", "updated", "sent"]
    assert first[:5] == ["'=sum@example.org", "failed", "1", "'@id-1", "'-ERR =HYPERLINK(\"https://evil.example\")"]
    assert second[:5] == ["ada@example.org", "failed", "1", "'@id-1", ""]
    assert first[5] == NOW.isoformat()
