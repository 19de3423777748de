"""Postmark ``POST /email/batch``: a JSON array of up to 500 messages, one result per message.

Postmark answers HTTP 200 even when some messages fail: each failed item carries a non-zero
``ErrorCode`` (300 invalid message, 406 inactive recipient). Only a request that cannot be
read at all fails as a whole: 401 for the token, 422 for the body, 413 for its size.
The token ``POSTMARK_API_TEST`` is accepted and sends nothing, as Postmark documents.
Source: ``provider-specs/postmark.md``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response

from pipeline.emulator.common import (
    MB,
    Call,
    addresses,
    first_violation,
    looks_like_address,
    parse_json,
    same_key,
    validator,
)
from pipeline.emulator.state import Record

NAME = "postmark"
PATH = "/email/batch"
MAX_MESSAGES = 500
MAX_BODY = 50 * MB
MAX_MESSAGE = 10 * MB
MAX_RECIPIENTS = 50  # To, Cc and Bcc together
TEST_TOKEN = "POSTMARK_API_TEST"
NO_TOKEN = ("No Account or Server API tokens were supplied in the HTTP headers. Please add a header for either "
            "X-Postmark-Server-Token or X-Postmark-Account-Token.")
BAD_TOKEN = ("The Server Token you provided in the X-Postmark-Server-Token request header was invalid. "
             "Please verify that you are using a valid token.")
INACTIVE = ("You tried to send to a recipient that has been marked as inactive. Found inactive addresses: {found}. "
            "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual "
            "suppression.")


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"ErrorCode": code, "Message": message}, status_code=status, headers=headers)


def fault_response(status: int, retry_after: str | None = None) -> Response:
    # Postmark documents 429, 500 and 503 without a body shape; its usual {ErrorCode, Message} is used.
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    return error(status, status, HTTPStatus(status).phrase, headers)


def too_large() -> Response:
    return error(413, 413, f"The request is larger than the {MAX_BODY // MB} MB a batch may be.")


async def handle(call: Call) -> Response:
    token = call.request.headers.get("x-postmark-server-token")
    if not token:
        return error(401, 10, NO_TOKEN)
    testing = token == TEST_TOKEN
    if not testing and not same_key(token, call.emulator.keys[NAME]):
        return error(401, 10, BAD_TOKEN)
    try:
        messages = parse_json(call.body)
    except ValueError:
        return error(422, 402, "Received invalid JSON input.")
    if not isinstance(messages, list) or not all(isinstance(message, dict) for message in messages):
        return error(422, 402, "Received invalid JSON input: the batch must be a JSON array of message objects.")
    if len(messages) > MAX_MESSAGES:
        return error(422, 410, f"Too many batch messages ({len(messages)}). You may only send up to "
                               f"{MAX_MESSAGES} messages in a batched call.")
    if any(_size(message) > MAX_MESSAGE for message in messages):
        return error(413, 413, f"A message is larger than the {MAX_MESSAGE // MB} MB Postmark accepts.")
    batch = call.emulator.next_batch()
    results, records = [], []
    for message in messages:
        result, accepted = _send_one(call, batch, message, record=not testing)
        results.append(result)
        records += accepted
    call.emulator.mailbox.add(records)
    return JSONResponse(results)


def _send_one(call: Call, batch: int, message: dict[str, Any], *,
              record: bool) -> tuple[dict[str, Any], list[Record]]:
    """The batch result for one message, and its records if it was accepted and is to be recorded."""
    problem = _problem(message)
    if problem:
        return {"ErrorCode": 300, "Message": problem, "To": message.get("To")}, []
    recipients = addresses(message.get("To")) + addresses(message.get("Cc")) + addresses(message.get("Bcc"))
    inactive = [address for address in recipients if call.emulator.is_inactive(address)]
    if inactive:
        return {"ErrorCode": 406, "Message": INACTIVE.format(found=", ".join(inactive)), "To": message.get("To")}, []
    message_id = call.emulator.ids.uuid()
    result = {"To": message.get("To"), "SubmittedAt": call.received_at, "MessageID": message_id,
              "ErrorCode": 0, "Message": "OK"}
    if not record:
        return result, []
    pool = call.emulator.mailbox.pool
    html, text = pool.share(message.get("HtmlBody")), pool.share(message.get("TextBody"))
    headers = {header["Name"]: header["Value"] for header in message.get("Headers") or ()}
    options = {"MessageStream": message.get("MessageStream") or "outbound"}
    options.update((name, message[name]) for name in ("Tag", "TrackOpens", "TrackLinks", "ReplyTo")
                   if message.get(name) is not None)
    visible = addresses(message.get("To")) + addresses(message.get("Cc"))
    records = [Record(provider=NAME, batch=batch, id=message_id, to=address, sender=message["From"],
                      subject=message.get("Subject"), html=html, text=text, headers=headers,
                      metadata=message.get("Metadata") or {}, options=options, visible_to=visible,
                      received_at=call.received_at)
               for address in recipients]
    return result, records


def _size(message: dict[str, Any]) -> int:
    """Characters in the message's bodies and attachments: what Postmark's 10 MB limit is about."""
    parts = [message.get("HtmlBody"), message.get("TextBody")]
    attachments = message.get("Attachments")
    if isinstance(attachments, list):
        parts += [attachment.get("Content") for attachment in attachments if isinstance(attachment, dict)]
    return sum(len(part) for part in parts if isinstance(part, str))


def _problem(message: dict[str, Any]) -> str | None:
    """Why Postmark would refuse this message (ErrorCode 300), or None."""
    violation = first_violation(validator("postmark-message.json"), message)
    if violation is not None:
        if violation.keyword == "required":
            return f"Invalid '{violation.name}' address: no value given."
        return f"Invalid '{violation.field}' value: {violation.message}."
    sender = addresses(message["From"])
    if len(sender) != 1 or not looks_like_address(sender[0]):
        return f"Invalid 'From' address: '{message['From']}'."
    if not message.get("HtmlBody") and not message.get("TextBody"):
        return "Provide either email TextBody or HtmlBody or both."
    count = 0
    for name in ("To", "Cc", "Bcc"):
        for address in addresses(message.get(name)):
            if not looks_like_address(address):
                return f"Error parsing '{name}': Illegal email address '{address}'. It must contain the '@' symbol."
            count += 1
    if count == 0:
        return "Zero recipients specified"
    if count > MAX_RECIPIENTS:
        return f"Too many recipients ({count}): a message may have at most {MAX_RECIPIENTS} in To, Cc and Bcc."
    return None
