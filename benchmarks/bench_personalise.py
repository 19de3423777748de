"""Benchmark building each recipient's request body: spliced (the edition's parts JSON-encoded once per send,
each message joined from those pieces and the recipient's own values) against the whole message filled with
a regex and encoded with ``json.dumps`` per recipient, as sends did before. No network: only the bytes.

The edition is the golden sample (``tests/golden/2024-02-22-china-russia-report``, ~60 KB of HTML). Printed
per provider format: ns per recipient for the baseline and the spliced path, and their ratio; the two are
checked to parse to the same JSON first. Also the outbox's and SMTP's messages in batches of 100, the MIME
skeleton made per batch or once per send, and the SendGrid request body (the edition once, 1,000
personalizations) encoded by ``json.dumps`` and by orjson.

Run from the project root:  .venv/bin/python benchmarks/bench_personalise.py [--audience 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import messages
from pipeline.config import Settings
from pipeline.mail import Mail, Recipient
from pipeline.mime import MessageTemplate, message_template
from pipeline.providers.http import address, json_bytes, message_headers
from pipeline.providers.postmark import PostmarkProvider
from pipeline.providers.resend import ResendProvider, _tag
from pipeline.providers.sendgrid import SendGridProvider

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "2024-02-22-china-russia-report"
_PATTERN = re.compile(r"\{\{\s*(name|unsubscribe_url|view_url)\s*\}\}")


def _fill(text: str, values: dict[str, str], *, escape: bool) -> str:
    def value(match: re.Match[str]) -> str:
        found = values.get(match[1], "")
        return html.escape(found, quote=True) if escape else found

    return _PATTERN.sub(value, text)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def baseline_postmark(mail: Mail, person: Recipient) -> bytes:
    message: dict[str, Any] = {
        "From": mail.sender, "To": address(person), "Subject": mail.subject,
        "HtmlBody": _fill(mail.html, person.values, escape=True), "TextBody": _fill(mail.text, person.values,
                                                                                     escape=False),
        "Headers": [{"Name": name, "Value": value} for name, value in message_headers(mail, person).items()],
        "MessageStream": "broadcast", "Metadata": {"send": mail.label, "delivery": str(person.delivery_id)},
    }
    if mail.reply_to:
        message["ReplyTo"] = mail.reply_to
    return _dumps(message)


def baseline_resend(mail: Mail, person: Recipient) -> bytes:
    email: dict[str, Any] = {
        "from": mail.sender, "to": [address(person)], "subject": mail.subject,
        "html": _fill(mail.html, person.values, escape=True), "text": _fill(mail.text, person.values, escape=False),
        "headers": message_headers(mail, person),
        "tags": [{"name": "send", "value": _tag(mail.label)}, {"name": "delivery", "value": str(person.delivery_id)}],
    }
    if mail.reply_to:
        email["reply_to"] = mail.reply_to
    return _dumps(email)


def _settings() -> Settings:
    return Settings.model_validate({
        "publication": {"name": "The Report", "from": "The Report <report@example.org>", "reply_to":
                        "editor@example.org", "postal_address": "PO Box 1", "base_url": "https://example.org",
                        "asset_base_url": "https://example.org/assets"},
        "provider": {"name": "postmark", "api_key_env": "BENCH_KEY"}, "provider_secret": "not-a-real-key-0123456789",
    })


def _each(build: Callable[[Mail, Recipient], bytes], mail: Mail, people: list[Recipient]) -> None:
    for person in people:  # each body dropped at once, as a request's are sent: 20,000 kept would be 1.5 GB
        build(mail, person)


def _outbox(mail: Mail, people: list[Recipient], *, cached: bool) -> None:
    """Messages as the outbox and SMTP make them, in batches of 100: the MIME skeleton made per batch (as
    before) or once per send."""
    for start in range(0, len(people), 100):
        template = message_template(mail) if cached else MessageTemplate(mail)
        for person in people[start:start + 100]:
            template.render(person)


def _best(rounds: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audience", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    settings = _settings()
    mail = Mail(label="42", subject="The Report", html=(GOLDEN / "email.html").read_text(),
                text=(GOLDEN / "email.txt").read_text(), sender=settings.publication.from_,
                reply_to=settings.publication.reply_to,
                list_headers=messages.list_headers(settings, label="42", edition="march"))
    people = [messages.recipient(settings, label="42", nonce="0f1e2d3c", delivery_id=n, email=f"reader{n}@example.net",
                                 name=f"Reader {n}", unsubscribe_url=f"https://example.org/u/token{n:012d}",
                                 view_url="https://example.org/archive/march/") for n in range(args.audience)]
    print(f"edition: {len(mail.html):,} chars of HTML, {len(mail.text):,} of text; {args.audience:,} recipients, "
          f"best of {args.rounds}")
    postmark, resend = PostmarkProvider(settings), ResendProvider(settings)
    rows = [("postmark message", baseline_postmark, postmark._encode), ("resend email", baseline_resend, resend.encode)]
    for label, old, new in rows:
        for person in people[:50]:
            assert json.loads(old(mail, person)) == json.loads(new(mail, person)), label
        before = _best(args.rounds, lambda old=old: _each(old, mail, people))  # type: ignore[misc]
        after = _best(args.rounds, lambda new=new: _each(new, mail, people))  # type: ignore[misc]
        per = 1e9 / args.audience
        print(f"{label:18} json.dumps whole {before * per:9,.0f} ns/recipient   spliced {after * per:9,.0f} "
              f"ns/recipient   {before / after:5.1f}x faster")
    per = 1e9 / args.audience
    before = _best(args.rounds, lambda: _outbox(mail, people, cached=False))
    after = _best(args.rounds, lambda: _outbox(mail, people, cached=True))
    print(f"{'outbox/SMTP .eml':18} skeleton/batch   {before * per:9,.0f} ns/recipient   per send {after * per:9,.0f} "
          f"ns/recipient   {before / after:5.1f}x faster (batches of 100)")
    sendgrid = SendGridProvider(settings)
    body = sendgrid.request_body(mail, people[:1000])
    before = _best(args.rounds, lambda: _dumps(body))
    after = _best(args.rounds, lambda: json_bytes(body))
    print(f"{'sendgrid request':18} json.dumps       {before * 1e6:9,.0f} us/request     orjson  {after * 1e6:9,.0f} "
          f"us/request     {before / after:5.1f}x faster (1,000 personalizations)")


if __name__ == "__main__":
    main()
