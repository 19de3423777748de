"""Write a rendered edition to its output folder, all or nothing.

    build/<draft-name>/
      email.html     the inlined email, with per-recipient placeholders
      email.txt      the plain-text part
      web.html       the "view in browser" archive page
      manifest.json  subject, sizes, content hash, links and images
      images/        the draft's local images, to publish under asset_base_url
      desktop.png, mobile.png, previews.json   screenshots (preview.py), kept by a
                     rebuild only while email.html is the one they show

Files are written into a temporary sibling folder that replaces the previous
output only once everything is written: a failed build leaves it intact. Folders
and files get the usual permissions (0777 and 0666 less the umask), so a web
server running as another user can publish them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import NewsletterError
from pipeline.preview import current_previews
from pipeline.render import Edition

OUTPUTS = ("email.html", "email.txt", "web.html", "manifest.json")


@dataclass(frozen=True, kw_only=True)
class Build:
    """Where an edition was written, and the edition itself."""

    edition: Edition
    folder: Path

    @property
    def email_bytes(self) -> int:
        return len(self.edition.email_html.encode("utf-8"))


def output_folder(settings: Settings, draft_name: str, out: Path | None = None) -> Path:
    return Path(out) if out is not None else settings.paths.build / draft_name


def write_build(edition: Edition, settings: Settings, out: Path | None = None) -> Build:
    """Write ``edition`` into ``out`` (default: its folder under the build folder); return where it went."""
    folder = output_folder(settings, edition.name, out)
    write_edition(edition, folder)
    return Build(edition=edition, folder=folder)


def write_edition(edition: Edition, folder: Path) -> None:
    """Write every output into ``folder``, replacing what was there only on success."""
    folder = folder.resolve()
    if folder.exists() and not _replaceable(folder):
        raise NewsletterError("refusing to replace a folder that is not a previous build output", path=folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = _new_sibling(folder, "")
    except OSError as exc:
        raise NewsletterError(f"cannot create the output folder: {exc.strerror}", path=folder) from None
    try:
        _write_files(edition, staging)
        _keep_current_previews(folder, staging)
        _swap_in(staging, folder)
    except OSError as exc:
        raise NewsletterError(f"cannot write the edition: {exc.strerror}", path=folder) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replaceable(folder: Path) -> bool:
    """Only an earlier build output (it has manifest.json) or an empty folder may be replaced."""
    return folder.is_dir() and ((folder / "manifest.json").is_file() or not any(folder.iterdir()))


def _new_sibling(folder: Path, label: str) -> Path:
    """A new empty folder beside ``folder``, 0777 less the umask (tempfile.mkdtemp's 0700
    would keep a web server running as another user out of the published build)."""
    while True:
        candidate = folder.parent / f".{folder.name}.{label}{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _copy(source: Path, target: Path) -> None:
    """Copy contents and times, not the mode: the new file is 0666 less the umask, as if written."""
    shutil.copyfile(source, target)
    stat = source.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _keep_current_previews(folder: Path, staging: Path) -> None:
    """Carry the previous output's screenshots over if they show this very email.html; stale ones go."""
    if folder.is_dir():
        for path in current_previews(folder, (staging / "email.html").read_bytes()):
            _copy(path, staging / path.name)


def _write_files(edition: Edition, staging: Path) -> None:
    (staging / "email.html").write_text(edition.email_html, encoding="utf-8")
    (staging / "email.txt").write_text(edition.email_txt, encoding="utf-8")
    (staging / "web.html").write_text(edition.web_html, encoding="utf-8")
    manifest = json.dumps(edition.manifest(), ensure_ascii=False, indent=2) + "\n"
    (staging / "manifest.json").write_text(manifest, encoding="utf-8")
    for image in edition.images:
        if image.file is not None:
            target = staging / image.src.lstrip("./")
            target.parent.mkdir(parents=True, exist_ok=True)
            _copy(image.file, target)


def _swap_in(staging: Path, folder: Path) -> None:
    """Rename the staging folder into place; the old output is removed only afterwards."""
    retired = None
    if folder.exists():
        retired = _new_sibling(folder, "old.")
        retired.rmdir()
        folder.rename(retired)
    try:
        staging.rename(folder)
    except OSError:
        if retired is not None:
            retired.rename(folder)
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
