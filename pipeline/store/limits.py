"""The rate limiter's bucket, one row per provider, shared by every sender on the database."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from pipeline.store import Store, insert_new
from pipeline.store.tables import rate_limits


def take_tokens(store: Store, provider: str, count: int, *, rate: float, capacity: float, now: dt.datetime) -> float:
    """Take ``count`` tokens from ``provider``'s bucket (refilled at ``rate`` per second up to ``capacity``,
    full when first used); the level left, negative when the taker must wait the debt out."""
    with store.begin() as connection:
        connection.execute(insert_new(connection, rate_limits, rate_limits.c.provider)
                           .values(provider=provider, tokens=capacity, updated_at=now))
        row = connection.execute(select(rate_limits.c.tokens, rate_limits.c.updated_at)
                                 .where(rate_limits.c.provider == provider).with_for_update()).one()
        elapsed = max((now - row.updated_at).total_seconds(), 0.0)
        tokens = min(capacity, row.tokens + elapsed * rate) - count
        connection.execute(update(rate_limits).where(rate_limits.c.provider == provider)
                           .values(tokens=tokens, updated_at=now))
    return tokens
