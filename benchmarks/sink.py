"""A minimal stand-in for the four providers' send endpoints: it reads each body and answers as the provider would.

The project's emulator validates every request against the providers' schemas and records every message, so
it is the bottleneck of any send it serves. This sink does only what a provider's answer needs — it checks the
key, reads the body to its end, finds how many messages it holds and answers in the provider's shape — so that
a benchmark measures the sender, not the server. It runs in its own process (asyncio, HTTP/1.1 with
keep-alive, Content-Length bodies), on 127.0.0.1 only:

    POST /email/batch           Postmark  X-Postmark-Server-Token  200 [{"To", "SubmittedAt", "MessageID",
                                                                         "ErrorCode": 0, "Message": "OK"}, ...]
    POST /v3/mail/send          SendGrid  Authorization: Bearer    202, empty, X-Message-Id
    POST /v3/{domain}/messages  Mailgun   Basic api:KEY            200 {"id": "<...@domain>", "message"}
    POST /emails/batch          Resend    Authorization: Bearer    200 {"data": [{"id"}, ...]}

(the answers the providers document, as ``pipeline/emulator`` gives them). Its control API:

    GET  /_sink/stats   requests, messages and bytes per provider, answers by status, the sending phase
                        (``time.monotonic`` when the first send request began to arrive and when the last
                        answer was written) and the digest of the bodies (``pipeline.emulator.digest``)
    POST /_sink/reset   forget it all

Run:  .venv/bin/python benchmarks/sink.py [--port 0] [--key emulator-key]   (prints "listening on URL")
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import itertools
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from pipeline.emulator.digest import BodyDigest

DEFAULT_KEY = "emulator-key"
MAX_HEAD = 64 * 1024
HEAD_WINDOW = 2048  # bytes of a message in which its recipient is looked for
Body = bytes | bytearray
MAILGUN_PATH = re.compile(r"^/v3/([^/]+)/messages$")
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           411: "Length Required", 431: "Request Header Fields Too Large"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    messages: int = 0  # how many messages the request held, when it was accepted


class Sink:
    """What the sink has seen since its start or last reset."""

    def __init__(self, key: str):
        self.key = key
        self._ids = itertools.count(1)
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.messages: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()
        self.bodies = BodyDigest(xxhash.xxh3_128_intdigest, name="xxh3_128", bits=128)
        self.first: float | None = None
        self.last: float | None = None

    def stats(self) -> dict[str, Any]:
        phase = None if self.first is None or self.last is None else self.last - self.first
        return {"requests": dict(self.requests), "messages": dict(self.messages), "bytes": dict(self.bytes),
                "answers": dict(self.answers), "bodies": self.bodies.to_json(),
                "sending": {"first_request": self.first, "last_answer": self.last, "seconds": phase}}

    def next_id(self) -> int:
        return next(self._ids)

    def answer(self, method: str, path: str, headers: dict[str, str], body: Body) -> tuple[str | None, Answer]:
        """The provider the request is for (None for the control API) and the answer to it."""
        if path == "/_sink/stats" and method == "GET":
            return None, Answer(200, orjson.dumps(self.stats()), (("Content-Type", "application/json"),))
        if path == "/_sink/reset" and method == "POST":
            self.reset()
            return None, Answer(200, b'{"reset":true}', (("Content-Type", "application/json"),))
        route = provider_route(method, path)
        if route is None:
            return None, Answer(404, b'{"message":"not found"}', (("Content-Type", "application/json"),))
        provider, handle = route
        return provider, handle(self, headers, path, body)


def provider_route(method: str, path: str) -> tuple[str, Callable[[Sink, dict[str, str], str, Body], Answer]] | None:
    if method != "POST":
        return None
    if path == "/email/batch":
        return "postmark", postmark
    if path == "/v3/mail/send":
        return "sendgrid", sendgrid
    if path == "/emails/batch":
        return "resend", resend
    if MAILGUN_PATH.match(path):
        return "mailgun", mailgun
    return None


def _json(status: int, value: Any, *headers: tuple[str, str]) -> Answer:
    return Answer(status, orjson.dumps(value), (("Content-Type", "application/json"), *headers))


def _uuid(number: int) -> str:
    """A UUID-shaped id, unique within the sink's life (cheaper than uuid4 for thousands per request)."""
    text = f"{number:032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-8{text[17:20]}-{text[20:]}"


