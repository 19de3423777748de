"""What the four provider endpoints share: schemas, bodies, addresses, keys and the recording context."""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import getaddresses
from functools import cache, lru_cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from starlette.requests import Request

from pipeline.emulator.state import Emulator, now_iso

MB = 1024 * 1024


# -- schemas -----------------------------------------------------------------------------------------------------

def load_schema(name: str) -> dict[str, Any]:
    """A schema shipped in ``specs/`` (see its README for where each comes from)."""
    return json.loads(files("pipeline.emulator").joinpath("specs", name).read_text(encoding="utf-8"))


@cache
def validator(name: str) -> Draft202012Validator:
    return make_validator(load_schema(name))


def make_validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass(frozen=True, slots=True)
class Violation:
    """The most telling schema error of a request: where it is and what is wrong."""

    path: tuple[str | int, ...]  # down to the offending field; for a missing field, its name last
    keyword: str  # the failed JSON Schema keyword: "required", "type", "maxItems" ...
    message: str

    @property
    def field(self) -> str | None:
        return ".".join(str(part) for part in self.path) or None

    @property
    def name(self) -> str:
        """The offending field's own name, without its place in lists."""
        names = [part for part in self.path if isinstance(part, str)]
        return names[-1] if names else ""


def first_violation(checker: Draft202012Validator, instance: Any) -> Violation | None:
    error = best_match(checker.iter_errors(instance))
    if error is None:
        return None
    path = tuple(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = next(name for name in error.validator_value if name not in error.instance)
        path += (missing,)
    return Violation(path, str(error.validator), error.message)


# -- bodies and addresses ----------------------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes (it is read to the end either way)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    return None if size > limit else b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """The JSON value of a body; raises ValueError for anything that is not JSON."""
    return json.loads(body)


def addresses(value: str | Iterable[str] | None) -> list[str]:
    """The bare addresses of a comma-separated header value or a list of them ("Name <a@b>" gives "a@b")."""
    if not value:
        return []
    if isinstance(value, str):
        return list(_addresses(value))
    return [address for item in value for address in _addresses(item)]


@lru_cache(maxsize=4096)  # a batch repeats its sender thousands of times
def _addresses(value: str) -> tuple[str, ...]:
    if "<" not in value and '"' not in value:  # the common case, without the parser's cost
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(address for _, address in getaddresses([value]) if address)


def looks_like_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain and " " not in address)


def unique(items: Iterable[str]) -> list[str]:
    """Items in order, each once (compared without case)."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            kept.append(item)
    return kept


# -- keys --------------------------------------------------------------------------------------------------------

def same_key(given: str | None, accepted: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), accepted.encode())


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when the header is missing or not a bearer token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """(user, password) of HTTP Basic authentication, or None."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


# -- one request being recorded ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Call:
    """One send request as a provider handler sees it."""

    request: Request
    body: bytes
    emulator: Emulator
    received_at: str

    @classmethod
    def of(cls, request: Request, body: bytes, emulator: Emulator) -> Call:
        return cls(request, body, emulator, now_iso())


def display(name: str | None, address: str) -> str:
    return f"{name} <{address}>" if name else address
