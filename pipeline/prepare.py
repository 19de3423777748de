"""The one orchestrator: a draft folder in, an edition out, every stage handed the record the last one made.

    folder ─▶ draft.read_draft ─▶ Draft ─▶ content.parse_body ─▶ Body ─▶ render.render_edition ─▶ Edition
           ─▶ build.write_build ─▶ Build (optional) ─▶ checks.check_edition ─▶ Report

Everything is read (draft.md, its images, the templates) and rendered in memory before anything
is written, and the body is parsed once: the checks judge the very Edition that was rendered, from
the Body it carries. Every command and scheduler job that turns a draft into an edition comes
through here. ``checked`` is a coroutine, like the checks; only the command line and the
scheduler's threads run it with ``asyncio.run``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.build import Build, write_build
from pipeline.checks import Report, check_edition
from pipeline.config import Settings
from pipeline.content import parse_body
from pipeline.draft import Draft, read_draft
from pipeline.render import Edition, render_edition

__all__ = ["checked", "prepare", "prepare_and_write", "prepare_draft"]


def prepare(folder: Path, settings: Settings) -> Edition:
    """Read the draft in ``folder`` and render it; nothing is written."""
    return prepare_draft(read_draft(folder), settings)


def prepare_draft(draft: Draft, settings: Settings) -> Edition:
    """Render a draft already read (to look at its front matter first)."""
    return render_edition(parse_body(draft), settings)


def prepare_and_write(folder: Path, settings: Settings, out: Path | None = None) -> Build:
    """Read and render the draft in ``folder``, then write it (default: its folder under the build folder)."""
    return write_build(prepare(folder, settings), settings, out)


async def checked(folder: Path, settings: Settings, *, offline: bool) -> tuple[Build, Report]:
    """Build the draft in ``folder`` and check what was built; ``offline`` requests no links.

    The gate is the caller's: ``checks.require_passing`` for an operator's command, the scheduler's
    own rule for a send that fires.
    """
    build = prepare_and_write(folder, settings)
    return build, await check_edition(build.edition, settings, offline=offline)
