"""``[provider] batch_size``: unset, each batch is as large as the provider takes; set, it is capped by that."""

from __future__ import annotations

import asyncio
from importlib import import_module
from pathlib import Path
from typing import ClassVar

import pytest

from pipeline import send
from pipeline.config import Settings
from pipeline.mail import Batch, Outcome
from pipeline.providers import PROVIDERS
from pipeline.store import Store

from .test_send import _audience, _edition, _many, _start


class _Counting:
    """Records the size of every batch it is handed (a unit's edge)."""

    name: ClassVar[str] = "counting"
    idempotent: ClassVar[bool] = True
    smtputf8: ClassVar[bool] = False
    max_batch: ClassVar[int] = 7

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def send(self, batch: Batch) -> list[Outcome]:
        self.sizes.append(len(batch.recipients))
        return [Outcome(delivery_id=person.delivery_id, status="sent") for person in batch.recipients]

    async def aclose(self) -> None:
        pass


def test_the_provider_batch_limits_are_their_documented_maxima() -> None:
    classes = {name: getattr(import_module(f"pipeline.providers.{where.partition(':')[0]}"), where.partition(":")[2])
               for name, where in PROVIDERS.items()}
    assert {name: provider.max_batch for name, provider in classes.items()} == {
        "outbox": 1000, "postmark": 500, "sendgrid": 1000, "mailgun": 1000, "resend": 100, "smtp": 100}


def test_settings_leave_batch_size_unset_by_default(settings: Settings) -> None:
    assert Settings.model_validate({"publication": settings.publication.model_dump(by_alias=True)}
                                   ).provider.batch_size is None


@pytest.mark.parametrize(("batch_size", "sizes"), [(None, [7, 7, 2]), (3, [3, 3, 3, 3, 3, 1]), (1000, [7, 7, 2])])
def test_batches_are_the_providers_most_unless_set(project: Path, settings: Settings, store: Store,
                                                   batch_size: int | None, sizes: list[int]) -> None:
    _audience(store, project, _many(16))
    send_id = _start(store, settings, _edition(project, settings))
    settings = settings.model_copy(update={"provider": settings.provider.model_copy(
        update={"batch_size": batch_size, "concurrency": 1})})
    provider = _Counting()
    summary = asyncio.run(send.run_send(store, settings, send_id, provider=provider))
    assert summary.counts == {"sent": 16}
    assert provider.sizes == sizes
