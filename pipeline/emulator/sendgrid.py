"""SendGrid v3 ``POST /v3/mail/send``: one message, up to 1,000 personalizations.

The body is validated against the spec's ``PostMailSend`` schema, then against the rules
SendGrid states in prose (a content block unless a template is used, a subject, at most
1,000 recipients in all, reserved headers). Accepted mail answers 202 with an empty body
and an ``X-Message-Id`` header; errors are 400 ``{"errors": [{"message", "field", "help"}]}``.
Each personalization's ``substitutions`` are applied to its subject and content.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from http import HTTPStatus
from typing import Any

from jsonschema import Draft202012Validator
from starlette.responses import JSONResponse, Response

from pipeline.emulator.common import (
    MB,
    Call,
    bearer_token,
    display,
    first_violation,
    load_schema,
    make_validator,
    parse_json,
    same_key,
)
from pipeline.emulator.state import Record, Template, personalize

NAME = "sendgrid"
PATH = "/v3/mail/send"
MAX_BODY = 30 * MB  # "The total size of your email, including attachments, must be less than 30MB."
MAX_RECIPIENTS = 1000
# Headers the spec says may not be overridden (PostMailSend.personalizations.headers).
RESERVED_HEADERS = frozenset(name.lower() for name in (
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type", "Content-Transfer-Encoding", "To", "From",
    "Subject", "Reply-To", "CC", "BCC"))
OPTIONS = ("reply_to", "reply_to_list", "template_id", "categories", "send_at", "batch_id", "asm", "ip_pool_name",
           "mail_settings", "tracking_settings")
FROM_REQUIRED = ("The from object must be provided for every email send. It is an object that requires the email "
                 "parameter, but may also contain a name parameter.")


@cache
def _checker() -> Draft202012Validator:
    schema = load_schema("sendgrid-mail-send.json")
    # Spec quirk (provider-specs/README.md): the top-level custom_args is typed string, but
    # the API takes an object, as it does per personalization; accept both.
    schema["properties"]["custom_args"] = {"type": ["object", "string"]}
    return make_validator(schema)


def errors(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"errors": [{"message": message, "field": field, "help": None}]}, status_code=status,
                        headers=headers)


def fault_response(status: int, retry_after: str | None = None) -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return errors(status, HTTPStatus(status).phrase.lower(), headers=headers)


def too_large() -> Response:
    return errors(413, "content too large")


async def handle(call: Call) -> Response:
    token = bearer_token(call.request)
    if token is None:
        return errors(401, "authorization required")
    if not same_key(token, call.emulator.keys[NAME]):
        return errors(401, "The provided authorization grant is invalid, expired, or revoked")
    try:
        mail = parse_json(call.body)
    except ValueError:
        return errors(400, "Bad Request: the body is not valid JSON")
    problem = _problem(mail)
    if problem is not None:
        return errors(400, *problem)
    message_id = call.emulator.ids.token()
    if (mail.get("mail_settings") or {}).get("sandbox_mode", {}).get("enable"):
        return Response(status_code=200)  # sandbox mode: validated, nothing sent
    batch = call.emulator.next_batch()
    call.emulator.mailbox.add(_records(call, batch, message_id, mail))
    return Response(status_code=202, headers={"X-Message-Id": message_id})


def _problem(mail: Any) -> tuple[str, str | None] | None:
    """(message, field) of the first reason SendGrid would answer 400, or None."""
    if not isinstance(mail, dict):
        return "The request body must be a JSON object.", None
    violation = first_violation(_checker(), mail)
    if violation is not None:
        if violation.path == ("from",):
            return FROM_REQUIRED, "from"
        if violation.keyword == "required":
            return f"The {violation.name} parameter is required.", violation.field
        if violation.keyword == "format":
            return "Does not contain a valid address.", violation.field
        return f"Invalid {violation.name or 'body'}: {violation.message}", violation.field
    personalizations = mail["personalizations"]
    if not personalizations:
        return ("The personalizations field is required and must have at least one personalization.",
                "personalizations")
    for index, personalization in enumerate(personalizations):
        if not personalization["to"]:
            return ("The to array is required for all personalization objects, and must have at least one email "
                    "object with a valid email address.", f"personalizations.{index}.to")
    recipients = sum(len(p.get(kind) or ()) for p in personalizations for kind in ("to", "cc", "bcc"))
    if recipients > MAX_RECIPIENTS:
        return (f"The total number of recipients must be no more than {MAX_RECIPIENTS}. This includes all recipients "
                "defined within the to, cc, and bcc parameters, across each object that you include in the "
                "personalizations array.", "personalizations")
    if not mail.get("template_id"):
        if not mail.get("content"):
            return ("Unless a valid template_id is provided, the content parameter is required. There must be at "
                    "least one defined content block.", "content")
        if not mail.get("subject") and not all(p.get("subject") for p in personalizations):
            return ("The subject is required. You can get around this requirement if you use a template with a "
                    "subject defined or if every personalization has a subject defined.", "subject")
    types = [block["type"] for block in mail.get("content") or ()]
    expected = [kind for kind in ("text/plain", "text/html") if kind in types]
    if types[:len(expected)] != expected:
        return "If present, text/plain must be first, followed by text/html, followed by any other content.", "content"
    return _reserved_header(mail)


def _reserved_header(mail: dict[str, Any]) -> tuple[str, str] | None:
    places = [("headers", mail.get("headers"))]
    places += [(f"personalizations.{i}.headers", p.get("headers")) for i, p in enumerate(mail["personalizations"])]
    for field, headers in places:
        for name in headers or {}:
            if name.lower() in RESERVED_HEADERS:
                return f"The {name} header is reserved and cannot be set in headers.", field
    return None


def _records(call: Call, batch: int, message_id: str, mail: dict[str, Any]) -> list[Record]:
    """A record per recipient of every personalization, substitutions applied (lazily)."""
    contents = {block["type"]: block["value"] for block in mail.get("content") or ()}
    html, text = contents.get("text/html"), contents.get("text/plain")
    top_headers = mail.get("headers") or {}
    top_args = mail["custom_args"] if isinstance(mail.get("custom_args"), dict) else {}
    options = {name: mail[name] for name in OPTIONS if name in mail}
    bodies: dict[frozenset[str], tuple[Template | str | None, Template | str | None]] = {}
    records = []
    for p in mail["personalizations"]:
        substitutions = {key: value for key, value in (p.get("substitutions") or {}).items() if key}
        subject: Any = p.get("subject") or mail.get("subject")
        html_p: Any = html
        text_p: Any = text
        if substitutions:
            keys = frozenset(substitutions)
            if keys not in bodies:
                pattern = _pattern(keys)
                bodies[keys] = (_split(html, pattern), _split(text, pattern))
            html_p, text_p = (personalize(part, substitutions) for part in bodies[keys])
            subject = personalize(_split(subject, _pattern(keys)), substitutions)
        sender = p.get("from") or mail["from"]
        headers = {**top_headers, **p["headers"]} if p.get("headers") else top_headers
        metadata = {**top_args, **p["custom_args"]} if p.get("custom_args") else top_args
        visible = [person["email"] for kind in ("to", "cc") for person in p.get(kind) or ()]
        for person in [*p["to"], *(p.get("cc") or ()), *(p.get("bcc") or ())]:
            records.append(Record(provider=NAME, batch=batch, id=message_id, to=person["email"],
                                  sender=display(sender.get("name"), sender["email"]), subject=subject, html=html_p,
                                  text=text_p, headers=headers, metadata=metadata, visible_to=visible,
                                  options=options, received_at=call.received_at))
    return records


@lru_cache(maxsize=256)
def _pattern(keys: frozenset[str]) -> re.Pattern[str]:
    """Any of the substitution tags, longest first so that no tag is cut short by another it contains."""
    return re.compile("(" + "|".join(re.escape(key) for key in sorted(keys, key=len, reverse=True)) + ")")


def _split(text: str | None, pattern: re.Pattern[str]) -> Template | str | None:
    return None if text is None else Template.split(text, pattern)
