"""The orchestrator: a draft read and parsed once, rendered without changing the body, checked as rendered."""

from __future__ import annotations

import ast
import asyncio
import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from pipeline.checks import check_edition
from pipeline.config import Settings
from pipeline.content import Body, parse_body
from pipeline.draft import read_draft
from pipeline.prepare import checked, prepare, prepare_and_write
from pipeline.render import render_edition

from .conftest import ROOT, SAMPLE, write_draft

PACKAGE = ROOT / "pipeline"
# The sync edges: the command line, and the scheduler's jobs, which run in APScheduler's threads
# (notices.notify_staff is the sync wrapper those threads call).
EDGES = {"cli/*.py", "schedule/firing.py", "schedule/dropped.py", "schedule/runner.py", "notices.py"}
RICH = """\
Lede with a [link](https://www.ft.com/) and a note.[^1]

![A chart](images/chart.png)

## Trade

### [Headline](https://www.reuters.com/x) – Reuters [February 8th]

> 中国和俄罗斯的贸易额创下新高。

An English line with 中文 inside.

::: comment
**Comments:** first paragraph.

Second paragraph.
:::

## Energy

[![A linked chart](images/chart.png)](https://www.ft.com/chart)

[^1]: A footnote with ![an icon](images/chart.png).
"""


def _asyncio_runs(path: Path) -> list[int]:
    """The lines of ``path`` that call asyncio.run, however it was imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and node.module == "asyncio" for alias in node.names if alias.name == "run"}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if (isinstance(function, ast.Attribute) and function.attr == "run"
                and isinstance(function.value, ast.Name) and function.value.id == "asyncio"):
            lines.append(node.lineno)
        elif isinstance(function, ast.Name) and function.id in names:
            lines.append(node.lineno)
    return lines


def test_asyncio_run_is_called_only_at_the_sync_edges() -> None:
    """Async core, sync edges: below the command line and the scheduler's threads, everything can be awaited."""
    calls = {path.relative_to(PACKAGE).as_posix(): lines for path in PACKAGE.rglob("*.py")
             if (lines := _asyncio_runs(path))}
    assert "cli/send.py" in calls and "schedule/firing.py" in calls  # the search finds what is there
    outside = {path: lines for path, lines in calls.items() if not any(Path(path).match(edge) for edge in EDGES)}
    assert outside == {}


def _rich_draft(project: Path) -> Path:
    folder = write_draft(project, "2024-03-01-rich", "subject: Rich\npreheader: Everything at once", RICH)
    (folder / "images").mkdir()
    shutil.copy(Path(__file__).parent / "data" / "pixel.png", folder / "images" / "chart.png")
    return folder


def _tokens(body: Body) -> Iterator[Token]:
    blocks = (*body.lede, *(block for section in body.sections for block in section.blocks), *body.signoff)
    for section in body.sections:
        yield from section.title_tokens
    for block in blocks:
        yield from block.tokens
        if block.source is not None:
            yield from block.source.headline
    yield from body.footnotes


def _snapshot(body: Body) -> tuple[list[Any], dict[str, Any]]:
    return [token.as_dict() for token in _tokens(body)], copy.deepcopy(body.env)


def test_rendering_and_checking_leave_the_body_as_parsed(project: Path, settings: Settings) -> None:
    body = parse_body(read_draft(_rich_draft(project)))
    parsed = _snapshot(body)
    first = render_edition(body, settings)
    asyncio.run(check_edition(first, settings, offline=True))
    second = render_edition(body, settings)
    assert _snapshot(body) == parsed
    assert first.content_hash == second.content_hash and first.body is body
    published = f'src="{settings.publication.asset_base_url}/2024-03-01-rich/images/chart.png"'
    assert first.email_html.count(published) == 3
    assert [image.src for image in body.images] == ["images/chart.png"] * 3


def test_the_body_is_parsed_once_and_draft_md_read_once(project: Path, settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_draft(project, "2024-03-01-once", "subject: Once\npreheader: P",
                         "Lede, [plainly](http://www.ft.com/a).\n\nTK\n")
    parses = []
    parse = MarkdownIt.parse

    def counted(md: MarkdownIt, *args: Any, **kwargs: Any) -> list[Token]:
        parses.append(args[0])
        return parse(md, *args, **kwargs)

    monkeypatch.setattr(MarkdownIt, "parse", counted)
    edition = prepare(folder, settings)
    (folder / "draft.md").unlink()  # the checks judge what was rendered, not the file as it is now
    report = asyncio.run(check_edition(edition, settings, offline=True))
    assert len(parses) == 1
    assert [(p.location, p.message) for p in report.problems if p.check in ("content", "links")] == [
        ("draft.md:7", "left-over placeholder 'TK'"),
        ("draft.md:5", "plain http:// link (use https://): http://www.ft.com/a")]


def test_prepare_and_write_writes_the_edition_it_rendered(project: Path, settings: Settings) -> None:
    build = prepare_and_write(project / "drafts" / SAMPLE, settings, project / "out")
    assert build.folder == project / "out"
    assert (build.folder / "email.html").read_text(encoding="utf-8") == build.edition.email_html
    assert build.edition.content_hash == prepare(project / "drafts" / SAMPLE, settings).content_hash


def test_checked_writes_then_checks_the_same_edition(project: Path, settings: Settings) -> None:
    build, report = asyncio.run(checked(project / "drafts" / SAMPLE, settings, offline=True))
    assert build.folder == settings.paths.build / SAMPLE and (build.folder / "manifest.json").is_file()
    assert report.edition == build.edition.name == SAMPLE and report.ok
    assert {link.result for link in report.links} == {"skipped"}
