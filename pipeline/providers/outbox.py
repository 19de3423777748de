"""The outbox provider: every message written as an .eml file, so a send needs no account.

    outbox/<send-id>/<delivery-id>.eml

Each file is written to a temporary name and renamed into place, so a file
that exists is complete. A delivery whose file exists is not written again:
the outbox honours an idempotency key (the delivery id), which makes a send
resumed after a crash exactly-once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import ClassVar

from pipeline.config import Settings
from pipeline.mail import Batch, Outcome, Recipient
from pipeline.mime import MessageTemplate, message_template


class OutboxProvider:
    """Writes RFC 5322 .eml files under a folder per send."""

    name: ClassVar[str] = "outbox"
    idempotent: ClassVar[bool] = True
    smtputf8: ClassVar[bool] = True  # a file takes RFC 6532 UTF-8 headers
    max_batch: ClassVar[int] = 1000

    @classmethod
    def from_settings(cls, settings: Settings, client: object = None) -> OutboxProvider:
        return cls(settings.paths.outbox)

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._swept: set[Path] = set()

    async def send(self, batch: Batch) -> list[Outcome]:
        folder = self.folder / batch.mail.label
        folder.mkdir(parents=True, exist_ok=True)
        if folder not in self._swept:
            # Half-written files of a sender killed mid-write; only the send's one runner writes here.
            for debris in folder.glob(".*.part"):
                debris.unlink(missing_ok=True)
            self._swept.add(folder)
        template = message_template(batch.mail)
        # File writes wait on the disk, not the CPU: in a thread, batches in flight overlap them.
        return await asyncio.to_thread(lambda: [self._write(folder, template, person)
                                                for person in batch.recipients])

    def _write(self, folder: Path, template: MessageTemplate, person: Recipient) -> Outcome:
        path = folder / f"{person.delivery_id}.eml"
        message_id = person.headers.get("Message-ID")
        if path.exists():  # written before a crash: the same delivery is not written twice
            return Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=message_id)
        try:
            data = template.render(person)
        except (UnicodeError, ValueError) as exc:  # this recipient's message cannot be made: only theirs fails
            return Outcome(delivery_id=person.delivery_id, status="failed", error_class="permanent",
                           error_text=f"cannot write a message to {person.email!r}: {exc}")
        temporary = None
        try:
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except OSError as exc:
            if temporary is not None:
                Path(temporary).unlink(missing_ok=True)  # a half-written file is never left behind
            return Outcome(delivery_id=person.delivery_id, status="failed", error_class="transient",
                           error_text=f"cannot write {path}: {exc.strerror}")
        return Outcome(delivery_id=person.delivery_id, status="sent", provider_message_id=message_id)

    async def aclose(self) -> None:
        return None
