"""Pre-flight checks: the editor's safety net, and the gate in front of every send.

    Edition ─▶ links · disclaimers · content · images · size · compat ─▶ Report

``check_edition`` runs them all on the edition as rendered, reading the body it
carries (never parsing the draft or reading draft.md again). It is a coroutine,
as requesting links is: a web endpoint awaits it, a command line runs it with
``asyncio.run``. ``require_passing`` is the gate that sending and scheduling
call: it refuses an edition with errors unless an operator forces it with a
reason, which is then recorded with the send.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.checks.compat import check_compat
from pipeline.checks.disclaimers import check_disclaimers
from pipeline.checks.images import check_images
from pipeline.checks.links import check_links
from pipeline.checks.report import LinkResult, Problem, Report
from pipeline.checks.size import check_size
from pipeline.checks.wording import check_wording
from pipeline.config import Settings
from pipeline.errors import ChecksFailed
from pipeline.render import Edition

__all__ = ["LinkResult", "Override", "Problem", "Report", "check_edition", "require_passing"]

_ORDER = ("links", "disclaimers", "content", "images", "size", "compat")


async def check_edition(edition: Edition, settings: Settings, *, offline: bool = False) -> Report:
    """Run every check on a built edition; ``offline`` skips reachability."""
    link_problems, links = await check_links(edition, settings, offline=offline)
    problems = [
        *link_problems,
        *check_disclaimers(edition, settings),
        *check_wording(edition.body),
        *check_images(edition, settings),
        *check_size(edition, settings),
        *check_compat(edition, settings.checks.clients, settings.checks.compat_ignore),
    ]
    problems.sort(key=lambda problem: (problem.severity != "error", _ORDER.index(problem.check)))
    return Report(edition=edition.name, problems=tuple(problems), links=tuple(links))


@dataclass(frozen=True, kw_only=True)
class Override:
    """Why an operator sent an edition whose checks failed; recorded with the send."""

    reason: str
    errors: tuple[Problem, ...]


def require_passing(report: Report, *, force: bool = False, reason: str | None = None) -> Override | None:
    """The gate: raise ChecksFailed on errors, unless forced with a reason (returned for the record)."""
    if report.ok:
        return None
    if not force:
        first = report.errors[0]
        raise ChecksFailed(f"{len(report.errors)} check error(s), first: {first.location}: {first.message} "
                           "(see 'newsletter check'; override with --force --reason \"...\")")
    if not reason or not reason.strip():
        raise ChecksFailed("--force needs --reason \"...\": the reason is recorded with the send")
    return Override(reason=reason.strip(), errors=report.errors)
