"""Opaque tokens for public links: unsubscribe, preferences, signup confirmation.

A token seals a few whole numbers (a subscriber id and a send id, say) with
AES-SIV under a key derived from the signing secret for the token's purpose
(HKDF-SHA256, ``cryptography``). It reveals nothing of what it names —
subscriber ids are sequential, and must not be read off a link — and any change
to it is detected: a forged, damaged or truncated token opens to nothing. A
token made for one purpose does not open as another. URL-safe base64 without
padding: 43 characters for two numbers.
"""

from __future__ import annotations

import base64
import binascii
import struct
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSES = frozenset({"unsubscribe", "preferences", "confirm"})
_SALT = b"newsletter-pipeline tokens v1"
_MAX = 2**64 - 1


@lru_cache(maxsize=16)  # a send seals a token per recipient with the same key
def _cipher(secret: str, purpose: str) -> AESSIV:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    key = HKDF(algorithm=hashes.SHA256(), length=64, salt=_SALT, info=purpose.encode()).derive(secret.encode())
    return AESSIV(key)


def seal(secret: str, purpose: str, *numbers: int) -> str:
    """A token for ``numbers`` (each 0 ≤ n < 2**64)."""
    if not numbers or not all(0 <= number <= _MAX for number in numbers):
        raise ValueError("a token seals one or more whole numbers from 0 to 2**64 - 1")
    sealed = _cipher(secret, purpose).encrypt(struct.pack(f">{len(numbers)}Q", *numbers), None)
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")


def unseal(secret: str, purpose: str, token: str, count: int) -> tuple[int, ...] | None:
    """The ``count`` numbers a genuine token of ``purpose`` seals; None for anything else."""
    if not token.isascii() or len(token) > 200:
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        plain = _cipher(secret, purpose).decrypt(data, None)
    except (InvalidTag, ValueError, binascii.Error):
        return None
    if len(plain) != 8 * count:
        return None
    return struct.unpack(f">{count}Q", plain)
