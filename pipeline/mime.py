"""RFC 5322 messages for the outbox and SMTP, built fast enough for large audiences.

The email package lays out the skeleton of a send's message once — shared
headers, the ``multipart/alternative`` structure, part headers and boundary —
with marker bodies. Each recipient's message is then that skeleton with their
own headers (To, Date, Message-ID, List-Unsubscribe …) and their personalised
parts, UTF-8, encoded by ``binascii``: the text quoted-printable (readable in
the raw message), the HTML base64 (quoted-printable costs five times as much
for a 60 KB part); every line within 76 octets. Building every message with the
email package instead costs 2–4 ms each, ten times the rest of a send.
"""

from __future__ import annotations

import base64
import binascii
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formataddr, formatdate

from pipeline.messages import personalise
from pipeline.providers import Mail, Recipient

_TEXT_MARK = "newsletter-text-part-goes-here"
_HTML_MARK = "newsletter-html-part-goes-here"
CRLF = b"\r\n"
# Headers that differ per recipient; the rest are laid out once in the skeleton.
_OWN_HEADERS = ("Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post")


class MessageTemplate:
    """The MIME skeleton of one send's messages; ``render`` makes one recipient's message."""

    def __init__(self, mail: Mail):
        self.mail = mail
        skeleton = EmailMessage(policy=SMTP)
        skeleton["From"] = mail.sender
        skeleton["Subject"] = mail.subject
        if mail.reply_to:
            skeleton["Reply-To"] = mail.reply_to
        skeleton["List-Id"] = mail.list_id
        skeleton["MIME-Version"] = "1.0"
        skeleton.set_content(_TEXT_MARK, subtype="plain", charset="utf-8", cte="quoted-printable")
        skeleton.add_alternative(_HTML_MARK, subtype="html", charset="utf-8", cte="base64")
        raw = skeleton.as_bytes()
        self.head, body = raw.split(CRLF + CRLF, 1)
        self.before_text, rest = body.split(_TEXT_MARK.encode(), 1)
        # The email package encodes the marker with the line break it adds to every text part.
        html_mark = binascii.b2a_base64(_HTML_MARK.encode() + CRLF, newline=False)
        self.between, self.after_html = rest.split(html_mark, 1)

    def render(self, person: Recipient) -> bytes:
        """The complete message for one recipient, CRLF line endings."""
        html, text = personalise(self.mail, person)
        local, _, domain = person.email.rpartition("@")
        headers = [
            b"To: " + formataddr((" ".join(person.name.split()), person.email), charset="utf-8").encode("ascii"),
            b"Date: " + formatdate(usegmt=True).encode("ascii"),
        ]
        for name in _OWN_HEADERS:
            if name in person.headers:
                headers.append(_header(name, person.headers[name]))
        return b"".join((
            self.head, CRLF, CRLF.join(headers), CRLF, CRLF,
            self.before_text, _quoted_printable(text), self.between, _base64(html), self.after_html,
        ))


def _header(name: str, value: str) -> bytes:
    """An ASCII header, folded after commas so no line is longer than the RFC 5322 recommends."""
    parts = [part.strip() for part in value.split(",")] if name == "List-Unsubscribe" else [value]
    return f"{name}: " .encode() + ",\r\n ".join(parts).encode("ascii")


def _base64(text: str) -> bytes:
    """base64 in lines of 76 characters, without a final line break (the skeleton has it)."""
    return base64.encodebytes(text.encode("utf-8")).rstrip(b"\n").replace(b"\n", CRLF)


def _quoted_printable(text: str) -> bytes:
    data = text.replace("\r\n", "\n").rstrip("\n").encode("utf-8")  # the skeleton ends the part
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)
