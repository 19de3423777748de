"""Golden files of the sample build: a change to the output must be seen and blessed on purpose.

Re-bless after an intended change:  NEWSLETTER_BLESS=1 .venv/bin/python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.prepare import prepare

from .conftest import SAMPLE

GOLDEN = Path(__file__).parent / "golden" / SAMPLE


def _normalise_html(html: str) -> str:
    """One tag per line, trailing space trimmed: a harmless change shows as a small diff."""
    return "\n".join(line.rstrip() for line in re.sub(r">\s*<", ">\n<", html).splitlines()) + "\n"


def _outputs(settings: Settings, project: Path) -> dict[str, str]:
    edition = prepare(project / "drafts" / SAMPLE, settings)
    manifest = edition.manifest()
    manifest.pop("content_hash")  # covered by the files themselves
    return {
        "email.html": _normalise_html(edition.email_html),
        "web.html": _normalise_html(edition.web_html),
        "email.txt": edition.email_txt,
        "manifest.json": json.dumps(manifest, ensure_ascii=False, indent=2) + "\n",
    }


@pytest.mark.parametrize("name", ["email.html", "web.html", "email.txt", "manifest.json"])
def test_sample_build_matches_golden_file(settings: Settings, project: Path, name: str) -> None:
    actual = _outputs(settings, project)[name]
    golden = GOLDEN / name
    if os.environ.get("NEWSLETTER_BLESS"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden}: run with NEWSLETTER_BLESS=1"
    assert actual == golden.read_text(encoding="utf-8"), (
        f"{name} differs from {golden}; if intended, re-bless with NEWSLETTER_BLESS=1"
    )
