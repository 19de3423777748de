"""The timeline of a send as a small server-drawn SVG: accepted and failed deliveries per minute.

No JavaScript and no chart library: bars are rectangles whose geometry is worked out
here and drawn by ``staff/_timeline.html``, with a ``<title>``, a ``<desc>`` that
sums it up, and a table of the same figures for whoever cannot see the picture.
A long send comes in wider buckets (``store.console.TIMELINE_BARS`` at most), and the title says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 220, 48, 28, 12


@dataclass(frozen=True, kw_only=True)
class Bar:
    start: dt.datetime
    label: str  # the bucket's start in the publication's zone
    accepted: int
    failed: int
    x: float
    width: float
    accepted_y: float
    accepted_height: float
    failed_y: float
    failed_height: float


@dataclass(frozen=True, kw_only=True)
class Chart:
    bars: tuple[Bar, ...]
    minutes: int  # per bar
    peak: int
    accepted: int
    failed: int
    first: str
    last: str
    zone: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM
    top: int = TOP

    @property
    def baseline(self) -> int:
        return self.height - self.bottom


def chart(minutes: int, points: list[tuple[dt.datetime, int, int]], zone: ZoneInfo) -> Chart | None:
    """The chart of contiguous buckets of ``minutes`` each, (start, accepted, failed), as ``store.console.timeline``
    gives them; None when nothing was accepted or refused yet."""
    if not points:
        return None
    peak = max(1, max(accepted + failed for _, accepted, failed in points))
    plot_width, plot_height = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_width / len(points)
    base = HEIGHT - BOTTOM
    bars = []
    for index, (start, accepted, failed) in enumerate(points):
        accepted_height, failed_height = plot_height * accepted / peak, plot_height * failed / peak
        bars.append(Bar(start=start, label=f"{start.astimezone(zone):%H:%M}", accepted=accepted, failed=failed,
                        x=round(LEFT + index * step + step * 0.1, 2), width=round(max(step * 0.8, 1), 2),
                        accepted_y=round(base - accepted_height, 2), accepted_height=round(accepted_height, 2),
                        failed_y=round(base - accepted_height - failed_height, 2),
                        failed_height=round(failed_height, 2)))
    local_first = points[0][0].astimezone(zone)
    local_last = (points[-1][0] + dt.timedelta(minutes=minutes)).astimezone(zone)
    return Chart(bars=tuple(bars), minutes=minutes, peak=peak, accepted=sum(b.accepted for b in bars),
                 failed=sum(b.failed for b in bars), first=f"{local_first:%Y-%m-%d %H:%M} {local_first.tzname()}",
                 last=f"{local_last:%H:%M} {local_last.tzname()}", zone=zone.key)
