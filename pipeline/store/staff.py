"""Named operations on staff accounts, sessions and the audit log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, desc, select, update

from pipeline.store import Store, insert_new
from pipeline.store.tables import staff_audit, staff_sessions, staff_users


@dataclass(frozen=True, kw_only=True)
class StaffUser:
    id: int
    name: str
    role: str
    password_hash: str
    has_token: bool
    created_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class StaffSession:
    user: StaffUser
    csrf: str
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    id: int
    at: dt.datetime
    user_name: str
    action: str
    target: str
    detail: str


def _user(row) -> StaffUser:
    return StaffUser(id=row.id, name=row.name, role=row.role, password_hash=row.password_hash,
                     has_token=row.api_token_hash is not None, created_at=row.created_at)


def add_user(store: Store, *, name: str, role: str, password_hash: str, now: dt.datetime) -> bool:
    """Add an account; False when the name is taken."""
    with store.begin() as connection:  # ON CONFLICT: two of these at once add one account, not an IntegrityError
        added = connection.scalar(insert_new(connection, staff_users, staff_users.c.name).values(
            name=name, role=role, password_hash=password_hash, created_at=now, updated_at=now)
            .returning(staff_users.c.id))
        return added is not None


def user_by_name(store: Store, name: str) -> StaffUser | None:
    with store.read() as connection:
        row = connection.execute(select(staff_users).where(staff_users.c.name == name)).first()
    return None if row is None else _user(row)


def user_by_token(store: Store, token_hash: str) -> StaffUser | None:
    with store.read() as connection:
        row = connection.execute(select(staff_users).where(staff_users.c.api_token_hash == token_hash)).first()
    return None if row is None else _user(row)


def users(store: Store) -> list[StaffUser]:
    with store.read() as connection:
        return [_user(row) for row in connection.execute(select(staff_users).order_by(staff_users.c.name))]


def set_password(store: Store, name: str, password_hash: str, now: dt.datetime) -> bool:
    """A new password hash; every session of the account ends. False when there is no such account."""
    with store.begin() as connection:
        user_id = connection.scalar(select(staff_users.c.id).where(staff_users.c.name == name))
        if user_id is None:
            return False
        connection.execute(update(staff_users).where(staff_users.c.id == user_id)
                           .values(password_hash=password_hash, updated_at=now))
        connection.execute(delete(staff_sessions).where(staff_sessions.c.user_id == user_id))
        return True


def set_token(store: Store, name: str, token_hash: str | None, now: dt.datetime) -> bool:
    with store.begin() as connection:
        changed = connection.execute(update(staff_users).where(staff_users.c.name == name)
                                     .values(api_token_hash=token_hash, updated_at=now)).rowcount
        return bool(changed)


def remove_user(store: Store, name: str) -> bool:
    with store.begin() as connection:
        user_id = connection.scalar(select(staff_users.c.id).where(staff_users.c.name == name))
        if user_id is None:
            return False
        connection.execute(delete(staff_sessions).where(staff_sessions.c.user_id == user_id))
        connection.execute(delete(staff_users).where(staff_users.c.id == user_id))
        return True


def open_session(store: Store, *, session_hash: str, user_id: int, csrf: str, now: dt.datetime,
                 expires_at: dt.datetime) -> None:
    with store.begin() as connection:
        connection.execute(delete(staff_sessions).where(staff_sessions.c.expires_at <= now))  # tidy as we go
        connection.execute(staff_sessions.insert().values(id=session_hash, user_id=user_id, csrf=csrf,
                                                          created_at=now, seen_at=now, expires_at=expires_at))


def live_session(store: Store, session_hash: str, *, now: dt.datetime, idle: dt.timedelta) -> StaffSession | None:
    """The session if it has neither expired nor idled out; marks it seen. None otherwise (and it is ended)."""
    with store.begin() as connection:
        row = connection.execute(
            select(staff_sessions, staff_users).join(staff_users, staff_users.c.id == staff_sessions.c.user_id)
            .where(staff_sessions.c.id == session_hash)).first()
        if row is None:
            return None
        if row.expires_at <= now or row.seen_at + idle <= now:
            connection.execute(delete(staff_sessions).where(staff_sessions.c.id == session_hash))
            return None
        if now - row.seen_at > dt.timedelta(seconds=30):  # not a write per request
            connection.execute(update(staff_sessions).where(staff_sessions.c.id == session_hash).values(seen_at=now))
        user = StaffUser(id=row.user_id, name=row.name, role=row.role, password_hash=row.password_hash,
                         has_token=row.api_token_hash is not None, created_at=row.created_at_1)
        return StaffSession(user=user, csrf=row.csrf, created_at=row.created_at, expires_at=row.expires_at)


def close_session(store: Store, session_hash: str) -> None:
    with store.begin() as connection:
        connection.execute(delete(staff_sessions).where(staff_sessions.c.id == session_hash))


def audit(store: Store, *, user_name: str, action: str, target: str = "", detail: str = "",
          now: dt.datetime) -> None:
    with store.begin() as connection:
        connection.execute(staff_audit.insert().values(at=now, user_name=user_name, action=action, target=target,
                                                       detail=detail))


def audit_log(store: Store, *, limit: int = 200, target: str | None = None) -> list[AuditEntry]:
    query = select(staff_audit).order_by(desc(staff_audit.c.id)).limit(limit)
    if target is not None:
        query = query.where(staff_audit.c.target == target)
    with store.read() as connection:
        return [_entry(row) for row in connection.execute(query)]


def audit_page(store: Store, *, after: int | None, limit: int) -> tuple[list[AuditEntry], int | None]:
    """A page of the audit log, newest first, older than the entry ``after`` (keyset, no OFFSET); with the
    ``after`` of the next page, None on the last."""
    query = select(staff_audit).order_by(desc(staff_audit.c.id)).limit(limit + 1)
    if after is not None:
        query = query.where(staff_audit.c.id < after)
    with store.read() as connection:
        rows = connection.execute(query).all()
    entries = [_entry(row) for row in rows[:limit]]
    return entries, entries[-1].id if len(rows) > limit else None


def _entry(row) -> AuditEntry:
    return AuditEntry(id=row.id, at=row.at, user_name=row.user_name, action=row.action, target=row.target,
                      detail=row.detail)
