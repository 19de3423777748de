"""A token bucket in messages per second whose state lives in the store.

Each batch takes as many tokens as it has recipients; when the bucket runs dry
the sender waits. The bucket's level is saved with every take, so a sender
that crashes and restarts carries the debt it left instead of bursting: over
any stretch of time the provider sees at most ``rate`` messages per second,
plus one second's worth. The database work runs where ``run`` puts it (a sender
passes its database thread, so the event loop never waits on the store).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.store import Store, utcnow
from pipeline.store.limits import take_tokens

Sleep = Callable[[float], Awaitable[None]]
Run = Callable[..., Awaitable[Any]]


async def _here(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return function(*args, **kwargs)


class TokenBucket:
    """``rate`` messages per second for one provider, shared by every process on the store."""

    def __init__(self, store: Store, provider: str, rate: float, *, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], dt.datetime] = utcnow, run: Run = _here):
        self.store, self.provider, self.rate, self.run = store, provider, rate, run
        self.capacity = max(rate, 1.0)  # one second's worth may go at once
        self.sleep, self.clock = sleep, clock

    async def take(self, count: int) -> float:
        """Take ``count`` tokens, waiting as long as the bucket owes; return the wait in seconds."""
        if self.rate <= 0:
            return 0.0
        wait: float = await self.run(self._take_now, count)
        if wait > 0:
            await self.sleep(wait)
        return wait

    async def give_back(self, count: int) -> None:
        """Return tokens taken for messages that were not sent after all (a batch came out smaller)."""
        if self.rate > 0 and count > 0:
            await self.run(self._take_now, -count)

    def _take_now(self, count: int) -> float:
        tokens = take_tokens(self.store, self.provider, count, rate=self.rate, capacity=self.capacity,
                             now=self.clock())
        return max(-tokens / self.rate, 0.0)
