"""A token bucket in messages per second whose state lives in the store.

Each batch takes as many tokens as it has recipients; when the bucket runs dry
the sender waits. The bucket's level is saved with every take, so a sender
that crashes and restarts carries the debt it left instead of bursting: over
any stretch of time the provider sees at most ``rate`` messages per second,
plus one second's worth.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable

from sqlalchemy import insert, select, update

from pipeline.store import Store, utcnow
from pipeline.store.tables import rate_limits

Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``rate`` messages per second for one provider, shared by every process on the store."""

    def __init__(self, store: Store, provider: str, rate: float, *, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.store, self.provider, self.rate = store, provider, rate
        self.capacity = max(rate, 1.0)  # one second's worth may go at once
        self.sleep, self.clock = sleep, clock

    async def take(self, count: int) -> float:
        """Take ``count`` tokens, waiting as long as the bucket owes; return the wait in seconds."""
        if self.rate <= 0:
            return 0.0
        wait = self._take_now(count)
        if wait > 0:
            await self.sleep(wait)
        return wait

    def _take_now(self, count: int) -> float:
        now = self.clock()
        with self.store.begin() as connection:
            row = connection.execute(select(rate_limits.c.tokens, rate_limits.c.updated_at)
                                     .where(rate_limits.c.provider == self.provider).with_for_update()).first()
            if row is None:
                tokens = self.capacity
                connection.execute(insert(rate_limits).values(provider=self.provider, tokens=0.0, updated_at=now))
            else:
                elapsed = max((now - row.updated_at).total_seconds(), 0.0)
                tokens = min(self.capacity, row.tokens + elapsed * self.rate)
            tokens -= count
            connection.execute(update(rate_limits).where(rate_limits.c.provider == self.provider)
                               .values(tokens=tokens, updated_at=now))
        return max(-tokens / self.rate, 0.0)
