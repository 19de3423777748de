"""Scheduling: an editor picks a time, or drops a draft with ``send_at``; it goes out on time, once.

    newsletter schedule DRAFT --at …  ─▶ sends (scheduled, scheduled_at)  ◀─ drafts with send_at (dropped.py)
                                              │
    newsletter run (runner.py): APScheduler 3, jobs in the project's database ── fire (firing.py) ─▶ claim
          ─▶ rebuild, re-check ─▶ held | queue the audience ─▶ send.run_send ─▶ staff notice

``calendar.py`` schedules, moves and lists; the SQL is in ``store/calendar.py``.
"""

from __future__ import annotations

from pipeline.schedule.calendar import ScheduledLine, calendar, move, require_future, schedule_build
from pipeline.schedule.runner import Runner, run_forever

__all__ = ["Runner", "ScheduledLine", "calendar", "move", "require_future", "run_forever", "schedule_build"]