def _json_body(body: Body) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def postmark(sink: Sink, headers: dict[str, str], path: str, body: Body) -> Answer:
    if headers.get("x-postmark-server-token") != sink.key:
        return _json(401, {"ErrorCode": 10, "Message": "The Server Token you provided in the "
                                                       "X-Postmark-Server-Token request header was invalid."})
    recipients = message_heads(body, b'{"From":', b"To")
    if recipients is None:
        return _json(422, {"ErrorCode": 402, "Message": "Received invalid JSON input."})
    submitted = dt.datetime.now(dt.UTC).isoformat()
    answers = [{"ErrorCode": 0, "Message": "OK", "MessageID": _uuid(sink.next_id()), "SubmittedAt": submitted,
                "To": to} for to in recipients]
    return Answer(200, orjson.dumps(answers), (("Content-Type", "application/json"),), len(answers))


def message_heads(body: Body, start: bytes, field: bytes) -> list[Any] | None:
    """The ``field`` of each message of a JSON array whose messages all begin with ``start`` (the member the
    pipeline's providers write first), read from the message's first few hundred bytes: a scan for ``start``,
    not a parse of every 60 KB body (which would make the sink, not the sender, the bottleneck). None when the
    body is not such an array."""
    data = bytes(body[:1]) + bytes(body[-1:])
    if data != b"[]":
        return None
    values, at = [], 1
    pattern = re.compile(rb'"' + field + rb'":("(?:[^"\\]|\\.)*"|\[[^\]]*\])')
    while at < len(body) - 1:
        if body[at:at + len(start)] != start:
            return None
        head = bytes(body[at:at + HEAD_WINDOW])
        found = pattern.search(head)
        values.append(orjson.loads(found[1]) if found else None)
        following = body.find(b"}," + start, at + 1)
        at = len(body) - 1 if following < 0 else following + 2
    return values


def sendgrid(sink: Sink, headers: dict[str, str], path: str, body: Body) -> Answer:
    if headers.get("authorization") != f"Bearer {sink.key}":
        return _json(401, {"errors": [{"field": None, "message": "The provided authorization grant is invalid, "
                                                                 "expired, or revoked"}]})
    request = _json_body(body)
    personalizations = request.get("personalizations") if isinstance(request, dict) else None
    if not isinstance(personalizations, list):
        return _json(400, {"errors": [{"field": "personalizations", "message": "The personalizations field is "
                                                                               "required."}]})
    count = sum(len(item.get("to") or []) for item in personalizations if isinstance(item, dict))
    message_id = base64.urlsafe_b64encode(sink.next_id().to_bytes(16, "big")).decode().rstrip("=")
    return Answer(202, b"", (("X-Message-Id", message_id),), count)


def mailgun(sink: Sink, headers: dict[str, str], path: str, body: Body) -> Answer:
    if headers.get("authorization") != "Basic " + base64.b64encode(f"api:{sink.key}".encode()).decode():
        return Answer(401, b"Forbidden", (("Content-Type", "text/plain"),))
    count = body.count(b'name="to"')  # one form field per recipient (multipart/form-data)
    if not count:
        return _json(400, {"message": "to parameter is missing"})
    found = MAILGUN_PATH.match(path)
    domain = found[1] if found else ""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return Answer(200, orjson.dumps({"id": f"<{stamp}.{sink.next_id()}@{domain}>", "message": "Queued. Thank you."}),
                  (("Content-Type", "application/json"),), count)


