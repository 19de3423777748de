"""The one interface every mail provider implements.

A provider takes a ``Batch`` and returns one ``Outcome`` per recipient.
``idempotent`` says whether it honours an idempotency key, so that a batch in
flight at a crash may be handed over again without sending twice;
``max_batch`` is the most recipients it takes in one batch; ``smtputf8`` whether it
can send to an address whose local part is not ASCII (RFC 6531).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

from pipeline.mail import Batch, Outcome


class Provider(Protocol):
    """A mail provider: hand it batches, close it when done."""

    name: ClassVar[str]
    idempotent: ClassVar[bool]
    max_batch: ClassVar[int]
    smtputf8: ClassVar[bool]

    async def send(self, batch: Batch) -> list[Outcome]: ...

    async def aclose(self) -> None: ...
