"""Screenshots of a built email in headless Chromium, so the editor can look before sending.

Uses the system's Chromium (Debian's ``chromium`` package) through Playwright,
with no network: the page is loaded from a file and every request that leaves
the machine is blocked, so remote images show as missing rather than fetched.

Beside the screenshots, ``previews.json`` records the sha256 of the email.html they
show: a rebuild keeps them while that email is unchanged, and only then
(``current_previews``), so a screenshot never pretends to show a newer email.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PreviewError

CHROMIUM = Path(os.environ.get("NEWSLETTER_CHROMIUM", "/usr/bin/chromium"))
# Flags for a locked-down, offline, root-friendly headless run.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = {"desktop": 640, "mobile": 375}
RECORD = "previews.json"


@dataclass(frozen=True, kw_only=True)
class Screenshot:
    """One full-page screenshot and what the page measured at that width."""

    path: Path
    width: int
    scroll_width: int
    height: int


def launch_browser(playwright):
    """Start the system Chromium headless; a clear error when it is not installed."""
    if not CHROMIUM.exists():
        raise PreviewError(f"Chromium not found at {CHROMIUM}: install Debian's 'chromium' package (make setup does)")
    try:
        return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:  # playwright raises its own Error with a multi-line log
        raise PreviewError(f"Chromium failed to start: {str(exc).splitlines()[0]}") from None


@contextmanager
def browser_session():
    """The system Chromium, headless, for the length of a with block."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            yield browser
        finally:
            browser.close()


def local_only(route):
    """Let local documents through; abort anything bound for the network."""
    url = route.request.url
    if url.startswith(("file:", "data:", "about:")):
        route.continue_()
    else:
        route.abort()


def screenshot_email(email_html: Path, out_dir: Path) -> list[Screenshot]:
    """Write desktop.png (640 px) and mobile.png (375 px) full-page screenshots of ``email_html``."""
    shots = []
    with browser_session() as browser:
        for label, width in WIDTHS.items():
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.route("**/*", local_only)
            page.goto(email_html.resolve().as_uri(), wait_until="load")
            scroll_width, height = page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            path = out_dir / f"{label}.png"
            page.screenshot(path=str(path), full_page=True)
            shots.append(Screenshot(path=path, width=width, scroll_width=scroll_width, height=height))
            page.close()
    record_previews(email_html.read_bytes(), [shot.path for shot in shots], out_dir)
    return shots


def record_previews(email_html: bytes, screenshots: list[Path], out_dir: Path) -> None:
    """Write previews.json: which screenshots show which email.html."""
    record = {"email.html sha256": hashlib.sha256(email_html).hexdigest(),
              "screenshots": sorted(path.name for path in screenshots)}
    (out_dir / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def current_previews(folder: Path, email_html: bytes) -> list[Path]:
    """The screenshots in ``folder`` (and their record) taken of exactly this email.html, else none."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        names = [str(name) for name in record["screenshots"]]
        current = record["email.html sha256"] == hashlib.sha256(email_html).hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return []
    files = [folder / name for name in names if Path(name).name == name]
    if not current or not all(path.is_file() for path in files):
        return []
    return [*files, folder / RECORD]
