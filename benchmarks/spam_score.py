"""Score the sample edition with SpamAssassin, offline: what a receiving filter thinks of the template.

Renders the sample draft, fills the per-recipient placeholders with a made-up subscriber, wraps
email.txt and email.html in a multipart/alternative message (Python's email package) and prints
`spamassassin -t -L` (local tests only, no network) with its score and the rules that fired.
SpamAssassin is not a dependency of the project: `apt-get install spamassassin` to run this.

Run from the project root:  .venv/bin/python benchmarks/spam_score.py [DRAFT] [--eml FILE]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from pipeline import placeholders
from pipeline.config import load_settings
from pipeline.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "2024-02-22-china-russia-report"


def message(draft: Path) -> EmailMessage:
    """The edition as one subscriber would receive it."""
    os.environ.setdefault("NEWSLETTER_SECRET", "spam-score-only")
    settings = load_settings(ROOT / "newsletter.toml")
    edition = prepare(draft, settings)
    base = settings.publication.base_url
    values = {placeholders.NAME: "Alex", placeholders.UNSUBSCRIBE_URL: f"{base}/u/sample-token",
              placeholders.VIEW_URL: f"{base}/archive/{edition.name}/"}
    mail = EmailMessage()
    mail["From"] = settings.publication.from_
    mail["To"] = "alex@example.net"
    mail["Subject"] = edition.subject
    mail["Date"] = formatdate()
    mail["Message-ID"] = make_msgid(domain=base.split("//", 1)[-1].split("/", 1)[0])
    mail["List-Unsubscribe"] = f"<{values[placeholders.UNSUBSCRIBE_URL]}>"
    mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(placeholders.fill(edition.email_txt, values, escape=False))
    mail.add_alternative(placeholders.fill(edition.email_html, values, escape=True), subtype="html")
    return mail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("draft", nargs="?", default=str(ROOT / "drafts" / SAMPLE))
    parser.add_argument("--eml", type=Path, help="also write the scored message to this file")
    args = parser.parse_args()
    if shutil.which("spamassassin") is None:
        print("spamassassin is not installed (apt-get install spamassassin)", file=sys.stderr)
        return 2
    raw = bytes(message(Path(args.draft)))
    if args.eml:
        args.eml.write_bytes(raw)
    report = subprocess.run(["spamassassin", "-t", "-L"], input=raw, capture_output=True, check=True).stdout
    details = report.decode("utf-8", "replace").split("Content analysis details:", 1)[-1]
    score = re.search(r"\(([-\d.]+) points", details)
    print(f"SpamAssassin score: {score[1] if score else '?'} (spamassassin -t -L, local tests only)")
    print(details.split("\n", 1)[-1].rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
