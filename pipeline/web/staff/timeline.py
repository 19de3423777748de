"""The timeline of a send as a small server-drawn SVG: accepted and failed deliveries per minute.

No JavaScript and no chart library: bars are rectangles whose geometry is worked out
here and drawn by ``staff/_timeline.html``, with a ``<title>``, a ``<desc>`` that
sums it up, and a table of the same figures for whoever cannot see the picture.
A long send is drawn in wider buckets (at most ``MAX_BARS`` bars), and says so.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

MAX_BARS = 120
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


def chart(points: list[tuple[dt.datetime, int, int]], zone: ZoneInfo) -> Chart | None:
    """The chart of (minute, accepted, failed) points; None when nothing was accepted or refused yet."""
    if not points:
        return None
    first, last = points[0][0], points[-1][0]
    span = int((last - first).total_seconds() // 60) + 1
    minutes = max(1, math.ceil(span / MAX_BARS))
    buckets: dict[int, list[int]] = {}
    for moment, accepted, failed in points:
        bucket = buckets.setdefault(int((moment - first).total_seconds() // 60) // minutes, [0, 0])
        bucket[0] += accepted
        bucket[1] += failed
    count = max(buckets) + 1
    peak = max(accepted + failed for accepted, failed in buckets.values())
    plot_width, plot_height = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_width / count
    bars = []
    for index in sorted(buckets):
        accepted, failed = buckets[index]
        start = first + dt.timedelta(minutes=index * minutes)
        accepted_height = plot_height * accepted / peak
        failed_height = plot_height * failed / peak
        base = HEIGHT - BOTTOM
        bars.append(Bar(start=start, label=f"{start.astimezone(zone):%H:%M}", accepted=accepted, failed=failed,
                        x=round(LEFT + index * step + step * 0.1, 2), width=round(max(step * 0.8, 1), 2),
                        accepted_y=round(base - accepted_height, 2), accepted_height=round(accepted_height, 2),
                        failed_y=round(base - accepted_height - failed_height, 2),
                        failed_height=round(failed_height, 2)))
    local_first, local_last = first.astimezone(zone), (last + dt.timedelta(minutes=1)).astimezone(zone)
    return Chart(bars=tuple(bars), minutes=minutes, peak=peak, accepted=sum(b.accepted for b in bars),
                 failed=sum(b.failed for b in bars), first=f"{local_first:%Y-%m-%d %H:%M} {local_first.tzname()}",
                 last=f"{local_last:%H:%M} {local_last.tzname()}", zone=zone.key)
