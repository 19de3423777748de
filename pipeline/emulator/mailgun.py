"""Mailgun ``POST /v3/{domain}/messages``: a multipart (or URL-encoded) form, up to 1,000 recipients.

Authentication is HTTP Basic with the user ``api`` and the key; a bad one gets 401 and the
plain body ``Forbidden``. With ``recipient-variables`` (a JSON object keyed by address) the
request is a batch send: every recipient gets a message of their own, addressed to them
alone, with ``%recipient.NAME%`` replaced from their variables in the subject, the bodies,
the ``h:`` headers and the ``v:`` variables. ``h:Name`` fields are headers, ``v:name`` fields are variables
(recorded as metadata), ``o:`` fields are options. The EU region (api.eu.mailgun.net)
serves the same path, so this one route stands in for both hosts.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from functools import cache
from http import HTTPStatus
from typing import Any

from python_multipart.multipart import parse_options_header
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.responses import JSONResponse, PlainTextResponse, Response

from pipeline.emulator.common import (
    MB,
    Call,
    addresses,
    basic_credentials,
    first_violation,
    load_schema,
    looks_like_address,
    same_key,
    unique,
    validator,
)
from pipeline.emulator.state import Record, Template, personalize

NAME = "mailgun"
PATH = "/v3/{domain}/messages"
SCHEMA = "mailgun-messages.json"
MAX_BODY = 25 * MB  # Mailgun's maximum message size
MAX_RECIPIENTS = 1000
MAX_OPTIONS = 16 * 1024  # "Send options (parameters starting with o:, h:, v:, or t:) are limited to 16KB total"
MAX_FIELDS = 20_000
RECIPIENT_VARIABLE = re.compile(r"%recipient\.([^%\s]+)%")


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"message": message}, status_code=status, headers=headers)


def fault_response(status: int, retry_after: str | None = None) -> Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return error(status, HTTPStatus(status).phrase, headers)


def too_large() -> Response:
    return error(413, f"Message size exceeds the {MAX_BODY // MB} MB limit")


@cache
def _described() -> tuple[frozenset[str], frozenset[str]]:
    """(the form fields the spec describes, those it types as arrays: they may be given more than once)."""
    properties = load_schema(SCHEMA)["properties"]
    arrays = frozenset(name for name, schema in properties.items() if schema.get("type") == "array")
    return frozenset(properties), arrays


class Refused(Exception):
    """The request is refused with 400 and this message."""


async def handle(call: Call) -> Response:
    credentials = basic_credentials(call.request)
    if credentials is None or credentials[0] != "api" or not same_key(credentials[1], call.emulator.keys[NAME]):
        return PlainTextResponse("Forbidden", status_code=401)
    try:
        form = await _form(call)
    except MultiPartException as exc:
        return error(400, exc.message)
    try:
        fields = _fields(form)
        recipients, variables = _accept(fields)
    except Refused as exc:
        return error(400, str(exc))
    finally:
        await form.close()
    domain = call.request.path_params["domain"]
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    batch = call.emulator.next_batch()
    message_id = f"<{stamp}.{batch}.{call.emulator.ids.uuid().replace('-', '')[:16].upper()}@{domain}>"
    call.emulator.mailbox.add(_records(call, batch, message_id, fields, recipients, variables))
    return JSONResponse({"id": message_id, "message": "Queued. Thank you."})


async def _form(call: Call) -> FormData:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield call.body

    media_type, _ = parse_options_header(call.request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data":
        parser: MultiPartParser | FormParser = MultiPartParser(
            call.request.headers, stream(), max_files=1000, max_fields=MAX_FIELDS, max_part_size=MAX_BODY)
    elif media_type == b"application/x-www-form-urlencoded":
        parser = FormParser(call.request.headers, stream(), max_fields=MAX_FIELDS, max_part_size=MAX_BODY)
    else:
        return FormData()
    return await parser.parse()


def _fields(form: FormData) -> dict[str, Any]:
    """The form as the object the schema describes.

    Repeatable fields become lists; a described single field given twice becomes a list too,
    which the schema refuses; any other field given twice (``h:``, ``v:`` ...) keeps its last value.
    """
    (described, repeatable) = _described()
    fields: dict[str, Any] = {}
    for name, item in form.multi_items():
        value = (item.filename or "") if isinstance(item, UploadFile) else item
        if name in repeatable:
            fields.setdefault(name, []).append(value)
        elif name in fields and name in described:
            previous = fields[name]
            fields[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[name] = value
    return fields


def _accept(fields: dict[str, Any]) -> tuple[list[str], dict[str, Any] | None]:
    """(the recipients, the recipient variables or None); raises Refused as Mailgun would answer 400."""
    violation = first_violation(validator(SCHEMA), fields)
    if violation is not None:
        if violation.keyword == "required":
            raise Refused(f"{violation.name} parameter is missing")
        raise Refused(f"{violation.name} parameter is invalid: {violation.message}")
    if not any(fields.get(name) for name in ("text", "html", "amp-html", "template")):
        raise Refused("Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified")
    if fields.get("html") and fields.get("template"):
        raise Refused("Only one parameters 'html' or 'template' is allowed.")
    options = sum(len(name) + len(str(value)) for name, value in fields.items() if name[:2] in ("o:", "h:", "v:", "t:"))
    if options > MAX_OPTIONS:
        raise Refused("Send options (parameters starting with o:, h:, or v:) are limited to 16KB total")
    recipients = _recipients(fields)
    if "recipient-variables" not in fields:
        return recipients, None
    try:
        variables = json.loads(fields["recipient-variables"])
    except ValueError:
        raise Refused("recipient-variables parameter is not a valid JSON") from None
    if not isinstance(variables, dict) or not all(isinstance(value, dict) for value in variables.values()):
        raise Refused("recipient-variables parameter must be a JSON object of objects, keyed by recipient address")
    return recipients, variables


def _recipients(fields: dict[str, Any]) -> list[str]:
    recipients = []
    for kind in ("to", "cc", "bcc"):
        found = addresses(fields.get(kind))
        if not all(looks_like_address(address) for address in found):
            raise Refused(f"{kind} parameter is not a valid address. please check documentation")
        if kind == "to" and not found:
            raise Refused("to parameter is missing")
        recipients += found
    recipients = unique(recipients)  # "Duplicate addresses are automatically ignored."
    if len(recipients) > MAX_RECIPIENTS:
        raise Refused(f"Too many recipients, max is {MAX_RECIPIENTS}")
    return recipients


def _records(call: Call, batch: int, message_id: str, fields: dict[str, Any], recipients: list[str],
             variables: dict[str, Any] | None) -> list[Record]:
    headers = {name[2:]: value for name, value in fields.items() if name.startswith("h:")}
    metadata = {name[2:]: value for name, value in fields.items() if name.startswith("v:")}
    options = {name: value for name, value in fields.items() if name.startswith("o:")}
    subject, html, text = fields["subject"], fields.get("html"), fields.get("text")
    common = {"provider": NAME, "batch": batch, "id": message_id, "sender": fields["from"], "options": options,
              "received_at": call.received_at}
    if variables is None:  # one message, every recipient in its To header
        visible = addresses(fields.get("to")) + addresses(fields.get("cc"))
        return [Record(to=address, subject=subject, html=html, text=text, headers=headers, metadata=metadata,
                       visible_to=visible, **common) for address in recipients]
    subject_t, html_t, text_t = (None if part is None else Template.split(part, RECIPIENT_VARIABLE)
                                 for part in (subject, html, text))
    header_ts, metadata_ts = _templates(headers), _templates(metadata)
    records = []
    for address in recipients:
        values = variables.get(address) or variables.get(address.lower()) or {}
        records.append(Record(to=address, subject=personalize(subject_t, values), html=personalize(html_t, values),
                              text=personalize(text_t, values), headers=_render(header_ts, values, headers),
                              metadata=_render(metadata_ts, values, metadata), visible_to=[address], **common))
    return records


def _templates(fields: dict[str, str]) -> dict[str, Template | str] | None:
    """The fields split at their recipient variables; None when no field has one."""
    split = {name: Template.split(value, RECIPIENT_VARIABLE) for name, value in fields.items()}
    return split if any(isinstance(value, Template) for value in split.values()) else None


def _render(templates: dict[str, Template | str] | None, values: dict[str, Any],
            shared: dict[str, str]) -> dict[str, str]:
    if templates is None:
        return shared
    return {name: str(personalize(value, values)) for name, value in templates.items()}
