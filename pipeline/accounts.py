"""Staff accounts: roles, argon2 password hashes, API tokens for scripts.

    viewer   reads the console
    editor   also acts on sends and schedules (pause, resume, cancel, retry, resend, test sends, moves)
    admin    also manages staff accounts

Passwords are hashed with argon2id (``argon2-cffi``, its default parameters); an
API token is 32 random bytes shown once, stored as a SHA-256. Every change is
written to the audit log by whoever makes it.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pipeline.errors import NewsletterError
from pipeline.store import Store, utcnow
from pipeline.store import staff as db
from pipeline.store.staff import StaffUser

ROLES = ("viewer", "editor", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; this only stops a megabyte "password"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs what a wrong password costs.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(NewsletterError):
    """A staff account cannot be made or changed as asked."""


def may(role: str, needed: str) -> bool:
    """Whether ``role`` includes what ``needed`` may do."""
    return ROLES.index(role) >= ROLES.index(needed)


def checked_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise AccountError(f"user name {name!r}: use 1 to 64 lower-case letters, digits, '.', '_' or '-'")
    return name


def checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is {len(password)} characters long; it needs at least {MIN_PASSWORD}")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    return password


def add(store: Store, name: str, role: str, password: str, *, by: str) -> None:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (valid: {', '.join(ROLES)})")
    now = utcnow()
    hashed = _hasher.hash(checked_password(password))
    if not db.add_user(store, name=checked_name(name), role=role, password_hash=hashed, now=now):
        raise AccountError(f"there is already a user named {name!r}")
    db.audit(store, user_name=by, action="user add", target=f"user:{name}", detail=role, now=now)


def change_password(store: Store, name: str, password: str, *, by: str) -> None:
    now = utcnow()
    if not db.set_password(store, name, _hasher.hash(checked_password(password)), now):
        raise AccountError(f"no user named {name!r}")
    db.audit(store, user_name=by, action="user password", target=f"user:{name}", now=now)


def remove(store: Store, name: str, *, by: str) -> None:
    if not db.remove_user(store, name):
        raise AccountError(f"no user named {name!r}")
    db.audit(store, user_name=by, action="user remove", target=f"user:{name}", now=utcnow())


def new_token(store: Store, name: str, *, by: str) -> str:
    """A new API token for the account (the old one stops working); shown once, stored hashed."""
    token = "nlt_" + secrets.token_urlsafe(32)
    now = utcnow()
    if not db.set_token(store, name, token_hash(token), now):
        raise AccountError(f"no user named {name!r}")
    db.audit(store, user_name=by, action="user token", target=f"user:{name}", now=now)
    return token


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def authenticate(store: Store, name: str, password: str) -> StaffUser | None:
    """The account when the password is its own; None otherwise, in about the same time either way."""
    user = db.user_by_name(store, name) if _NAME.fullmatch(name) else None
    if len(password) > MAX_PASSWORD:
        return None
    try:
        _hasher.verify(user.password_hash if user else _DUMMY, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        db.set_password(store, user.name, _hasher.hash(password), utcnow())
    return user


def by_token(store: Store, token: str) -> StaffUser | None:
    if not token.startswith("nlt_") or len(token) > 100:
        return None
    return db.user_by_token(store, token_hash(token))