def resend(sink: Sink, headers: dict[str, str], path: str, body: Body) -> Answer:
    if headers.get("authorization") != f"Bearer {sink.key}":
        return _json(401, {"statusCode": 401, "name": "validation_error", "message": "API key is invalid"})
    recipients = message_heads(body, b'{"from":', b"to")
    if not recipients:
        return _json(422, {"statusCode": 422, "name": "validation_error", "message": "Invalid batch"})
    return Answer(200, orjson.dumps({"data": [{"id": _uuid(sink.next_id())} for _ in recipients]}),
                  (("Content-Type", "application/json"),), len(recipients))


def answer_bytes(answer: Answer) -> bytes:
    head = [f"HTTP/1.1 {answer.status} {REASONS.get(answer.status, 'Unknown')}",
            f"Content-Length: {len(answer.body)}", *(f"{name}: {value}" for name, value in answer.headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer.body


class Connection(asyncio.BufferedProtocol):
    """One client connection: each body is received straight into a buffer of its Content-Length (no copy,
    no join), and each request answered as soon as its body is complete (no pipelining needed)."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.head = bytearray(MAX_HEAD)
        self.head_size = 0
        self.body: bytearray | None = None  # while a body is being read
        self.got = 0
        self.request: tuple[str, str, dict[str, str]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.body is not None:
            return memoryview(self.body)[self.got:]
        return memoryview(self.head)[self.head_size:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.body is not None:
            self.got += nbytes
            if self.got == len(self.body):
                self._complete()
            return
        if self.head_size == 0 and self.sink.first is None:
            self.sink.first = time.monotonic()
        self.head_size += nbytes
        while self.body is None:
            end = self.head.find(b"\r\n\r\n", 0, self.head_size)
            if end < 0:
                if self.head_size == len(self.head):
                    self._finish(Answer(431), close=True)
                return
            rest = self.head[end + 4:self.head_size]
            if not self._start(bytes(self.head[:end])):
                return
            self.head_size = 0
            if self.body is not None:  # what came with the head is the body's start
                take = min(len(rest), len(self.body))
                self.body[:take] = rest[:take]
                self.got = take
                rest = rest[take:]
                if self.got == len(self.body):
                    self._complete()
            if not rest:
                return
            self.head[:len(rest)] = rest  # the next request's start
            self.head_size = len(rest)

    def _start(self, head: bytes) -> bool:
        """Parse a request's head; False when it cannot be served (answered and closed)."""
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._finish(Answer(411), close=True)
            return False
        self.request = (method, path.partition("?")[0], headers)
        length = int(headers.get("content-length") or 0)
        if length:
            self.body, self.got = bytearray(length), 0
        else:
            self.body = bytearray()
            self._complete()
        return True

    def _complete(self) -> None:
        assert self.request is not None and self.body is not None
        method, path, headers = self.request
        body = self.body
        self.body, self.request, self.got = None, None, 0
        provider, answer = self.sink.answer(method, path, headers, body)
        if provider is not None:
            sink = self.sink
            sink.requests[provider] += 1
            sink.bytes[provider] += len(body)
            sink.messages[provider] += answer.messages
            sink.answers[f"{provider} {answer.status}"] += 1
            sink.bodies.add(body, headers.get("content-type", ""))
        self._finish(answer, close=headers.get("connection", "").lower() == "close", provider=provider)

    def _finish(self, answer: Answer, *, close: bool = False, provider: str | None = None) -> None:
        assert self.transport is not None
        self.transport.write(answer_bytes(answer))
        if provider is not None:
            self.sink.last = time.monotonic()
        if close:
            self.transport.close()


async def serve(host: str, port: int, key: str) -> None:
    sink = Sink(key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(sink), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"sink listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "localhost"),
                        help="loopback only")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--key", default=DEFAULT_KEY, help="the API key every provider accepts")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port, args.key))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
