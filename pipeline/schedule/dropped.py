"""Drafts dropped with ``send_at``: dropping the draft is enough to schedule it.

``newsletter run`` looks at the drafts folder on every tick. A draft whose
front matter has ``send_at`` is checked and scheduled when it appears, and
checked and rescheduled when it changes (the older scheduled send is cancelled
and says why). A draft that fails its checks is not scheduled: the problems go
to the log and to the staff, once per version of the draft. What an operator
cancelled, and what was already sent or missed, stays as it is until the draft
changes. A draft folder whose files are unchanged since the last tick is not
looked at again. A draft that cannot be read at all, whatever the reason, is
reported once and skipped: it never stops the drafts after it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import send
from pipeline.build import write_build
from pipeline.checks import check_edition
from pipeline.config import Settings
from pipeline.draft import DRAFT_FILE, read_draft
from pipeline.errors import NewsletterError, SendError, StoreError
from pipeline.notices import notify_staff
from pipeline.prepare import prepare_draft
from pipeline.store import Store, utcnow
from pipeline.store.calendar import latest_for_draft
from pipeline.store.sends import move
from pipeline.store.states import SendStatus
from pipeline.when import localise

log = logging.getLogger("newsletter.schedule")
_UNDER_WAY = (SendStatus.SENDING, SendStatus.SENT, SendStatus.PAUSED)


@dataclass
class DraftWatch:
    """What the runner remembers between ticks: each draft folder's files as last looked at, and the
    problems already reported, so an unchanged draft is not rendered or reported again every tick."""

    reported: set[tuple[str, str]] = field(default_factory=set)
    looked_at: dict[Path, tuple[tuple[str, int, int], ...]] = field(default_factory=dict)

    def changed(self, folder: Path) -> bool:
        files = tuple(sorted((str(path), stat.st_mtime_ns, stat.st_size) for path in folder.rglob("*")
                             if path.is_file() and (stat := path.stat())))
        if self.looked_at.get(folder) == files:
            return False
        self.looked_at[folder] = files
        return True

    def forget(self, folder: Path) -> None:
        self.looked_at.pop(folder, None)


def pick_up_drafts(store: Store, settings: Settings, watch: DraftWatch,
                   should_stop: Callable[[], bool] = lambda: False) -> None:
    """Schedule new or changed drafts that carry ``send_at``; report those that cannot be. A stopping runner
    leaves the drafts not yet looked at to the next one."""
    folder = settings.paths.drafts
    if not folder.is_dir():
        return
    reported = watch.reported
    for draft_folder in sorted(path for path in folder.iterdir() if (path / DRAFT_FILE).is_file()):
        if should_stop():
            return
        if not watch.changed(draft_folder):
            continue
        try:
            _pick_up(store, settings, draft_folder, reported)
        except StoreError:
            watch.forget(draft_folder)  # the database, not the draft: look again next tick
            raise
        except Exception as exc:  # noqa: BLE001 - one broken draft must not stop the others
            problem = str(exc) if isinstance(exc, NewsletterError) else f"{type(exc).__name__}: {exc}"
            if "send_at" in (draft_folder / DRAFT_FILE).read_text(encoding="utf-8", errors="replace"):
                _report(settings, reported, draft_folder, problem, "the draft with send_at cannot be scheduled")


def _pick_up(store: Store, settings: Settings, folder: Path, reported: set[tuple[str, str]]) -> None:
    draft = read_draft(folder)
    if draft.meta.send_at is None:
        return
    at = draft.meta.send_at
    at = (at if at.tzinfo is not None else localise(at, settings.publication.zone)).astimezone(dt.UTC)
    edition = prepare_draft(draft, settings)
    latest = latest_for_draft(store, folder)
    if latest is not None and latest.content_hash == edition.content_hash and latest.at == at:
        return  # this version is already scheduled, sent, held, missed or cancelled: nothing new
    if latest is not None and latest.status in _UNDER_WAY and latest.edition == edition.name:
        if latest.content_hash != edition.content_hash:
            _report(settings, reported, folder, f"changed after send {latest.id} went out; not sent again",
                    "a sent draft changed")
        return
    if at <= utcnow():
        _report(settings, reported, folder, f"send_at {at:%Y-%m-%d %H:%M} UTC is in the past; not scheduled",
                "a dropped draft was not scheduled")
        return
    report = asyncio.run(check_edition(edition, settings, offline=settings.schedule.offline_checks))
    if not report.ok:
        problems = "; ".join(f"{p.location}: {p.message}" for p in report.errors)
        _report(settings, reported, folder, f"not scheduled, {len(report.errors)} check error(s): {problems}",
                "a dropped draft failed its checks")
        return
    if latest is not None and latest.status == SendStatus.SCHEDULED:
        move(store, latest.id, "cancel", "replaced by a newer version of the draft")
    built = write_build(edition, settings)  # the edition already rendered above: no second render
    try:
        send_id = send.schedule_send(store, settings, edition, built_path=str(built.folder), at=at,
                                     timezone=settings.publication.timezone, report=report)
    except SendError:
        # Another runner watching the same folder scheduled this very version while this one checked it.
        latest = latest_for_draft(store, folder)
        if latest is not None and latest.content_hash == edition.content_hash and latest.at == at:
            log.info("send %s: %s already scheduled from its send_at by another runner", latest.id, edition.name)
            return
        raise
    log.info("send %s: %s scheduled from its send_at for %s UTC", send_id, edition.name, f"{at:%Y-%m-%d %H:%M}")


def _report(settings: Settings, reported: set[tuple[str, str]], folder: Path, problem: str, subject: str) -> None:
    key = (str(folder), problem)
    if key in reported:
        return
    reported.add(key)
    log.warning("%s: %s", folder.name, problem)
    notify_staff(settings, f"{subject}: {folder.name}", f"{folder}/{DRAFT_FILE}: {problem}")

