"""Resend ``POST /emails/batch``: a bare JSON array of up to 100 ``SendEmailRequest`` objects.

Errors are ``{"statusCode", "name", "message"}`` with the names of Resend's error reference:
401 ``missing_api_key``, 403 ``invalid_api_key``, 422 ``missing_required_field`` and
``validation_error``, 409 ``invalid_idempotent_request``. An ``Idempotency-Key`` (1 to 256
characters) makes a retry safe: within 24 hours, the same key with the same body gets the
first answer again and sends nothing; the same key with another body gets 409.
"""

from __future__ import annotations

import hashlib
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response

from pipeline.emulator.common import (
    MB,
    Call,
    addresses,
    bearer_token,
    first_violation,
    looks_like_address,
    parse_json,
    same_key,
    validator,
)
from pipeline.emulator.state import Record

NAME = "resend"
PATH = "/emails/batch"
MAX_EMAILS = 100  # documented, although the spec carries no maxItems
MAX_BODY = 40 * MB  # Resend's limit for one email, attachments included; applied to the request
MAX_KEY = 256
FAULT_NAMES = {429: "rate_limit_exceeded", 500: "application_error"}
ADDRESS_FORMAT = "The email address needs to follow the `email@example.com` or `Name <email@example.com>` format."
OPTIONS = ("reply_to", "scheduled_at", "topic_id", "template")


def error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"statusCode": status, "name": name, "message": message}, status_code=status,
                        headers=headers)


def fault_response(status: int, retry_after: str | None = None) -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    if status == 429:
        return error(429, "rate_limit_exceeded", "Too many requests. Please limit the number of requests per "
                                                 "second.", headers)
    return error(status, FAULT_NAMES.get(status, "internal_server_error"), HTTPStatus(status).phrase, headers)


def too_large() -> Response:
    return error(413, "validation_error", f"The request body is larger than {MAX_BODY // MB} MB.")


async def handle(call: Call) -> Response:
    token = bearer_token(call.request)
    if token is None:
        return error(401, "missing_api_key", "Missing API key in the authorization header.")
    if not same_key(token, call.emulator.keys[NAME]):
        return error(403, "invalid_api_key", "API key is invalid.")
    key = call.request.headers.get("idempotency-key")
    digest = hashlib.sha256(call.body).hexdigest()
    if key is not None:
        if not 1 <= len(key) <= MAX_KEY:
            return error(400, "invalid_idempotency_key", "The key must be between 1-256 chars.")
        stored = call.emulator.idempotency.get(key)
        if stored is not None:
            if stored.digest != digest:
                return error(409, "invalid_idempotent_request",
                             "Same idempotency key used with a different request payload.")
            call.emulator.replayed += 1
            return Response(stored.body, status_code=stored.status, headers=stored.headers)
    response = _send(call)
    if key is not None and response.status_code == 200:
        call.emulator.idempotency.put(key, digest, response.status_code, bytes(response.body),
                                      {"content-type": "application/json"})
    return response


def _send(call: Call) -> Response:
    try:
        emails = parse_json(call.body)
    except ValueError:
        return error(400, "validation_error", "The request body is not valid JSON.")
    if not isinstance(emails, list):
        return error(422, "validation_error", "The batch must be a JSON array of emails.")
    if len(emails) > MAX_EMAILS:
        return error(422, "validation_error",
                     f"Too many emails in the batch: {len(emails)}. A batch holds at most {MAX_EMAILS}.")
    problem = _problem(emails)
    if problem is not None:
        return error(422, *problem)
    batch = call.emulator.next_batch()
    ids, records = [], []
    for email in emails:
        email_id = call.emulator.ids.uuid()
        ids.append({"id": email_id})
        records += _records(call, batch, email_id, email)
    call.emulator.mailbox.add(records)
    return JSONResponse({"data": ids})


def _problem(emails: list[Any]) -> tuple[str, str] | None:
    """(error name, message) of the first email Resend would refuse, or None."""
    violation = first_violation(validator("resend-emails-batch.json"), emails)
    if violation is not None:
        where = f" (email {violation.path[0]} of the batch)" if violation.path else ""
        if violation.keyword == "required":
            return "missing_required_field", f"Missing `{violation.name}` field{where}."
        return "validation_error", f"Invalid `{violation.name}` field{where}: {violation.message}"
    for index, email in enumerate(emails):
        for name in ("from", "to", "cc", "bcc", "reply_to"):
            found = addresses(email.get(name))
            if not all(looks_like_address(address) for address in found) or (name == "from" and len(found) != 1):
                return "validation_error", f"Invalid `{name}` field (email {index} of the batch). {ADDRESS_FORMAT}"
    return None


def _records(call: Call, batch: int, email_id: str, email: dict[str, Any]) -> list[Record]:
    tags = {tag.get("name"): tag.get("value") for tag in email.get("tags") or ()}
    options = {name: email[name] for name in OPTIONS if name in email}
    visible = addresses(email["to"]) + addresses(email.get("cc"))
    recipients = visible + addresses(email.get("bcc"))
    headers = email.get("headers") or {}
    pool = call.emulator.mailbox.pool
    html, text = pool.share(email.get("html")), pool.share(email.get("text"))
    return [Record(provider=NAME, batch=batch, id=email_id, to=address, sender=email["from"], subject=email["subject"],
                   html=html, text=text, headers=headers, metadata=tags,
                   visible_to=visible, options=options, received_at=call.received_at)
            for address in recipients]
