"""What a server received, summed up so that two runs can be compared: the same bodies, in any order.

A benchmark posts a send's requests twice — once from the pipeline, once from a bare loop — and needs
to know they were the same bytes. Each body's hash, read as a number, is added up modulo 2**bits: the
sum does not depend on the order the requests arrived in (they are concurrent), yet two runs agree
only when they sent the same multiset of bodies. A multipart body's boundary is drawn at random for
every request (httpx), so it is replaced by a fixed word before hashing: nothing else is. The
emulator uses SHA-256; the benchmarks' sink a faster hash (xxh3), given as ``hash``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

Buffer = bytes | bytearray | memoryview
_BOUNDARY = re.compile(r'boundary="?([^";,\s]+)"?', re.IGNORECASE)


def sha256_number(body: Buffer) -> int:
    return int.from_bytes(hashlib.sha256(body).digest(), "big")


def comparable(body: Buffer, content_type: str = "") -> Buffer:
    """The body as two runs can compare it: a multipart body's boundary replaced by ``BOUNDARY``."""
    found = _BOUNDARY.search(content_type) if content_type.startswith("multipart/") else None
    if found is None:
        return body
    return bytes(body).replace(found[1].encode("ascii", "replace"), b"BOUNDARY")


class BodyDigest:
    """The bodies seen so far: how many, and the sum of their hashes."""

    def __init__(self, hash: Callable[[Buffer], int] = sha256_number, *, name: str = "sha256", bits: int = 256):
        self.hash, self.name, self.modulus = hash, name, 2**bits
        self.count = 0
        self._sum = 0

    def add(self, body: Buffer, content_type: str = "") -> None:
        self.count += 1
        self._sum = (self._sum + self.hash(comparable(body, content_type))) % self.modulus

    def to_json(self) -> dict[str, object]:
        return {"count": self.count, "hash": self.name, "sum": f"{self._sum:x}"}
