"""The reader's end of `make demo`: serve the web side for a moment and leave the list as a mail client would.

Starts `newsletter serve` on a free loopback port, takes the first message of the
latest send from the outbox, posts RFC 8058's one-click body to the https address
of its List-Unsubscribe header (sent to the local server instead of base_url), shows
the reader suppressed, and stops the server.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

NEWSLETTER = str(Path(sys.executable).with_name("newsletter"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def latest_message(outbox: Path) -> Path:
    sends = [folder for folder in outbox.iterdir() if folder.is_dir() and folder.name.isdigit()]
    if not sends:
        sys.exit("demo: no send in the outbox yet")
    latest = max(sends, key=lambda folder: int(folder.name))
    messages = sorted(latest.glob("*.eml"), key=lambda path: int(path.stem) if path.stem.isdigit() else 0)
    if not messages:
        sys.exit(f"demo: {latest} holds no message")
    return messages[0]


def main() -> int:
    outbox = Path(sys.argv[1] if len(sys.argv) > 1 else "outbox")
    message = email.message_from_bytes(latest_message(outbox).read_bytes(), policy=email.policy.default)
    found = re.search(r"<(https?://[^>]+)>", str(message["List-Unsubscribe"]))
    if found is None:
        sys.exit("demo: the message has no https List-Unsubscribe address")
    public = urlsplit(found[1])
    port = free_port()
    local = f"http://127.0.0.1:{port}{public.path}"
    server = subprocess.Popen([NEWSLETTER, "serve", "--port", str(port)])
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        print(f"\nA mail client unsubscribes {message['To']} (one-click POST to {public.scheme}://{public.netloc}"
              f"{public.path[:12]}…, sent to the local server):")
        answer = httpx.post(local, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        print(f"  HTTP {answer.status_code}: {answer.text.strip()}")
        print("  The confirmation page a reader sees on clicking the link instead: "
              f"HTTP {httpx.get(local, timeout=10).status_code} (a GET changes nothing)\n")
    finally:
        server.terminate()
        server.wait(timeout=10)
    listing = subprocess.run([NEWSLETTER, "subscribers", "list", "--status", "unsubscribed"], check=False)
    return listing.returncode or (0 if answer.status_code == 200 else 1)


if __name__ == "__main__":
    raise SystemExit(main())
